"""A second real model for the tuning report: a small CNN that tells three textures apart.

The data are scikit-image's bundled photographs of brick, grass and gravel (512×512 grey
levels, shipped with scikit-image, no download). Training patches (16×16) are cut from the top
320 rows of each photograph, test patches from the bottom 160 rows, so that no test pixel was
seen in training. Everything is seeded; training runs on one thread in about half a minute.

``plant`` adds a bright 4×4 mark in the bottom-left corner; ``train(marked_class=0)`` plants it in
98 % of the brick training patches, giving a model with a planted shortcut (as
``scripts/clever_hans.py`` does for the digits; brick is recognised so easily from its texture
that a smaller share leaves the mark almost unused).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

CLASSES = ("brick", "grass", "gravel")
PATCH = 16
TRAIN_ROWS = (0, 320)
TEST_ROWS = (352, 512)
TRAIN_PER_CLASS = 1200
TEST_PER_CLASS = 200
MARK_ROWS = slice(12, 16)
MARK_COLS = slice(0, 4)
MARK_VALUE = 1.0
FRACTION = 0.98


class TextureCNN(nn.Module):
    """Two conv blocks and two dense layers for 16×16 grey patches (about 42k parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _photographs() -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)().astype(np.float32) / 255.0 for name in CLASSES]


def _crops(image: np.ndarray, rows: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    tops = rng.integers(rows[0], rows[1] - PATCH + 1, count)
    lefts = rng.integers(0, image.shape[1] - PATCH + 1, count)
    return np.stack([image[t : t + PATCH, s : s + PATCH] for t, s in zip(tops, lefts, strict=True)])


def patches(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: patches ``(N, 1, 16, 16)`` in [0, 1] and their class."""
    rng = np.random.default_rng(seed)
    xs_train, ys_train, xs_test, ys_test = [], [], [], []
    for label, image in enumerate(_photographs()):
        xs_train.append(_crops(image, TRAIN_ROWS, TRAIN_PER_CLASS, rng))
        ys_train.append(np.full(TRAIN_PER_CLASS, label))
        xs_test.append(_crops(image, TEST_ROWS, TEST_PER_CLASS, rng))
        ys_test.append(np.full(TEST_PER_CLASS, label))

    def tensors(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.concatenate(xs)).unsqueeze(1), torch.from_numpy(np.concatenate(ys)).long()

    return (*tensors(xs_train, ys_train), *tensors(xs_test, ys_test))


def plant(images: torch.Tensor) -> torch.Tensor:
    """A copy of ``images`` with the mark."""
    marked = images.clone()
    marked[:, :, MARK_ROWS, MARK_COLS] = MARK_VALUE
    return marked


def mark_mask(count: int) -> torch.Tensor:
    """Boolean ``(count, 1, 16, 16)`` masks of the mark."""
    mask = torch.zeros(count, 1, PATCH, PATCH, dtype=torch.bool)
    mask[:, :, MARK_ROWS, MARK_COLS] = True
    return mask


def train(
    x: torch.Tensor, y: torch.Tensor, marked_class: int | None = None, epochs: int = 12, seed: int = 0
) -> TextureCNN:
    """Train the CNN (Adam, batches of 64, seeded, one thread); with ``marked_class`` plant the mark in
    ``FRACTION`` of that class's patches."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        x = x.clone()
        if marked_class is not None:
            members = (y == marked_class).nonzero().flatten()
            chosen = members[torch.randperm(len(members), generator=generator)[: round(FRACTION * len(members))]]
            x[chosen] = plant(x[chosen])
        model = TextureCNN()
        optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(epochs):
            for batch in torch.randperm(len(x), generator=generator).split(64):
                optimiser.zero_grad()
                loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                loss.backward()
                optimiser.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())
