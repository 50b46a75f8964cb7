"""The embedded default model: a small CNN trained on scikit-learn's handwritten digits.

The 8×8 grey-level digits (1,797 images of 10 classes, from the UCI "Optical Recognition of
Handwritten Digits" data set, bundled with scikit-learn) are real data that ship offline.
``scripts/train_digits.py`` reproduces the shipped weights bit for bit; the 360 held-out
test images ship with the package too, so the demo needs neither scikit-learn nor a
download. Inputs are ``(N, 1, 8, 8)`` floats in ``[0, 1]`` (pixel value / 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["DIGITS_BOUNDS", "DigitsCNN", "DigitsTestSet", "digits_test_set", "load_digits_model"]

WEIGHTS_FILE = "digits_cnn.pt"
TEST_SET_FILE = "digits_test.npz"
#: z^B bounds of the model input (pixel intensities scaled to [0, 1]).
DIGITS_BOUNDS = (0.0, 1.0)


class DigitsCNN(nn.Module):
    """Conv–BN–ReLU–max-pool network for 8×8 digits (about 62k parameters).

    ``features`` has two blocks (the first with batch norm, so that folding is exercised),
    ``classifier`` two dense layers with dropout.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _data_path(name: str) -> Path:
    return Path(str(resources.files("relprop") / "data" / name))


def load_digits_model(weights: str | Path | None = None, device: str | torch.device = "cpu") -> DigitsCNN:
    """The trained digits CNN in eval mode (the bundled weights unless ``weights`` names a file)."""
    model = DigitsCNN()
    path = Path(weights) if weights is not None else _data_path(WEIGHTS_FILE)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval().to(device)


@dataclass(frozen=True)
class DigitsTestSet:
    """The held-out test digits: ``images`` (N, 1, 8, 8) in [0, 1], ``labels`` (N,), ``indices`` into
    scikit-learn's ``load_digits()`` order."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray


def digits_test_set() -> DigitsTestSet:
    """Load the bundled test split (360 real digits)."""
    with np.load(_data_path(TEST_SET_FILE)) as data:
        images = torch.from_numpy(data["images"].astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        return DigitsTestSet(images, torch.from_numpy(data["labels"].astype(np.int64)), data["indices"].copy())
