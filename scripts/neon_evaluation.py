"""NEON on scikit-learn's tabular data: faithfulness against SHAP and perturbation methods, and two real uses.

    python scripts/neon_evaluation.py            # about 1.5 minutes on the shared 2-core machine

For every setup (data set × model) the same rows are explained by NEON and by SHAP
(``KernelExplainer``, ``PermutationExplainer``), single-feature occlusion, per-row
permutation and random relevance. Each explanation orders the features (most relevant
first); the features are replaced by their training mean in that order, one per step, and
the explained score is recomputed. A faithful explanation makes it drop fast: the area over
the curve (AOPC, mean drop over all steps) is larger. Cost per row is wall time, measured in
the same run for all methods.

Then the real uses: k-means on wine (what separates each cluster) and a one-class SVM on
breast cancer (which features make the outliers). Writes ``evaluation/neon/`` (results.json,
curves.png) and the tables between the ``<!-- generated:neon-* -->`` markers of EVALUATION.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from relprop import neon  # noqa: E402
from relprop.clitools import write_atomic  # noqa: E402

DATASETS = ("wine", "cancer", "digits")
COMPARATORS = ("kernel-shap", "permutation-shap", "occlusion", "permutation")
METHOD_ORDER = (
    "neon",
    "neon (vs mean)",
    "neon (β = 1)",
    "neon (β = ∞)",
    "kernel-shap",
    "permutation-shap",
    "occlusion",
    "permutation",
    "random",
)


@dataclass
class Setup:
    """A fitted model, the rows to explain and how to compute the explained score."""

    name: str
    estimator: Any
    train: np.ndarray
    rows: np.ndarray
    targets: np.ndarray
    outputs: Callable[[np.ndarray], np.ndarray]
    score_name: str
    neon: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = field(default_factory=dict)

    def score(self, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return self.outputs(x)[np.arange(len(x)), targets]


# -- models ------------------------------------------------------------------------------------------
def _load(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn import datasets

    loader = {"wine": datasets.load_wine, "cancer": datasets.load_breast_cancer, "digits": datasets.load_digits}
    data = loader[name]()
    names = [str(n) for n in data.feature_names]
    return data.data.astype(np.float64), data.target, names


def _split(x: np.ndarray, y: np.ndarray, rows: int, seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    return x_train, y_train, x_test[:rows]


def _network_outputs(estimator: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The model's decision values; a binary classifier's one output z as the pair (-z, z), as NEON explains it."""
    network = neon.neuralize(estimator)

    def outputs(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = network(torch.as_tensor(x, dtype=torch.float64)).numpy()
        return np.concatenate([-z, z], axis=1) if network.binary else z

    return outputs


def _relevance(estimator: Any, **options: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def explain(rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return neon.explain(estimator, rows, targets, **options).relevance.numpy()

    return explain


def _classifier_setup(name: str, data: str, model: Any, rows: int, seed: int) -> Setup:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, _ = _load(data)
    x_train, y_train, x_rows = _split(x, y, rows, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = make_pipeline(StandardScaler(), model).fit(x_train, y_train)
    outputs = _network_outputs(estimator)
    mean = x_train.mean(0)
    return Setup(
        name=name,
        estimator=estimator,
        train=x_train,
        rows=x_rows,
        targets=outputs(x_rows).argmax(1),
        outputs=outputs,
        score_name="decision value (logit) of the predicted class",
        neon={
            "neon": _relevance(estimator),
            "neon (vs mean)": _relevance(estimator, reference=mean, composite="lrp-0"),
        },
    )


def _kmeans_setup(rows: int, seed: int) -> Setup:
    from sklearn.cluster import KMeans
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, _, _ = _load("wine")
    estimator = make_pipeline(StandardScaler(), KMeans(3, n_init=10, random_state=seed)).fit(x)

    def outputs(data: np.ndarray) -> np.ndarray:  # scikit-learn's own distances, not the network
        d = estimator.transform(data) ** 2
        k = d.shape[1]
        return np.stack(
            [np.min([0.5 * (d[:, j] - d[:, c]) for j in range(k) if j != c], axis=0) for c in range(k)], axis=1
        )

    chosen = np.random.default_rng(seed).choice(len(x), size=min(rows, len(x)), replace=False)
    return Setup(
        name="wine · k-means (3 clusters)",
        estimator=estimator,
        train=x,
        rows=x[chosen],
        targets=estimator.predict(x[chosen]),
        outputs=outputs,
        score_name="evidence f_c for the assigned cluster",
        neon={"neon": _relevance(estimator), "neon (β = 1)": _relevance(estimator, beta=1.0)},
    )


def _fit_svm(seed: int) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """A one-class SVM fitted on 70 % of the breast-cancer rows; the held-out rows and their diagnosis.

    The rows explained are held out: a training row that became a support vector lies at distance
    0 from its own unit, whose relevance then stays with that unit's shift (absorbed) — the model
    scores its own support vectors partly by themselves.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import OneClassSVM

    x, diagnosis, _ = _load("cancer")
    x_train, x_test, _, d_test = train_test_split(x, diagnosis, test_size=0.3, random_state=seed, stratify=diagnosis)
    estimator = make_pipeline(StandardScaler(), OneClassSVM(nu=0.05)).fit(x_train)
    return estimator, x_train, x_test, d_test


def _svm_setup(rows: int, seed: int, outliers: bool) -> Setup:
    """Held-out rows: the first ``rows``, or (``outliers``) those the SVM calls outliers (o(x) > 0)."""
    estimator, x_train, x_test, _ = _fit_svm(seed)
    svm = estimator[-1]

    def outputs(data: np.ndarray) -> np.ndarray:  # o(x) from scikit-learn's score_samples
        return (-np.log(estimator.score_samples(data) / svm.offset_[0]) / svm._gamma)[:, None]

    chosen = x_test[estimator.predict(x_test) == -1][:rows] if outliers else x_test[:rows]
    which = "its outliers among the held-out rows" if outliers else "held-out rows"
    return Setup(
        name=f"breast cancer · one-class SVM ({which})",
        estimator=estimator,
        train=x_train,
        rows=chosen,
        targets=np.zeros(len(chosen), dtype=int),
        outputs=outputs,
        score_name="outlier score o(x)",
        neon={"neon": _relevance(estimator), "neon (β = ∞)": _relevance(estimator, beta=float("inf"))},
    )


def setups(datasets: tuple[str, ...], rows: int, seed: int) -> list[Setup]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    def mlp() -> Any:
        return MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=400, random_state=seed)

    chosen: list[Setup] = []
    if "wine" in datasets:
        chosen.append(_kmeans_setup(rows, seed))
        chosen.append(
            _classifier_setup("wine · logistic regression", "wine", LogisticRegression(max_iter=1000), rows, seed)
        )
    if "cancer" in datasets:
        chosen.append(_svm_setup(rows, seed, outliers=False))
        chosen.append(_svm_setup(rows, seed, outliers=True))
        chosen.append(_classifier_setup("breast cancer · MLP (64, 32), ReLU", "cancer", mlp(), rows, seed))
    if "digits" in datasets:
        chosen.append(_classifier_setup("digits (64 features) · MLP (64, 32), ReLU", "digits", mlp(), rows, seed))
    return chosen


# -- the comparators ------------------------------------------------------------------------------------
def _shap_per_row(setup: Setup, kind: str, budget: int | None) -> Iterator[np.ndarray]:
    import shap

    mean = setup.train.mean(0, keepdims=True)  # removal = the training mean, as in the curves
    np.random.seed(0)  # Kernel SHAP samples its coalitions with NumPy's global generator
    for row, target in zip(setup.rows, setup.targets, strict=True):

        def f(data: np.ndarray, target: int = int(target)) -> np.ndarray:
            return setup.outputs(data)[:, target]

        if kind == "kernel-shap":
            explainer = shap.KernelExplainer(f, mean)
            yield np.asarray(explainer.shap_values(row[None], nsamples=budget or "auto", silent=True))[0]
        else:
            masker = shap.maskers.Independent(mean)
            explainer = shap.PermutationExplainer(f, masker)
            yield explainer(row[None], max_evals=budget or 500, silent=True).values[0]


def _occlusion(setup: Setup) -> Iterator[np.ndarray]:
    mean = setup.train.mean(0)
    d = setup.rows.shape[1]
    for row, target in zip(setup.rows, setup.targets, strict=True):
        batch = np.repeat(row[None], d + 1, 0)
        batch[np.arange(1, d + 1), np.arange(d)] = mean
        s = setup.score(batch, np.full(d + 1, target))
        yield s[0] - s[1:]


def _permutation(setup: Setup, draws: int, seed: int) -> Iterator[np.ndarray]:
    generator = np.random.default_rng(seed)
    d = setup.rows.shape[1]
    for row, target in zip(setup.rows, setup.targets, strict=True):
        donors = setup.train[generator.integers(0, len(setup.train), draws)]
        batch = np.repeat(row[None], d * draws, 0).reshape(d, draws, d)
        for i in range(d):
            batch[i, :, i] = donors[:, i]
        s = setup.score(batch.reshape(-1, d), np.full(d * draws, target)).reshape(d, draws)
        base = setup.score(row[None], np.array([target]))[0]
        yield base - s.mean(1)


def _neon_per_row(setup: Setup, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Iterator[np.ndarray]:
    for n in range(len(setup.rows)):
        yield fn(setup.rows[n : n + 1], setup.targets[n : n + 1])[0]


def _progress(label: str, done: int, total: int, start: float) -> None:
    elapsed = time.perf_counter() - start
    rate = done / elapsed if elapsed > 0 else float("inf")
    eta = (total - done) / rate if rate > 0 else 0.0
    end = "\n" if done == total else ""
    print(f"\r  {label}: {done}/{total} rows, {rate:.1f} rows/s, ETA {eta:.0f} s   ", end=end, file=sys.stderr)


def _run(label: str, make: Callable[[], Iterator[np.ndarray]], total: int) -> tuple[np.ndarray, float]:
    """Relevance of every row and seconds per row; one untimed row first (imports, numba compilation)."""
    next(iter(make()))
    start = time.perf_counter()
    out = []
    for row in make():
        out.append(row)
        _progress(label, len(out), total, start)
    return np.stack(out), (time.perf_counter() - start) / total


def _batched_cost(setup: Setup, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """Seconds per row when all rows go through NEON in one call."""
    fn(setup.rows, setup.targets)
    start = time.perf_counter()
    fn(setup.rows, setup.targets)
    return (time.perf_counter() - start) / len(setup.rows)


def evaluations_per_row(name: str, d: int, args: argparse.Namespace) -> str:
    """How many times a method evaluates the model per explained row."""
    if name.startswith("neon"):
        return "1 forward + 1 backward"
    return {
        "kernel-shap": str(args.nsamples or 2 * d + 2048),
        "permutation-shap": str(args.max_evals or 500),
        "occlusion": str(d + 1),
        "permutation": str(d * args.draws + 1),
        "random": "0",
    }[name]


def explain_all(setup: Setup, args: argparse.Namespace) -> dict[str, tuple[np.ndarray, float]]:
    """Relevance ``(N, D)`` and seconds per row of every method on the setup's rows."""
    n = len(setup.rows)
    results = {}
    for name, fn in setup.neon.items():
        results[name] = _run(f"{setup.name} · {name}", lambda fn=fn: _neon_per_row(setup, fn), n)
    comparators: dict[str, Callable[[], Iterator[np.ndarray]]] = {
        "kernel-shap": lambda: _shap_per_row(setup, "kernel-shap", args.nsamples),
        "permutation-shap": lambda: _shap_per_row(setup, "permutation-shap", args.max_evals),
        "occlusion": lambda: _occlusion(setup),
        "permutation": lambda: _permutation(setup, args.draws, args.seed),
    }
    for name, make in comparators.items():
        if name in args.comparators:
            results[name] = _run(f"{setup.name} · {name}", make, n)
    noise = np.random.default_rng(args.seed).normal(size=setup.rows.shape)
    results["random"] = (noise, 0.0)
    return results


def removal_curves(setup: Setup, relevance: np.ndarray) -> np.ndarray:
    """Score after replacing the k most relevant features by the training mean, k = 0..D, per row."""
    mean = setup.train.mean(0)
    order = np.argsort(-relevance, axis=1, kind="stable")
    n, d = relevance.shape
    curves = np.empty((n, d + 1))
    x = setup.rows.copy()
    curves[:, 0] = setup.score(x, setup.targets)
    for k in range(d):
        x[np.arange(n), order[:, k]] = mean[order[:, k]]
        curves[:, k + 1] = setup.score(x, setup.targets)
    return curves


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def evaluate(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    results = explain_all(setup, args)
    reference = results["kernel-shap"][0] if "kernel-shap" in results else None
    neon_cost = min(cost for name, (_, cost) in results.items() if name.startswith("neon"))
    batched = {name: _batched_cost(setup, fn) for name, fn in setup.neon.items()}
    summary: dict[str, Any] = {}
    for name in METHOD_ORDER:
        if name not in results:
            continue
        relevance, cost = results[name]
        curves = removal_curves(setup, relevance)
        drops = curves[:, :1] - curves
        aopc = drops.mean(1)
        pairs = [] if reference is None else zip(relevance, reference, strict=True)
        correlation = [np.corrcoef(a, b)[0, 1] for a, b in pairs if a.std() * b.std()]
        summary[name] = {
            "aopc": float(aopc.mean()),
            "aopc_se": _se(aopc),
            "drop_3": float(drops[:, min(3, drops.shape[1] - 1)].mean()),
            "seconds_per_row": cost,
            "seconds_per_row_batched": batched.get(name),
            "evaluations_per_row": evaluations_per_row(name, setup.rows.shape[1], args),
            "times_neon": cost / neon_cost if neon_cost > 0 else None,
            "pearson_with_kernel_shap": float(np.mean(correlation)) if correlation else None,
            "mean_curve": drops.mean(0).tolist(),
        }
    return {
        "setup": setup.name,
        "rows": len(setup.rows),
        "features": setup.rows.shape[1],
        "score": setup.score_name,
        "mean_score": float(setup.score(setup.rows, setup.targets).mean()),
        "methods": summary,
    }


# -- real uses ---------------------------------------------------------------------------------------------
def kmeans_on_wine(seed: int) -> dict[str, Any]:
    """What separates each k-means cluster of the wine data: mean relevance per feature within the cluster."""
    from sklearn.cluster import KMeans
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, cultivar, names = _load("wine")
    estimator = make_pipeline(StandardScaler(), KMeans(3, n_init=10, random_state=seed)).fit(x)
    result = neon.explain(estimator, x, feature_names=names)
    relevance = result.relevance.numpy()
    z = estimator[0].transform(x)
    clusters = []
    for c in range(3):
        members = result.target.numpy() == c
        mean_relevance = relevance[members].mean(0)
        top = np.argsort(-mean_relevance)[:4]
        clusters.append(
            {
                "cluster": c,
                "rows": int(members.sum()),
                "cultivars": {int(k): int((cultivar[members] == k).sum()) for k in np.unique(cultivar[members])},
                "mean_evidence": float(result.score[torch.as_tensor(members)].mean()),
                "top": [
                    {"feature": names[i], "relevance": float(mean_relevance[i]), "mean_z": float(z[members, i].mean())}
                    for i in top
                ],
                "share_of_top4": float(mean_relevance[top].sum() / mean_relevance.sum()),
            }
        )
    return {"clusters": clusters, "ledger_closes": bool(result.ledger.closes(rtol=1e-10))}


def svm_on_cancer(seed: int) -> dict[str, Any]:
    """Which features make the breast-cancer outliers of a one-class SVM (among held-out rows)."""
    _, _, names = _load("cancer")
    estimator, x_train, x, diagnosis = _fit_svm(seed)
    result = neon.explain(estimator, x, feature_names=names)
    relevance = result.relevance.numpy()
    score = result.score.numpy()
    outliers = score > 0
    assert np.array_equal(outliers, estimator.predict(x) == -1)
    z = estimator[0].transform(x)
    mean_relevance = relevance[outliers].mean(0)
    top = np.argsort(-mean_relevance)[:6]
    worst = np.argsort(-score)[:5]
    return {
        "train_rows": len(x_train),
        "rows": len(x),
        "outliers": int(outliers.sum()),
        "malignant_share_outliers": float((diagnosis[outliers] == 0).mean()),
        "malignant_share_all": float((diagnosis == 0).mean()),
        "top": [
            {"feature": names[i], "relevance": float(mean_relevance[i]), "mean_z": float(z[outliers, i].mean())}
            for i in top
        ],
        "share_of_top6": float(mean_relevance[top].sum() / mean_relevance.sum()),
        "strongest": [
            {
                "row": int(r),
                "score": float(score[r]),
                "diagnosis": "malignant" if diagnosis[r] == 0 else "benign",
                "top": [
                    {"feature": names[i], "share": float(relevance[r, i] / score[r]), "z": float(z[r, i])}
                    for i in np.argsort(-relevance[r])[:3]
                ],
            }
            for r in worst
        ],
        "ledger_closes": bool(result.ledger.closes(rtol=1e-10)),
    }


# -- reporting -------------------------------------------------------------------------------------------------
def _cost(seconds: float) -> str:
    if seconds <= 0:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def faithfulness_markdown(evaluations: list[dict[str, Any]]) -> str:
    lines = []
    for ev in evaluations:
        lines.append(
            f"**{ev['setup']}** — {ev['rows']} rows, {ev['features']} features; explained: {ev['score']} "
            f"(mean {ev['mean_score']:.3g})"
        )
        lines.append("")
        lines.append(
            "| method | AOPC ↑ | drop after 3 features ↑ | corr. with Kernel SHAP | model evaluations per row "
            "| cost per row | × fastest NEON | per row, all rows in one call |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, m in ev["methods"].items():
            corr = "—" if m["pearson_with_kernel_shap"] is None else f"{m['pearson_with_kernel_shap']:.3f}"
            times = (
                "—"
                if not m["times_neon"]
                else f"{m['times_neon']:.0f}×"
                if m["times_neon"] >= 10
                else f"{m['times_neon']:.1f}×"
            )
            batch = "—" if m["seconds_per_row_batched"] is None else _cost(m["seconds_per_row_batched"])
            lines.append(
                f"| `{name}` | {m['aopc']:.4g} ± {m['aopc_se']:.2g} | {m['drop_3']:.4g} | {corr} | "
                f"{m['evaluations_per_row']} | {_cost(m['seconds_per_row'])} | {times} | {batch} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def kmeans_markdown(kmeans: dict[str, Any]) -> str:
    lines = [
        "| cluster | rows (wine cultivars) | mean f_c | most relevant features: mean relevance (cluster mean, in SD) |"
    ]
    lines.append("|---|---|---|---|")
    for c in kmeans["clusters"]:
        cultivars = ", ".join(f"{k}: {v}" for k, v in c["cultivars"].items())
        top = "; ".join(f"{t['feature']} {t['relevance']:.2f} ({t['mean_z']:+.1f})" for t in c["top"])
        lines.append(f"| {c['cluster']} | {c['rows']} ({cultivars}) | {c['mean_evidence']:.2f} | {top} |")
    return "\n".join(lines)


def svm_markdown(svm: dict[str, Any]) -> str:
    lines = []
    lines.append(
        f"One-class SVM (ν = 0.05, RBF, standardised features) fitted on {svm['train_rows']} breast-cancer rows, "
        f"applied to the {svm['rows']} held-out rows: {svm['outliers']} outliers (o(x) > 0), of which "
        f"{svm['malignant_share_outliers']:.0%} malignant "
        f"({svm['malignant_share_all']:.0%} of the held-out rows). The features that make them outliers "
        f"(mean relevance over the outliers; their mean, in SD; the top six carry {svm['share_of_top6']:.0%} "
        "of the outlier score):"
    )
    lines.append("")
    lines.append("| feature | mean relevance | outliers' mean (SD) |")
    lines.append("|---|---|---|")
    for t in svm["top"]:
        lines.append(f"| {t['feature']} | {t['relevance']:.3f} | {t['mean_z']:+.1f} |")
    lines.append("")
    lines.append("| strongest outliers (held-out row) | o(x) | diagnosis | top features: share of o(x) (value in SD) |")
    lines.append("|---|---|---|---|")
    for s in svm["strongest"]:
        top = "; ".join(f"{t['feature']} {t['share']:.0%} ({t['z']:+.1f})" for t in s["top"])
        lines.append(f"| row {s['row']} | {s['score']:.2f} | {s['diagnosis']} | {top} |")
    return "\n".join(lines)


def curves_figure(evaluations: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(evaluations), 3.9), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(1, len(evaluations), squeeze=False)).ravel()
    colours = {name: f"C{i}" for i, name in enumerate(METHOD_ORDER)}
    handles = {}
    for ax, ev in zip(axes, evaluations, strict=True):
        for name, m in ev["methods"].items():
            curve = np.asarray(m["mean_curve"])
            style = {
                "linestyle": ":" if name == "random" else "-",
                "linewidth": 2.0 if name.startswith("neon") else 1.1,
            }
            (handles[name],) = ax.plot(np.arange(len(curve)), curve, color=colours[name], label=name, **style)
        ax.set_title(ev["setup"], fontsize=8)
        ax.set_xlabel("features replaced by the training mean", fontsize=7)
        ax.set_ylabel("drop of the explained score", fontsize=7)
        ax.tick_params(labelsize=7)
    ordered = [name for name in METHOD_ORDER if name in handles]
    figure.legend([handles[n] for n in ordered], ordered, loc="outside lower center", ncols=len(ordered), fontsize=7)
    write_atomic(path, lambda p: figure.savefig(p, format="png"))


def replace_generated(text: str, name: str, content: str) -> str:
    pattern = re.compile(rf"(<!-- generated:{name} -->).*?(<!-- /generated:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: the report has no <!-- generated:{name} --> section")
    return pattern.sub(lambda m: f"{m.group(1)}\n{content}\n{m.group(2)}", text)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60, help="rows explained per setup (default 60)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of wine,cancer,digits")
    parser.add_argument("--nsamples", type=int, default=None, help="Kernel SHAP samples per row (default: shap's auto)")
    parser.add_argument("--max-evals", type=int, default=None, help="Permutation SHAP evaluations (default 500)")
    parser.add_argument("--draws", type=int, default=20, help="donor rows per feature for 'permutation'")
    parser.add_argument("--comparators", default=",".join(COMPARATORS), help="subset of " + ",".join(COMPARATORS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "evaluation" / "neon")
    parser.add_argument("--report", type=Path, default=ROOT / "EVALUATION.md", help="page whose markers are rewritten")
    parser.add_argument("--no-report", action="store_true", help="write evaluation/neon only")
    args = parser.parse_args(argv)
    datasets = tuple(d for d in args.datasets.split(",") if d)
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        parser.error(f"unknown data sets {sorted(unknown)}; choose from {', '.join(DATASETS)}")
    args.comparators = tuple(c for c in args.comparators.split(",") if c)
    unknown = set(args.comparators) - set(COMPARATORS)
    if unknown:
        parser.error(f"unknown comparators {sorted(unknown)}; choose from {', '.join(COMPARATORS)}")
    torch.set_num_threads(int(os.environ.get("RELPROP_THREADS", "1")))
    evaluations = [evaluate(setup, args) for setup in setups(datasets, args.rows, args.seed)]
    uses = {"kmeans_wine": kmeans_on_wine(args.seed), "svm_cancer": svm_on_cancer(args.seed)}
    results = {"arguments": {k: str(v) for k, v in vars(args).items()}, "faithfulness": evaluations, "uses": uses}
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "results.json", lambda p: p.write_text(json.dumps(results, indent=1) + "\n"))
    curves_figure(evaluations, args.out / "curves.png")
    if not args.no_report:
        text = args.report.read_text(encoding="utf-8")
        text = replace_generated(text, "neon-faithfulness", faithfulness_markdown(evaluations))
        text = replace_generated(text, "neon-kmeans", kmeans_markdown(uses["kmeans_wine"]))
        text = replace_generated(text, "neon-svm", svm_markdown(uses["svm_cancer"]))
        write_atomic(args.report, lambda p: p.write_text(text, encoding="utf-8"))
        print(f"updated {args.report}", file=sys.stderr)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'curves.png'}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
