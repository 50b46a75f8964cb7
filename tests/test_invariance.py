"""The model is bit-identical after every call, also when the call raises midway."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relprop

from models import FunctionalNet, small_cnn, torchvision_model

PATCHABLE: list[tuple[Any, str]] = [
    (nn.Module, "__call__"),
    (nn.Module, "_call_impl"),
    (nn.Conv2d, "forward"),
    (nn.Linear, "forward"),
    (nn.ReLU, "forward"),
    (nn.BatchNorm2d, "forward"),
    (nn.MaxPool2d, "forward"),
    (torch.Tensor, "__add__"),
    (torch.Tensor, "__iadd__"),
    (torch.Tensor, "add_"),
    (F, "conv2d"),
    (F, "linear"),
    (F, "relu"),
    (F, "batch_norm"),
    (torch, "cat"),
    (torch, "relu"),
]


def snapshot(model: nn.Module) -> dict[str, Any]:
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    modules = {}
    for name, m in model.named_modules():
        modules[name] = {
            "dict_keys": sorted(m.__dict__),
            "training": m.training,
            "forward_hooks": dict(m._forward_hooks),
            "forward_pre_hooks": dict(m._forward_pre_hooks),
            "backward_hooks": dict(m._backward_hooks),
            "forward_hooks_always_called": dict(getattr(m, "_forward_hooks_always_called", {})),
            "class": type(m),
        }
    params = {k: (p.requires_grad, p.grad) for k, p in model.named_parameters()}
    patched = {f"{owner.__name__}.{attr}": getattr(owner, attr) for owner, attr in PATCHABLE}
    return {
        "state": state,
        "modules": modules,
        "params": params,
        "patched": patched,
        "global_hooks": (
            dict(nn.modules.module._global_forward_hooks),
            dict(nn.modules.module._global_forward_pre_hooks),
        ),
        "mode_stack": torch._C._len_torch_function_stack(),
    }


def assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        w = after["state"][k]
        assert v.dtype == w.dtype and torch.equal(v, w), f"{k} changed"
    assert before["modules"] == after["modules"]
    assert before["params"] == after["params"]
    assert before["patched"] == after["patched"]
    assert before["global_hooks"] == after["global_hooks"]
    assert before["mode_stack"] == after["mode_stack"]


MODELS: dict[str, Callable[[], nn.Module]] = {
    "sequential-bn": lambda: small_cnn(batchnorm=True).eval(),
    "functional": lambda: FunctionalNet().eval(),
    "resnet18": lambda: torchvision_model("resnet18"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("composite", ["epsilon-gamma-box", "epsilon-plus-flat", "lrp-0", "alpha2-beta1"])
def test_model_is_bit_identical_after_explaining(name: str, composite: str) -> None:
    model = MODELS[name]()
    x = torch.randn(2, 3, 32, 32) if name == "resnet18" else torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected_output = model(x)
    before = snapshot(model)
    reference = copy.deepcopy(model)
    relprop.explain(model, x, composite=composite)
    assert_unchanged(model, before)
    with torch.no_grad():
        assert torch.equal(model(x), expected_output)
        assert torch.equal(reference(x), expected_output)


def test_model_is_unchanged_when_the_target_is_bad() -> None:
    model = small_cnn(batchnorm=True).eval()
    before = snapshot(model)
    with pytest.raises(relprop.TargetError):
        relprop.explain(model, torch.randn(2, 3, 8, 8), target=10)
    assert_unchanged(model, before)


def test_model_is_unchanged_when_forward_raises_midway() -> None:
    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = small_cnn(batchnorm=True)
            self.head = nn.Linear(10, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            if not torch.jit.is_scripting():
                raise RuntimeError("boom inside forward")
            return self.head(h)

    model = Failing().eval()
    before = snapshot(model)
    message = r"^the model failed on inputs of shape \(2, 3, 8, 8\) \(boom inside forward\)"
    with pytest.raises(relprop.InputError, match=message) as info:
        relprop.explain(model, torch.randn(2, 3, 8, 8))
    assert isinstance(info.value.__cause__, RuntimeError)  # the model's own error stays attached
    assert_unchanged(model, before)


def test_model_is_unchanged_when_an_operation_is_unsupported() -> None:
    class WithExp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(self.fc(x))

    model = WithExp().eval()
    before = snapshot(model)
    with pytest.raises(relprop.UnsupportedOperationError):
        relprop.explain(model, torch.randn(2, 4))
    assert_unchanged(model, before)


def test_user_hooks_survive_and_still_run() -> None:
    model = small_cnn().eval()
    calls: list[str] = []
    handle = model[0].register_forward_hook(lambda m, i, o: calls.append("hook"))
    before = snapshot(model)
    relprop.explain(model, torch.randn(1, 3, 8, 8))
    assert_unchanged(model, before)
    assert calls  # the user's hook ran during the explanation
    handle.remove()
