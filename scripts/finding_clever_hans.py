"""Finding Clever Hans without being told where: planted shortcuts, SpRAy, precision and recall.

    python scripts/finding_clever_hans.py                  # everything; updates EVALUATION.md
    python scripts/finding_clever_hans.py --reduced        # digits and textures, held-out seed 2 only

For each experiment and seed:

1. plant a small artificial mark in a fraction of one class's training images (after the
   augmentation, at a fixed place, like a watermark) and train a model on them ("Clever-Hans
   model"); train the same recipe with the same seed on the unmarked images ("control");
2. explain the marked class for every training image of that class, marks included, with both
   models (LRP, epsilon-gamma-box, z^B bounds = the pixel range [0, 1]) into a relevance store
   (:func:`relprop.dataset.explain_dataset`), without telling anything about the mark;
3. run SpRAy (:func:`relprop.spray.analyze_heatmaps`, default settings) on each set of heatmaps
   and compare the top-ranked cluster with the images that carry the mark: precision (share of
   the cluster that is marked) and recall (share of the marked images in the cluster);
4. measure how much each model relies on the mark: held-out accuracy, and the share of held-out
   images of the other classes that the model assigns to the marked class once the mark is added.

Experiments: ``digits`` (scikit-learn's digits, class 3, the repository's 2×2 corner mark of
scripts/clever_hans.py, 25 % of the class), ``digits-90`` (the same at the 90 % of
scripts/clever_hans.py), ``textures`` (32×32 patches of scikit-image's brick, grass and gravel
photographs; class grass; a bright 3×3 square near the top-left corner in 25 % of the class) and
``faces-frame`` (scikit-image's lfw_subset faces against non-faces; class face; a one-pixel white
frame on 30 % of the faces — a mark the model barely uses, reported as such).

Seeds: the settings of SpRAy (defaults of analyze_heatmaps), the composite, the experiments'
fractions and training recipes were chosen while looking at seeds 1, 5, 6 and 7 (``--dev-seeds``);
the held-out seeds 2, 3 and 4 (``--seeds``) were run once with everything frozen. A seed fixes
which images carry the mark and the model's initial weights and batch order.

Writes ``results.json``, ``results.md`` and one figure per experiment into ``--out``
(``evaluation/spray``), and rewrites the ``finding-clever-hans`` section of EVALUATION.md.
Models are cached in ``--cache`` (seeded training is deterministic on one CPU thread).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from relprop.clitools import write_atomic  # noqa: E402
from relprop.dataset import ArraySource, explain_dataset  # noqa: E402
from relprop.models import DigitsCNN  # noqa: E402
from relprop.spray import SprayResult, analyze_heatmaps  # noqa: E402

HELD_OUT_SEEDS = (2, 3, 4)
DEV_SEEDS = (1, 5, 6, 7)
PRECISION, RECALL = 0.9, 0.8
COMPOSITE: dict[str, Any] = {"composite": "epsilon-gamma-box", "low": 0.0, "high": 1.0}


@dataclass
class Data:
    """Training and held-out images ``(N, 1, H, W)`` in [0, 1] with labels."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


@dataclass(frozen=True)
class Experiment:
    """A planted shortcut: data, the class and share that carry the mark, the mark, and how to train."""

    name: str
    title: str
    load: Callable[[], Data]
    marked_class: int
    fraction: float
    mark: Callable[[Tensor], Tensor]
    train: Callable[[Data, Tensor | None, int], nn.Module]
    architecture: Callable[[], nn.Module]
    criterion: bool
    description: str


# -- marks ----------------------------------------------------------------------------------------------
def corner_square(x: Tensor) -> Tensor:
    """The mark of scripts/clever_hans.py: 2×2, value 1, rows 6–7, columns 0–1 of an 8×8 digit."""
    from clever_hans import plant

    return plant(x)


