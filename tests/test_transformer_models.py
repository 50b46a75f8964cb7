"""AttnLRP and CP-LRP on real transformer architectures: HF BERT and GPT-2, torchvision vit_b_16, a timm ViT."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import relprop
from relprop.text import NextTokenLogits, TextClassifier
from test_invariance import assert_unchanged, snapshot

from helpers import require

transformers = require("transformers")
COMPOSITES = ["attnlrp", "cp-lrp"]


def _check(model: nn.Module, x: torch.Tensor, composite: str, target: int | None = None) -> relprop.Explanation:
    before = snapshot(model)
    result = relprop.explain(model, x, target=target, composite=composite)
    assert torch.isfinite(result.relevance).all()
    assert result.ledger.closes(rtol=1e-6), result.ledger.table(top=5)
    assert result.relevance.abs().sum() > 0
    assert_unchanged(model, before)
    return result


def _gpt2(impl: str) -> nn.Module:
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=32, attn_implementation=impl
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _bert_classifier(impl: str) -> nn.Module:
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=64,
        num_labels=3,
        attn_implementation=impl,
    )
    return transformers.BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize(
    ("build", "wrap"),
    [(_gpt2, NextTokenLogits), (_bert_classifier, TextClassifier)],
    ids=["gpt2-next-token", "bert-classifier"],
)
def test_hugging_face_models_explain_per_sample_in_batches(
    build: Callable[[str], nn.Module], wrap: type[nn.Module], impl: str, composite: str
) -> None:
    model = build(impl).double()
    wrapper = wrap(model)
    embeddings = model.get_input_embeddings()(torch.randint(0, 64, (2, 7))).detach()
    batch = _check(wrapper, embeddings, composite)
    for i in range(2):
        single = relprop.explain(wrapper, embeddings[i : i + 1], target=batch.target[i : i + 1], composite=composite)
        torch.testing.assert_close(single.relevance[0], batch.relevance[i], rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(single.ledger.absorbed[0], batch.ledger.absorbed[i], rtol=1e-8, atol=1e-12)


@pytest.fixture(scope="module")
def vit_b_16() -> nn.Module:
    import torchvision

    model = torchvision.models.vit_b_16(image_size=64).eval()
    nn.init.normal_(model.heads.head.weight, 0, 0.05)  # torchvision starts the head at zero
    return model


@pytest.mark.parametrize("composite", COMPOSITES)
def test_torchvision_vit_b_16_renders_heatmaps_like_cnns(composite: str, vit_b_16: nn.Module) -> None:
    from relprop import viz

    x = torch.randn(1, 3, 64, 64)
    explainer = relprop.Explainer(vit_b_16, composite)
    before = snapshot(vit_b_16)
    result = explainer(x)
    assert torch.isfinite(result.relevance).all()
    assert result.ledger.closes(rtol=1e-6), result.ledger.table(top=5)
    assert_unchanged(vit_b_16, before)
    image = viz.overlay(viz.to_image(x[0].sigmoid()), result.relevance[0])
    assert image.size == (64, 64)
    # nn.MultiheadAttention runs decomposed (projections, fused attention), batch first.
    kinds = [op.kind for op in explainer.plan(x).ops]
    assert kinds.count("attention") == 12 and kinds.count("layer_norm") == 25


@pytest.mark.parametrize("composite", COMPOSITES)
def test_timm_vit_explains(composite: str) -> None:
    timm = require("timm")
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=5
    ).eval()
    # float64: the closure check at 1e-6 is about the rules, not float32 rounding over the blocks
    _check(model.double(), torch.randn(2, 3, 32, 32, dtype=torch.float64), composite)


def test_model_is_unchanged_when_a_transformer_explanation_fails() -> None:
    model = _gpt2("sdpa")
    wrapper = NextTokenLogits(model)
    embeddings = model.get_input_embeddings()(torch.randint(0, 64, (1, 40))).detach()  # > n_positions
    before = snapshot(model)
    with pytest.raises(Exception):  # noqa: B017 - transformers' own error for too long inputs
        relprop.explain(wrapper, embeddings, composite="attnlrp")
    assert_unchanged(model, before)
    result = relprop.explain(wrapper, embeddings[:, :8], composite="attnlrp")
    assert result.ledger.closes(rtol=1e-4)


@pytest.mark.heavy
@pytest.mark.parametrize("composite", COMPOSITES)
def test_full_size_vit_b_16(composite: str) -> None:
    import torchvision

    model = torchvision.models.vit_b_16().eval()
    nn.init.normal_(model.heads.head.weight, 0, 0.05)
    _check(model, torch.randn(1, 3, 224, 224), composite)
