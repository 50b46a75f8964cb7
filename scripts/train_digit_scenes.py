"""Train the digit-scenes segmentation network from scikit-learn's training digits, reproducibly.

    python scripts/train_digit_scenes.py            # writes src/relprop/data/digit_scenes_segnet.pt
    python scripts/train_digit_scenes.py --check    # retrains in memory and verifies the shipped weights

The training scenes are composed (seeded) from the training split of ``scripts/train_digits.py``
only; the test scenes of :func:`relprop.models.digit_scenes.digit_scenes_test_set` use the
held-out digits. Determinism as in ``train_digits.py``: fixed seeds, one thread, deterministic
algorithms. Prints the per-pixel accuracy on the test scenes (ink pixels and all pixels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from train_digits import SEED, split  # noqa: E402

from relprop.models.digit_scenes import (  # noqa: E402
    WEIGHTS_FILE,
    DigitScenesNet,
    compose_scenes,
    digit_scenes_test_set,
)

DATA = ROOT / "src" / "relprop" / "data"
TRAIN_SCENES = 3000
EPOCHS = 20
BATCH = 32
#: The background covers most pixels; its weight in the loss keeps the digits' pixels from being drowned.
BACKGROUND_WEIGHT = 0.2


def train_scenes() -> tuple[torch.Tensor, torch.Tensor]:
    images, target, train_idx, _, _ = split()
    scenes = compose_scenes(images[train_idx].astype(np.float32) / 16.0, target[train_idx], TRAIN_SCENES, SEED)
    return scenes.images, scenes.labels


def fit(x: torch.Tensor, y: torch.Tensor, progress: bool = True) -> DigitScenesNet:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = DigitScenesNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    weights = torch.ones(11)
    weights[0] = BACKGROUND_WEIGHT
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    generator = torch.Generator().manual_seed(SEED)
    start = time.monotonic()
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for first in range(0, len(order), BATCH):
            batch = order[first : first + BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        scheduler.step()
        if progress:
            elapsed = time.monotonic() - start
            eta = elapsed / (epoch + 1) * (EPOCHS - epoch - 1)
            print(f"epoch {epoch + 1}/{EPOCHS}  loss {total / len(x):.4f}  {elapsed:.0f} s, about {eta:.0f} s left")
    return model.eval()


def accuracy(model: nn.Module) -> tuple[float, float]:
    """Per-pixel accuracy on the test scenes: on the digits' ink pixels, and on all pixels."""
    test = digit_scenes_test_set()
    with torch.no_grad():
        predicted = model(test.images).argmax(1)
    ink = test.labels > 0
    return float((predicted == test.labels)[ink].float().mean()), float((predicted == test.labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify the shipped weights instead of writing them")
    args = parser.parse_args()
    model = fit(*train_scenes())
    ink, overall = accuracy(model)
    print(f"test scenes: {ink:.4f} of the digits' pixels and {overall:.4f} of all pixels classified correctly")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if args.check:
        shipped = torch.load(DATA / WEIGHTS_FILE, weights_only=True)
        same = all(torch.equal(shipped[k], v) for k, v in state.items())
        print("shipped weights reproduced bit for bit" if same else "shipped weights DIFFER from a fresh training run")
        raise SystemExit(0 if same else 1)
    target = DATA / WEIGHTS_FILE
    temporary = target.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
