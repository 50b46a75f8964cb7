"""Small dense-output models shared by the region, output-selector and Captum tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class TinySegNet(nn.Module):
    """An encoder-decoder with a skip connection and bilinear upsampling: (N, 3, H, W) -> (N, C, H, W).

    Returns ``{"out": scores, "aux": auxiliary scores}`` like torchvision's segmentation models.
    """

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.enc2 = nn.Conv2d(8, 12, 3, padding=1)
        self.dec = nn.Conv2d(12 + 8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, classes, 1)
        self.aux = nn.Conv2d(12, classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = F.relu(self.enc1(x))
        b = F.relu(self.enc2(F.max_pool2d(a, 2)))
        up = F.interpolate(b, scale_factor=2.0, mode="bilinear", align_corners=False)
        d = F.relu(self.dec(torch.cat([up, a], dim=1)))
        aux = F.interpolate(self.aux(b), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": self.head(d), "aux": aux}


class TupleOut(nn.Module):
    """Returns ``(maps channels-last, features)`` like CRAFT."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinySegNet(classes=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)["out"]
        return out.permute(0, 2, 3, 1), out.mean((2, 3))


@dataclass
class DenseResult:
    scores: torch.Tensor
    extra: torch.Tensor | None = None


class DataclassOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinySegNet()

    def forward(self, x: torch.Tensor) -> DenseResult:
        return DenseResult(scores=self.net(x)["out"], extra=None)


def tiny_segnet(classes: int = 4) -> TinySegNet:
    return TinySegNet(classes).double().eval()
