"""Small models shared by the tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


class FunctionalNet(nn.Module):
    """A model written only with functional ops: F.conv2d, F.relu, residual `+`, torch.cat, matmul."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.4)
        self.b1 = nn.Parameter(torch.randn(8) * 0.1) if bias else None
        self.w2 = nn.Parameter(torch.randn(8, 8, 3, 3) * 0.2)
        self.w3 = nn.Parameter(torch.randn(6, 16, 1, 1) * 0.3)
        self.fc = nn.Parameter(torch.randn(10, 6 * 4 * 4) * 0.2)
        self.fc_bias = nn.Parameter(torch.randn(10) * 0.1) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.conv2d(x, self.w1, self.b1, padding=1))
        r = F.relu(F.conv2d(h, self.w2, padding=1))
        h = h + r  # residual sum written as an expression
        h = torch.cat([h, r], dim=1)
        h = F.relu(F.conv2d(h, self.w3))
        h = F.max_pool2d(h, 2)
        out = h.flatten(1) @ self.fc.t()
        if self.fc_bias is not None:
            out = out + self.fc_bias
        return out


def small_cnn(bias: bool = True, batchnorm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1, bias=bias)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(8))
    layers += [
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(48, 16, bias=bias),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, 10, bias=bias),
    ]
    return nn.Sequential(*layers)


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Give batch norms non-trivial statistics so that folding and outputs are not degenerate."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
    return model


TORCHVISION = ["vgg16", "vgg16_bn", "resnet18", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0"]


def torchvision_model(name: str) -> nn.Module:
    return randomize_batchnorm(getattr(torchvision.models, name)()).eval()
