"""``relprop tune``: writes tuned.json and a held-out split that ``relprop evaluate`` measures to the same numbers."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from relprop.cli import main
from relprop.models import digits_test_set

CANDIDATES = "lrp:epsilon-gamma-box,low=0,high=1,lrp:gamma,gamma=0.5"


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def digits_file(tmp_path: Path, count: int = 24, masks: torch.Tensor | None = None) -> Path:
    test = digits_test_set()
    path = tmp_path / "digits.pt"
    torch.save({"images": test.images[:count], "labels": test.labels[:count], "masks": masks}, path)
    return path


def test_tune_then_evaluate_the_held_out_split_gives_the_same_numbers(tmp_path: Path) -> None:
    data = digits_file(tmp_path)
    out, held = tmp_path / "tuned.json", tmp_path / "held.pt"
    result = run(
        "tune", "--data", str(data), "--objective", "pixel-flipping:replacement=uniform", "--candidates", CANDIDATES,
        "--seed", "4", "--out", str(out), "--held-out-data", str(held),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tuned = json.loads(out.read_text())
    assert [r["spec"] for r in tuned["results"]] == ["lrp:epsilon-gamma-box,low=0,high=1", "lrp:gamma,gamma=0.5"]
    assert f"chosen: {tuned['spec']}: ABPC (uniform)" in result.output
    command = next(line.strip() for line in result.output.splitlines() if line.strip().startswith("relprop evaluate"))
    arguments = shlex.split(command)[2:]
    assert arguments[:4] == ["--model", "digits", "--data", str(held)]
    for index, row in enumerate(tuned["results"]):
        spec_at = arguments.index("--methods") + 1
        arguments[spec_at] = row["spec"]
        report = tmp_path / f"evaluation{index}"
        evaluated = run("evaluate", *arguments, "--out", str(report))
        assert evaluated.exit_code == 0, evaluated.output
        rows = {r["metric"]: r for r in csv.DictReader((report / "results.csv").open())}
        abpc = rows["ABPC (uniform)"]
        assert float(abpc["mean"]) == float(f"{row['held_out']['mean']:.10g}")
        assert float(abpc["se"]) == float(f"{row['held_out']['se']:.10g}")
        assert int(abpc["n"]) == row["held_out"]["n"] == 12


def test_user_errors_are_one_line_with_exit_status_2(tmp_path: Path) -> None:
    data = digits_file(tmp_path, masks=torch.ones(24, 7, 7, dtype=torch.bool))
    result = run("tune", "--data", str(data), "--objective", "localisation", "--out", str(tmp_path / "t.json"))
    assert result.exit_code == 2
    assert result.output == (
        "error: objective 'localisation': masks of shape (24, 7, 7) do not fit inputs of shape (24, 1, 8, 8); pass one "
        "mask per input, shaped like it or (N, H, W) / (N, 1, H, W).\n"
    )
    data = digits_file(tmp_path)
    result = run("tune", "--data", str(data), "--budget", "0.001", "--out", str(tmp_path / "t.json"))
    assert result.exit_code == 2 and result.output.startswith(
        "error: budget 0.001 s is too small for one candidate: lrp:epsilon-gamma-box,low=0,high=1 took "
    )
    assert len(result.output.splitlines()) == 1 and not (tmp_path / "t.json").exists()
    (tmp_path / "t.json").write_text("{}")
    result = run("tune", "--data", str(data), "--out", str(tmp_path / "t.json"))
    assert result.exit_code == 2
    assert (
        result.output
        == f"error: {tmp_path / 't.json'} already exists; pass --force to overwrite it or choose another --out file\n"
    )
    result = run("tune", "--data", str(data), "--objective", "nope", "--out", str(tmp_path / "u.json"))
    assert result.exit_code == 2
    assert (
        result.output
        == "error: unknown objective 'nope'; choose one of: pixel-flipping, localisation, token-deletion.\n"
    )


def test_sentence_pairs_are_tuned_by_token_deletion(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "A man is playing a guitar.\tSomeone plays an instrument.\n"
        "The cat sleeps on the sofa.\tA cat is sleeping on a couch.\n"
        "Two children run in a park.\tKids are running outside.\n"
        "A woman slices an onion.\tSomeone is cutting vegetables.\n",
        encoding="utf-8",
    )
    out = tmp_path / "text.json"
    result = run(
        "tune", "--model", "minilm", "--data", str(pairs), "--objective", "token-deletion",
        "--candidates", "lrp:attnlrp,lrp:cp-lrp", "--out", str(out), "--held-out-data", str(tmp_path / "h.pt"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tuned = json.loads(out.read_text())
    assert tuned["objective"] == {"spec": "token-deletion", "title": "deletion AUC", "higher_is_better": False}
    assert (tuned["split"]["search"], tuned["split"]["held_out"]) == (2, 2)
    assert "relprop evaluate does not measure token-deletion" in result.output
    assert not (tmp_path / "h.pt").exists()


def test_explain_and_evaluate_take_a_tuned_file(tmp_path: Path) -> None:
    """``relprop explain --composite tuned.json`` and ``relprop evaluate --methods lrp:tuned.json`` use the tuned
    setting, reference included; LRP flags that would override it and a file for another model are refused."""
    import numpy as np
    from PIL import Image

    import relprop
    from relprop.models import load_digits_model

    model, test = load_digits_model(), digits_test_set()
    spec = "lrp:epsilon,epsilon=1e-06,reference=blur"
    tuned = relprop.tune(model, test.images[:8], objective="pixel-flipping:replacement=blur", candidates=[spec],
                         budget=None)  # fmt: skip
    path = tuned.save(tmp_path / "tuned.json")
    image = tmp_path / "digit.png"
    ink = (test.images[0, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(255 - ink, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(image)
    result = run("explain", str(image), "--composite", str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"] == spec
    record = summary["inputs"][0]
    relevance = np.load(tmp_path / "out" / Path(record["relevance"]).name)
    x = torch.from_numpy(ink[None, None].astype(np.float32) / 255)
    expected = relprop.explain(model, x, composite=tuned)
    np.testing.assert_allclose(relevance, expected.relevance[0].numpy(), rtol=1e-4, atol=1e-5)
    assert record["explained_score"] == pytest.approx(float(expected.score[0]), rel=1e-4)
    compared = run("compare", str(image), "--method", f"lrp:{path}", "--out", str(tmp_path / "c.png"))
    assert compared.exit_code == 0, compared.output
    sheet = json.loads((tmp_path / "c.json").read_text())["inputs"][0]["methods"][spec]
    assert sheet["explained_score"] == pytest.approx(float(expected.score[0]), rel=1e-4)  # f(x) - f(blurred x)

    refused = run("explain", str(image), "--composite", str(path), "--epsilon", "0.5", "--out", str(tmp_path / "o2"))
    assert refused.exit_code == 2
    assert refused.output == f"error: --epsilon would override the tuned composite {path} ({spec}); drop them\n"
    foreign = tuned.to_json()
    foreign["model"]["fingerprint"] = "sha256:" + "0" * 64
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    refused = run("explain", str(image), "--composite", str(tmp_path / "foreign.json"), "--out", str(tmp_path / "o3"))
    assert refused.exit_code == 2 and len(refused.output.splitlines()) == 1
    assert refused.output.startswith(f"error: tuned composite {tmp_path / 'foreign.json'} was made for another model")

    data = digits_file(tmp_path, count=6)
    evaluated = run("evaluate", "--data", str(data), "--methods", f"lrp:{path}", "--metrics", "conservation",
                    "--out", str(tmp_path / "ev"))  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    rows = {r["metric"]: r for r in csv.DictReader((tmp_path / "ev" / "results.csv").open())}
    direct = relprop.explain(model, test.images[:6], composite=tuned)
    error = (direct.score - direct.relevance.sum((1, 2, 3))).abs() / direct.score.abs()
    assert float(rows["conservation error"]["mean"]) == pytest.approx(float(error.mean()), rel=1e-3, abs=1e-7)


def test_the_reference_option_restricts_the_references_searched(tmp_path: Path) -> None:
    data = digits_file(tmp_path, count=8)
    out = tmp_path / "tuned.json"
    result = run("tune", "--data", str(data), "--reference", "zeros,blur", "--max-candidates", "3", "--budget", "600",
                 "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    specs = [r["spec"] for r in json.loads(out.read_text())["results"]]
    assert specs == [
        "lrp:epsilon-gamma-box,low=0,high=1,reference=zeros", "lrp:epsilon-gamma-box,low=0,high=1,reference=blur",
        "lrp:montavon,low=0,high=1,reference=zeros",
    ]  # fmt: skip
    unknown = run("tune", "--data", str(data), "--reference", "none,median", "--out", str(tmp_path / "u.json"))
    assert unknown.exit_code == 2
    assert unknown.output == (
        "error: unknown reference 'median' in --reference; choose from none, zeros, mean, blur (comma-separated)\n"
    )
    both = run(
        "tune", "--data", str(data), "--reference", "blur", "--candidates", "gamma", "--out", str(tmp_path / "b.json")
    )
    assert both.exit_code == 2 and both.output.startswith("error: --reference restricts the default search space")
    assert not (tmp_path / "u.json").exists() and not (tmp_path / "b.json").exists()
