"""Train the embedded digits CNN from scikit-learn's bundled digits, bit for bit reproducibly.

    python scripts/train_digits.py            # writes src/relprop/data/digits_cnn.pt and digits_test.npz
    python scripts/train_digits.py --check    # retrains in memory and verifies the shipped files

Determinism: fixed seeds, one thread, deterministic algorithms, a fixed stratified split and
a fixed shuffling generator; the same torch build on the same CPU architecture produces
identical weights. The script prints the test accuracy (the README quotes it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from relprop.models.digits import DigitsCNN

DATA = Path(__file__).resolve().parents[1] / "src" / "relprop" / "data"
SEED = 0
EPOCHS = 60
BATCH = 64


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(indices, test_size=0.2, random_state=SEED, stratify=digits.target)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return digits.images, digits.target, train_idx, test_idx, indices


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts by up to one pixel (zero fill): the digits are small and centred."""
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    out = torch.empty_like(x)
    offsets = torch.randint(0, 3, (x.shape[0], 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + 8, dx : dx + 8]
    return out


def fit(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    after_augment: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int = SEED,
    epochs: int = EPOCHS,
) -> DigitsCNN:
    """Train a DigitsCNN with the shipped recipe (seeded: the same data give the same weights).

    ``after_augment(batch, indices)`` may change each augmented batch (``indices`` into ``x_train``),
    e.g. to plant a feature at a fixed position (scripts/clever_hans.py). ``seed`` (initial weights
    and batch order) and ``epochs`` default to the shipped model's.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            xb = augment(x_train[batch], generator)
            if after_augment is not None:
                xb = after_augment(xb, batch)
            optimizer.zero_grad()
            loss = loss_fn(model(xb), y_train[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
    return model.eval()


def tensors() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """All digits as ``(N, 1, 8, 8)`` floats in [0, 1] with labels, and the train/test indices."""
    images, target, train_idx, test_idx, _ = split()
    x_all = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    y_all = torch.from_numpy(target.astype(np.int64))
    return x_all, y_all, train_idx, test_idx


def train() -> tuple[DigitsCNN, float, np.ndarray, np.ndarray, np.ndarray]:
    images, target, _, test_idx, _ = split()
    x_all, y_all, train_idx, test_idx = tensors()
    x_test, y_test = x_all[test_idx], y_all[test_idx]
    model = fit(x_all[train_idx], y_all[train_idx])
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return model, accuracy, images[test_idx], target[test_idx], test_idx


def serialise(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify the shipped weights instead of writing them")
    args = parser.parse_args()
    model, accuracy, test_images, test_labels, test_idx = train()
    print(f"test accuracy: {accuracy:.4f} on {len(test_labels)} held-out digits")
    if args.check:
        shipped = torch.load(DATA / "digits_cnn.pt", weights_only=True)
        same = all(torch.equal(shipped[k], v) for k, v in model.state_dict().items())
        print("shipped weights reproduced bit for bit" if same else "shipped weights DIFFER from a fresh training run")
        raise SystemExit(0 if same else 1)
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "digits_cnn.pt").write_bytes(serialise(model))
    np.savez_compressed(
        DATA / "digits_test.npz",
        images=test_images.astype(np.uint8),
        labels=test_labels.astype(np.uint8),
        indices=test_idx.astype(np.int32),
    )
    digest = hashlib.sha256((DATA / "digits_cnn.pt").read_bytes()).hexdigest()[:16]
    print(f"wrote {DATA / 'digits_cnn.pt'} (sha256 {digest}) and {DATA / 'digits_test.npz'}")


if __name__ == "__main__":
    main()
