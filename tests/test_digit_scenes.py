"""The digit-scenes segmentation example: honest test scenes, a trained network, and relevance that falls on the
explained object (epsilon-gamma-box: at least 80 % of the positive relevance in the object's cell)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import relprop
from relprop.metrics import relevance_mass_accuracy
from relprop.models.digit_scenes import (
    CANVAS,
    DIGIT_SIZE,
    INK_THRESHOLD,
    digit_scenes_test_set,
    load_digit_scenes_model,
)
from relprop.models.digits import digits_test_set
from relprop.targets import class_region, region

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_digit_scenes_model()


@pytest.fixture(scope="module")
def scenes():
    return digit_scenes_test_set(12)


def test_scenes_are_labelled_per_pixel_and_reproducible(scenes) -> None:
    again = digit_scenes_test_set(12)
    assert torch.equal(scenes.images, again.images) and torch.equal(scenes.labels, again.labels)
    assert scenes.images.shape == (12, 1, CANVAS, CANVAS) and scenes.labels.shape == (12, CANVAS, CANVAS)
    for n, objects in enumerate(scenes.objects):
        assert len(objects) == 3
        covered = torch.zeros(CANVAS, CANVAS, dtype=torch.int64)
        for obj in objects:
            cell = obj.cell()
            covered += cell
            x0, y0, x1, y1 = obj.box
            assert (x1 - x0, y1 - y0) == (DIGIT_SIZE, DIGIT_SIZE)
            ink = scenes.images[n, 0][cell] >= INK_THRESHOLD
            assert torch.equal(scenes.labels[n][cell] == obj.label, ink)
        assert int(covered.max()) == 1  # no two digits overlap
        outside = covered == 0
        assert bool((scenes.images[n, 0][outside] == 0).all()) and bool((scenes.labels[n][outside] == 0).all())


def test_test_scenes_are_made_of_held_out_digits(scenes) -> None:
    """Every object of a test scene is one of the held-out test digits, enlarged (none was seen in training)."""
    test = digits_test_set()
    enlarged = F.interpolate(test.images, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear").clamp(0, 1)[:, 0]
    for n, objects in enumerate(scenes.objects):
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            patch = scenes.images[n, 0, y0:y1, x0:x1]
            matches = (enlarged == patch).flatten(1).all(1)
            assert bool(matches.any()) and set(test.labels[matches].tolist()) == {obj.digit}


def test_the_shipped_network_segments_the_test_scenes(model, scenes) -> None:
    with torch.no_grad():
        predicted = model(scenes.images).argmax(1)
    ink = scenes.labels > 0
    assert float((predicted == scenes.labels)[ink].float().mean()) >= 0.9
    assert float((predicted == scenes.labels)[~ink].float().mean()) >= 0.98


def test_relevance_for_an_objects_region_lies_on_the_object(model, scenes) -> None:
    explainer = relprop.Explainer(model, "epsilon-gamma-box", low=0.0, high=1.0)
    with torch.no_grad():
        predicted = model(scenes.images).argmax(1)
    shares = []
    for n, objects in enumerate(scenes.objects):
        for obj in objects:
            if not bool((predicted[n][obj.cell()] == obj.label).any()):
                continue
            result = explainer(scenes.images[n : n + 1], class_region(obj.label, within=region(box=obj.box)))
            assert result.ledger.closes()
            mask = (predicted[n] == obj.label) & obj.cell()
            assert torch.allclose(result.score, (model(scenes.images[n : n + 1])[0, obj.label] * mask).sum().reshape(1))
            shares.append(float(relevance_mass_accuracy(result.relevance, obj.cell().unsqueeze(0))[0]))
    assert len(shares) >= 30
    assert np.mean(shares) >= 0.8, shares


def test_dense_readme_example_runs_as_written() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Dense outputs: segmentation and detection maps\n.*?```python\n(.*?)```", readme, re.S)
    assert block is not None
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README dense outputs", "exec"), namespace)
    result = namespace["result"]
    assert result.target.kind == "class" and result.ledger.closes()  # type: ignore[attr-defined]


def test_evaluation_script_runs_on_one_scene(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "dense_evaluation.py"),
            "--scenes",
            "1",
            "--methods",
            "lrp:epsilon-gamma-box,low=0,high=1;gradient-x-input",
            "--out",
            str(tmp_path),
            "--no-report",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "objects.csv").read_text().splitlines()
    assert rows[0] == "scene,object,digit,method,found,mass in cell,mass on other digits,rank accuracy"
    assert len(rows) == 1 + 3 * 2
    assert "| `lrp:epsilon-gamma-box,low=0,high=1` |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "scene.png").stat().st_size > 1000


@pytest.mark.heavy
def test_training_reproduces_the_shipped_weights() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_digit_scenes.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "shipped weights reproduced bit for bit" in proc.stdout