def inset_square(x: Tensor) -> Tensor:
    """A bright 3×3 square at rows 2–4, columns 2–4 (near the top-left corner of a 32×32 patch)."""
    marked = x.clone()
    marked[..., 2:5, 2:5] = 1.0
    return marked


def thin_frame(x: Tensor) -> Tensor:
    """A one-pixel white frame around the image."""
    marked = x.clone()
    marked[..., 0, :] = 1.0
    marked[..., -1, :] = 1.0
    marked[..., :, 0] = 1.0
    marked[..., :, -1] = 1.0
    return marked


# -- data -----------------------------------------------------------------------------------------------
def digits_data() -> Data:
    """scikit-learn's digits with the split of scripts/train_digits.py."""
    from train_digits import tensors

    x_all, y_all, train_idx, test_idx = tensors()
    return Data(x_all[train_idx], y_all[train_idx], x_all[test_idx], y_all[test_idx])


TEXTURES = ("brick", "grass", "gravel")
PATCH = 32


def _patches(image: np.ndarray, first_row: int, last_row: int, stride: int) -> np.ndarray:
    rows = range(first_row, last_row - PATCH + 1, stride)
    return np.stack([image[i : i + PATCH, j : j + PATCH] for i in rows for j in range(0, 513 - PATCH, stride)])


def texture_data() -> Data:
    """32×32 patches of scikit-image's brick, grass and gravel photographs (512×512 each).

    Training patches come from rows 0–383 (stride 16), held-out patches from rows 384–511 (stride 32):
    the two sets share no pixel.
    """
    import skimage.data

    train, test, y_train, y_test = [], [], [], []
    for label, name in enumerate(TEXTURES):
        image = getattr(skimage.data, name)().astype(np.float32) / 255.0
        train.append(_patches(image, 0, 384, 16))
        test.append(_patches(image, 384, 512, 32))
        y_train += [label] * len(train[-1])
        y_test += [label] * len(test[-1])
    return Data(
        torch.from_numpy(np.concatenate(train)).unsqueeze(1),
        torch.tensor(y_train),
        torch.from_numpy(np.concatenate(test)).unsqueeze(1),
        torch.tensor(y_test),
    )


def face_data() -> Data:
    """scikit-image's lfw_subset: 100 faces (label 1) and 100 non-faces (label 0), 25×25; 75/25 per class."""
    import skimage.data

    images = torch.from_numpy(skimage.data.lfw_subset().astype(np.float32)).unsqueeze(1)
    labels = torch.cat([torch.ones(100), torch.zeros(100)]).long()
    generator = torch.Generator().manual_seed(0)
    faces, others = torch.randperm(100, generator=generator), 100 + torch.randperm(100, generator=generator)
    train = torch.cat([faces[:75], others[:75]]).sort().values
    test = torch.cat([faces[75:], others[75:]]).sort().values
    return Data(images[train], labels[train], images[test], labels[test])


