"""Build your own composite: rules by module path, type and position; see which op got which rule.

python examples/custom_composite.py
"""

from __future__ import annotations

import torch
import torchvision

import relprop
from relprop import match, rules

model = torchvision.models.vgg11().eval()
x = torch.randn(1, 3, 64, 64)

composite = relprop.Composite(
    [
        (match.first(), rules.ZBoxRule(low=-2.2, high=2.7)),  # the pixels
        (match.kind("conv") & match.depth(0.0, 0.5, among="kind"), rules.GammaRule(0.5)),  # lower convs
        ("features.*", rules.EpsilonRule(0.25)),  # upper convs (by path)
        (torch.nn.Linear, rules.LRP0Rule()),  # dense layers (by type)
        (match.kind("maxpool"), rules.ProportionalMaxPoolRule()),  # a non-default pooling rule
    ],
    name="my-recipe",
)
explainer = relprop.Explainer(model, composite)
print(explainer.rule_table(x))
result = explainer(x)
print(result.ledger.table(sample=0, top=5))
