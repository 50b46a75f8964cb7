"""Small float64 test networks, and Captum-side twins where Captum needs a different structure.

Captum's DeepLift, GuidedBackprop and Deconvolution find nonlinearities through module hooks, so
they need ``nn.ReLU`` modules (not ``F.relu``), each used once (torchvision's BasicBlock reuses its
ReLU), and — for DeepLift — a new tensor between a ReLU and a max pool: when two hooked modules
share a tensor, the ReLU's hook records the gradient before the max pool's hook rewrites it, which
breaks Captum's summation-to-delta. The twins below compute exactly the same function with the
same parameters, arranged so that Captum computes what it means to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models import FunctionalNet, randomize_batchnorm, torchvision_model


class Copy(nn.Module):
    """``x.clone()``: a fresh tensor, so that adjacent Captum hooks do not share one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def maxpool_net() -> nn.Sequential:
    """Conv–BN–ReLU–max-pool–conv–ReLU–max-pool–dense–ReLU–dense, float64, eval."""
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 12),
        nn.ReLU(),
        nn.Linear(12, 5),
    )
    return randomize_batchnorm(net).double().eval()


def maxpool_net_twin(net: nn.Sequential) -> nn.Sequential:
    """``net`` with a Copy after each ReLU that feeds a max pool (for Captum's DeepLift)."""
    layers: list[nn.Module] = []
    for i, module in enumerate(net):
        layers.append(module)
        if isinstance(module, nn.ReLU) and i + 1 < len(net) and isinstance(net[i + 1], nn.MaxPool2d):
            layers.append(Copy())
    return nn.Sequential(*layers).eval()


def functional_net() -> FunctionalNet:
    """The functional residual net of tests/models.py (F.conv2d, F.relu, `+`, cat, max pool, matmul)."""
    return FunctionalNet().double().eval()


class FunctionalNetTwin(nn.Module):
    """FunctionalNet's function with ReLU modules, for Captum (same parameters)."""

    def __init__(self, net: FunctionalNet) -> None:
        super().__init__()
        self.net = net
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.copy = Copy()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        h = self.relu1(F.conv2d(x, n.w1, n.b1, padding=1))
        r = self.relu2(F.conv2d(h, n.w2, padding=1))
        h = torch.cat([h + r, r], dim=1)
        h = self.pool(self.copy(self.relu3(F.conv2d(h, n.w3))))
        out = h.flatten(1) @ n.fc.t()
        return out if n.fc_bias is None else out + n.fc_bias


def resnet18(overlapping_pool: bool = True) -> nn.Module:
    """Torchvision's ResNet-18, random init with random batch-norm statistics, float64, eval.

    ``overlapping_pool=False`` replaces the stem's 3×3/stride-2 max pool by a 2×2/stride-2 one:
    Captum's DeepLift scatters max-pool multipliers with ``max_unpool``, which overwrites instead of
    adding where two overlapping windows share their winner, so it breaks summation-to-delta there.
    """
    model = torchvision_model("resnet18").double()
    if not overlapping_pool:
        model.maxpool = nn.MaxPool2d(2)
    return model.eval()


class _TwinBlock(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        out = b.bn2(b.conv2(self.relu1(b.bn1(b.conv1(x)))))
        identity = x if b.downsample is None else b.downsample(x)
        return self.relu2(out + identity)


class ResNetTwin(nn.Module):
    """A torchvision ResNet with its BasicBlocks' ReLU used once each and a Copy before the max pool."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.relu, self.copy = nn.ReLU(), Copy()
        self.blocks = nn.Sequential(
            *[_TwinBlock(b) for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(self.copy(self.relu(m.bn1(m.conv1(x)))))
        return m.fc(torch.flatten(m.avgpool(self.blocks(x)), 1))