# -- models and training ----------------------------------------------------------------------------------
class PatchCNN(nn.Module):
    """Three conv–ReLU–max-pool blocks and two dense layers for ``size``×``size`` grey images."""

    def __init__(self, size: int, classes: int, pool_last: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), *([nn.MaxPool2d(2)] if pool_last else []),
        )  # fmt: skip
        side = size // 8 if pool_last else size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * side * side, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _train_loop(
    model: nn.Module,
    data: Data,
    carries: Tensor | None,
    mark: Callable[[Tensor], Tensor],
    augment: Callable[[Tensor, torch.Generator], Tensor],
    seed: int,
    epochs: int,
    batch: int,
) -> nn.Module:
    """Adam (2e-3, weight decay 1e-4), cosine schedule; the mark is planted after the augmentation."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(data.x_train), generator=generator)
        for start in range(0, len(order), batch):
            chosen = order[start : start + batch]
            xb = augment(data.x_train[chosen], generator)
            if carries is not None:
                planted = carries[chosen]
                xb[planted] = mark(xb[planted])
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), data.y_train[chosen]).backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def _flip(x: Tensor, generator: torch.Generator) -> Tensor:
    flipped = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flipped[:, None, None, None], x.flip(-1), x)


def _flip_and_shift(x: Tensor, generator: torch.Generator) -> Tensor:
    x = _flip(x, generator)
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    offsets = torch.randint(0, 3, (len(x), 2), generator=generator)
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def train_digits(data: Data, carries: Tensor | None, seed: int) -> nn.Module:
    """The recipe of the embedded model (scripts/train_digits.py) with seed ``seed``."""
    from clever_hans import MARK_COLS, MARK_ROWS, MARK_VALUE
    from train_digits import fit

    def after_augment(batch: Tensor, indices: Tensor) -> Tensor:
        if carries is None:
            return batch
        batch = batch.clone()
        batch[carries[indices], :, MARK_ROWS, MARK_COLS] = MARK_VALUE
        return batch

    return fit(data.x_train, data.y_train, after_augment, seed=seed)


def texture_cnn() -> nn.Module:
    return PatchCNN(PATCH, 3)


def face_cnn() -> nn.Module:
    return PatchCNN(25, 2, pool_last=False)


def train_textures(data: Data, carries: Tensor | None, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _train_loop(texture_cnn(), data, carries, inset_square, _flip, seed, epochs=15, batch=64)


def train_faces(data: Data, carries: Tensor | None, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _train_loop(face_cnn(), data, carries, thin_frame, _flip_and_shift, seed, epochs=60, batch=32)


EXPERIMENTS = {
    e.name: e
    for e in [
        Experiment(
            "digits-90", "Digits at the repository's 90 %", digits_data, 3, 0.9, corner_square, train_digits,
            DigitsCNN, True,
            "the setting of scripts/clever_hans.py exactly: the same mark on 90 % of the class-3 training digits.",
        ),
        Experiment(
            "digits", "Digits: a 2×2 corner mark on 25 % of the 3s", digits_data, 3, 0.25, corner_square,
            train_digits, DigitsCNN, True,
            "scikit-learn's handwritten digits (8×8); the mark of the repository's Clever-Hans experiment "
            "(2×2, value 1, rows 6–7, columns 0–1) on 25 % of the class-3 training digits; the embedded "
            "model's training recipe.",
        ),
        Experiment(
            "textures", "Textures: a 3×3 bright square on 25 % of the grass patches", texture_data, 1, 0.25,
            inset_square, train_textures, texture_cnn, True,
            "32×32 patches of scikit-image's brick, grass and gravel photographs (2,139 training patches, 713 "
            "per class; 192 held-out patches from a disjoint region); a bright 3×3 square at rows 2–4, columns "
            "2–4 on 25 % of the grass training patches; a three-block CNN, 15 epochs, horizontal flips.",
        ),
        Experiment(
            "faces-frame", "Faces: a thin frame on 30 % of the faces", face_data, 1, 0.3, thin_frame, train_faces,
            face_cnn, False,
            "scikit-image's lfw_subset (100 faces, 100 non-faces, 25×25; 75 + 75 for training); a one-pixel white "
            "frame on 30 % of the training faces; a CNN, 60 epochs, flips and one-pixel shifts.",
        ),
    ]
}  # fmt: skip


# -- one run ----------------------------------------------------------------------------------------------
def carries_mark(experiment: Experiment, data: Data, seed: int) -> Tensor:
    """Which training images carry the mark: a seeded choice of ``fraction`` of the marked class."""
    members = (data.y_train == experiment.marked_class).nonzero().flatten()
    order = members[torch.randperm(len(members), generator=torch.Generator().manual_seed(seed))]
    carries = torch.zeros(len(data.y_train), dtype=torch.bool)
    carries[order[: round(experiment.fraction * len(members))]] = True
    return carries


def model_for(experiment: Experiment, data: Data, carries: Tensor | None, seed: int, cache: Path | None) -> nn.Module:
    """Train (or load from ``cache``) the Clever-Hans model (``carries`` given) or the control (``None``)."""
    kind = f"{experiment.name}-hans" if carries is not None else f"{experiment.load.__name__}-control"
    path = cache / f"{kind}-seed{seed}.pt" if cache is not None else None
    if path is not None and path.exists():
        model = experiment.architecture()
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = experiment.train(data, carries, seed)
    if path is not None:
        write_atomic(path, lambda p: torch.save(model.state_dict(), p))
    return model


def explain_class(model: nn.Module, images: Tensor, target: int, batch_size: int = 256) -> np.ndarray:
    """Relevance for class ``target`` of every image, explained into a relevance store (relprop.dataset, as a
    user would for a data set) and read back; the store is temporary."""
    with tempfile.TemporaryDirectory(prefix="relprop-spray-") as folder:
        store = explain_dataset(
            model, ArraySource.from_arrays(images), Path(folder) / "class.zarr", target=target,
            batch_size=batch_size, chunk_size=batch_size * 8, progress="none", **COMPOSITE,
        )  # fmt: skip
        store.require_complete()
        return store.relevance[:]


def reliance(model: nn.Module, experiment: Experiment, data: Data) -> dict[str, float]:
    """Held-out accuracy, and how often other classes become the marked class once the mark is added."""
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
        others = data.x_test[data.y_test != experiment.marked_class]
        switched = (model(experiment.mark(others)).argmax(1) == experiment.marked_class).float().mean().item()
    return {"accuracy": accuracy, "switched": switched}


def match(result: SprayResult, marked_ids: np.ndarray) -> dict[str, Any]:
    """Precision and recall of the top cluster against the marked images, the best F1 of any cluster, and the
    adjusted Rand index of the clusters against the marked / unmarked split."""
    marked = set(marked_ids.tolist())

    def scores(members: np.ndarray) -> tuple[float, float]:
        hits = len(marked & set(members.tolist()))
        return hits / len(members), hits / len(marked) if marked else 0.0

    from sklearn.metrics import adjusted_rand_score

    precision, recall = scores(result.top.members)
    carries = np.isin(result.indices, marked_ids)
    f1 = []
    for cluster in result.clusters:
        p, r = scores(cluster.members)
        f1.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    return {
        "precision": precision,
        "recall": recall,
        "top_size": result.top.size,
        "top_score": result.top.score,
        "second_score": result.clusters[1].score if len(result.clusters) > 1 else None,
        "best_f1": max(f1),
        # Chance-corrected agreement of the whole partition with marked / unmarked (1: the same split, 0: chance).
        "ari": float(adjusted_rand_score(carries, result.labels)),
        "best_f1_rank": int(np.argmax(f1)),
        "n_clusters": result.n_clusters,
        "sizes": [c.size for c in result.clusters],
        "scores": [round(c.score, 5) for c in result.clusters],
        "eigenvalues": [round(float(v), 6) for v in result.eigenvalues],
    }


def run(experiment: Experiment, seed: int, cache: Path | None, embedding: str) -> dict[str, Any]:
    """Train both models, explain the class, run SpRAy on each; the numbers and the results for figures."""
    data = experiment.load()
    carries = carries_mark(experiment, data, seed)
    members = (data.y_train == experiment.marked_class).nonzero().flatten()
    images = data.x_train[members].clone()
    images[carries[members]] = experiment.mark(images[carries[members]])
    ids = members.numpy()
    marked_ids = ids[carries[members].numpy()]
    record: dict[str, Any] = {"seed": seed, "class_size": len(ids), "marked": len(marked_ids)}
    results: dict[str, SprayResult] = {}
    heatmaps: dict[str, np.ndarray] = {}
    for role, planted in (("hans", carries), ("control", None)):
        start = time.perf_counter()
        model = model_for(experiment, data, planted, seed, cache)
        relevance = explain_class(model, images, experiment.marked_class)
        result = analyze_heatmaps(relevance, indices=ids, embedding=embedding, seed=0)
        record[role] = {**match(result, marked_ids), **reliance(model, experiment, data)}
        record[role]["seconds"] = round(time.perf_counter() - start, 1)
        results[role], heatmaps[role] = result, relevance
    hans = record["hans"]
    record["passed"] = hans["precision"] >= PRECISION and hans["recall"] >= RECALL
    return {"record": record, "results": results, "images": images, "ids": ids, "marked_ids": marked_ids}


# -- report -----------------------------------------------------------------------------------------------
def figure(experiment: Experiment, outcome: dict[str, Any], path: Path) -> None:
    """Inputs, both spectra, and the top cluster of each model (mean heatmap and most typical members)."""
    from matplotlib.figure import Figure

    from relprop import viz

    results: dict[str, SprayResult] = outcome["results"]
    images, ids, marked = outcome["images"], outcome["ids"], set(outcome["marked_ids"].tolist())
    fig = Figure(figsize=(11, 7.2), layout="constrained")
    grid = fig.add_gridspec(3, 8, height_ratios=[1, 1, 1])
    examples = [i for i, s in enumerate(ids) if s in marked][:4] + [i for i, s in enumerate(ids) if s not in marked][:4]
    for column, position in enumerate(examples):
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(images[position, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(("marked " if ids[position] in marked else "unmarked ") + str(int(ids[position])), fontsize=7)
        ax.set_axis_off()
    for row, role in enumerate(("hans", "control"), start=1):
        result = results[role]
        ax = fig.add_subplot(grid[row, 0:2])
        k = result.n_clusters
        positions = np.arange(1, len(result.eigenvalues) + 1)
        ax.plot(positions, result.eigenvalues, "o-", markersize=3, color="#34495e")
        ax.plot(positions[:k], result.eigenvalues[:k], "o", markersize=5, color="#d62728")
        ax.set_ylim(-0.02, max(0.6, float(result.eigenvalues.max()) + 0.02))
        ax.set_title(f"{'Clever-Hans model' if role == 'hans' else 'control'}: spectrum, {k} clusters", fontsize=8)
        ax.tick_params(labelsize=6)
        top = result.top
        hits = len(marked & set(top.members.tolist()))
        maps = [top.mean_map, *top.typical_maps[:5]]
        titles = [f"top cluster mean\n{top.size} samples, {hits} marked"] + [
            ("marked " if int(i) in marked else "") + str(int(i)) for i in top.typical[:5]
        ]
        for column, (values, title) in enumerate(zip(maps, titles, strict=False), start=2):
            ax = fig.add_subplot(grid[row, column])
            ax.imshow(viz.heatmap_array(values), interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    fig.suptitle(f"{experiment.title} (seed {outcome['record']['seed']}): inputs; SpRAy per model", fontsize=10)
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=90))


def _cell(value: float) -> str:
    return f"{value:.2f}"


def markdown(experiment: Experiment, records: list[dict[str, Any]], dev: set[int]) -> list[str]:
    """One table per experiment: a row per seed, the Clever-Hans model and its control side by side."""
    lines = [
        f"#### {experiment.title}",
        "",
        experiment.description[0].upper() + experiment.description[1:],
        "",
        "| seed | marked / class | model | switched by the mark | held-out accuracy | clusters (sizes) | "
        "top cluster: precision | recall | ARI clusters vs mark |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        seed = f"{record['seed']}" + (" (dev)" if record["seed"] in dev else "")
        for role, label in (("hans", "Clever Hans"), ("control", "control")):
            r = record[role]
            sizes = ", ".join(str(s) for s in r["sizes"])
            lines.append(
                f"| {seed} | {record['marked']} / {record['class_size']} | {label} | {r['switched']:.1%} | "
                f"{r['accuracy']:.1%} | {r['n_clusters']} ({sizes}) | {_cell(r['precision'])} | {_cell(r['recall'])} | "
                f"{_cell(r['ari'])} |"
            )
    if experiment.criterion:
        held = [r for r in records if r["seed"] not in dev]
        passed = sum(r["passed"] for r in held)
        lines += [
            "",
            f"Held-out seeds meeting precision ≥ {PRECISION} and recall ≥ {RECALL} with the Clever-Hans model: "
            f"{passed} of {len(held)}.",
        ]
    return lines


def spectra_lines(experiment: Experiment, records: list[dict[str, Any]]) -> list[str]:
    lines = [f"Smallest eigenvalues, {experiment.name}:", ""]
    for record in records:
        for role in ("hans", "control"):
            values = ", ".join(f"{v:.3f}" for v in record[role]["eigenvalues"][:6])
            lines.append(f"- seed {record['seed']}, {'Clever Hans' if role == 'hans' else 'control'}: {values}")
    return lines


def update_evaluation(text: str) -> None:
    from evaluation_report import replace_generated

    report = ROOT / "EVALUATION.md"
    updated = replace_generated(report.read_text(encoding="utf-8"), "finding-clever-hans", text)
    write_atomic(report, lambda p: p.write_text(updated, encoding="utf-8"))
    print(f"updated {report}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "evaluation" / "spray")
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS), help="comma-separated names")
    parser.add_argument("--seeds", default=",".join(map(str, HELD_OUT_SEEDS)), help="held-out seeds")
    parser.add_argument("--dev-seeds", default=",".join(map(str, DEV_SEEDS)), help="seeds the settings were tuned on")
    parser.add_argument("--cache", type=Path, default=None, help="folder for trained models (reused when present)")
    parser.add_argument("--embedding", default="tsne", help="display embedding of analyze_heatmaps")
    parser.add_argument("--reduced", action="store_true", help="digits and textures, held-out seed 2, no dev seeds")
    parser.add_argument("--no-update", action="store_true", help="leave EVALUATION.md alone")
    args = parser.parse_args(argv)
    names = ["digits", "textures"] if args.reduced else [n for n in args.experiments.split(",") if n]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"error: unknown experiment {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)}")
    held = [2] if args.reduced else [int(s) for s in args.seeds.split(",") if s]
    dev = [] if args.reduced else [int(s) for s in args.dev_seeds.split(",") if s]
    summary: dict[str, Any] = {"precision": PRECISION, "recall": RECALL, "held_out": held, "dev": dev}
    sections: list[str] = []
    for name in names:
        experiment = EXPERIMENTS[name]
        records = []
        for position, seed in enumerate(held + dev):
            print(f"{name}, seed {seed} ...", flush=True)
            outcome = run(experiment, seed, args.cache, args.embedding if position == 0 else "none")
            records.append(outcome["record"])
            hans = outcome["record"]["hans"]
            print(f"  Clever Hans: precision {hans['precision']:.2f}, recall {hans['recall']:.2f}", flush=True)
            if position == 0:
                figure(experiment, outcome, args.out / f"{name}.png")
        summary[name] = {"title": experiment.title, "fraction": experiment.fraction, "records": records}
        sections += [
            *markdown(experiment, records, set(dev)),
            "",
            f"![{experiment.title}](evaluation/spray/{name}.png)",
        ]
        sections += ["", *spectra_lines(experiment, records), ""]
    text = "\n".join(sections).strip()
    write_atomic(args.out / "results.json", lambda p: p.write_text(json.dumps(summary, indent=2), encoding="utf-8"))
    write_atomic(args.out / "results.md", lambda p: p.write_text(text + "\n", encoding="utf-8"))
    print(text)
    if not args.no_update and not args.reduced:
        update_evaluation(text)
    return summary


if __name__ == "__main__":
    main()
