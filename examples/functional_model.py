"""A model written only with functional ops (F.conv2d, F.relu, `+`, torch.cat) explains as it is.

python examples/functional_model.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import relprop


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)
        self.w2 = nn.Parameter(torch.randn(8, 8, 3, 3) * 0.2)
        self.head = nn.Parameter(torch.randn(5, 16) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.conv2d(x, self.w1, padding=1))
        r = F.relu(F.conv2d(h, self.w2, padding=1))
        h = h + r  # residual sum: proportional rule
        h = torch.cat([h, r], dim=1)  # concatenation: relevance routed
        return F.adaptive_avg_pool2d(h, 1).flatten(1) @ self.head.t()


torch.manual_seed(0)
model = Tiny().eval()
x = torch.randn(2, 3, 16, 16)
explainer = relprop.Explainer(model, "epsilon-gamma-box")
print(explainer.rule_table(x))
result = explainer(x)
print("relevance sums", result.relevance.flatten(1).sum(1).tolist(), "scores", result.score.tolist())
print("closes:", result.ledger.closes())
