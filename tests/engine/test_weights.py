"""A reused explainer follows its model: every way of changing weights gives the fresh explainer's result.

Each case warms an explainer (plan recorded, modified and folded weights cached), changes the
model, and compares the next explanation with that of a new explainer on the changed model:
bit for bit, output and relevance. Each case also checks that the change mattered, so that an
explainer returning the old model's answer fails.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import relprop
from relprop.engine.weights import Snapshot

from models import randomize_batchnorm, small_cnn

COMPOSITES = {
    # z^B with a folded batch norm (cached), γ on a convolution (cached), ε on dense layers (native)
    "epsilon-gamma-box": {"low": -3.0, "high": 3.0},
    "alpha2-beta1": {},  # αβ on every layer (cached)
    "epsilon": {},  # native layers, the batch norm's folded bias computed per call
}


def model() -> nn.Sequential:
    return randomize_batchnorm(small_cnn(batchnorm=True)).eval()


def other_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return model().state_dict()


def assign_data(m: nn.Sequential) -> None:
    m[0].weight.data = torch.randn_like(m[0].weight)


def new_parameter(m: nn.Sequential) -> None:
    m[0].weight = nn.Parameter(torch.randn_like(m[0].weight))


def load_state_dict(m: nn.Sequential) -> None:
    m.load_state_dict(other_weights())


def load_state_dict_assign(m: nn.Sequential) -> None:
    m.load_state_dict(other_weights(), assign=True)


def optimizer_step(m: nn.Sequential) -> None:
    optimizer = torch.optim.SGD(m.parameters(), lr=0.5)
    for p in m.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()


def copy_without_grad(m: nn.Sequential) -> None:
    with torch.no_grad():
        m[4].weight.copy_(torch.randn_like(m[4].weight))


def copy_through_data(m: nn.Sequential) -> None:
    m[0].weight.data.copy_(torch.randn_like(m[0].weight))  # bypasses the version counter


def write_through_numpy(m: nn.Sequential) -> None:
    m[0].weight.detach().numpy()[:] = torch.randn_like(m[0].weight).numpy()  # bypasses it too


def batchnorm_statistics_assigned(m: nn.Sequential) -> None:
    m[1].running_var.data = torch.rand_like(m[1].running_var) + 0.5


def batchnorm_buffer_replaced(m: nn.Sequential) -> None:
    m[1].running_mean = torch.randn_like(m[1].running_mean)  # a new buffer object


def batchnorm_in_place(m: nn.Sequential) -> None:
    with torch.no_grad():
        m[1].weight.mul_(-2.0)


def layer_replaced(m: nn.Sequential) -> None:
    m[4] = nn.Conv2d(8, 12, 3, padding=1)


def to_double_by_data(m: nn.Sequential) -> None:
    m.double()  # parameters keep their identity, their .data is replaced


def to_double_by_swapping(m: nn.Sequential) -> None:
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        m.double()  # torch.utils.swap_tensors: same objects, new contents
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)


def device_round_trip(m: nn.Sequential) -> None:
    """To the meta device and back (an accelerator round trip without one): all tensors are new memory."""
    m.to("meta")
    m.to_empty(device="cpu")
    m.load_state_dict(other_weights())


CHANGES: dict[str, Callable[[nn.Sequential], None]] = {
    f.__name__: f
    for f in (
        assign_data,
        new_parameter,
        load_state_dict,
        load_state_dict_assign,
        optimizer_step,
        copy_without_grad,
        copy_through_data,
        write_through_numpy,
        batchnorm_statistics_assigned,
        batchnorm_buffer_replaced,
        batchnorm_in_place,
        layer_replaced,
        to_double_by_data,
        to_double_by_swapping,
        device_round_trip,
    )
}


@pytest.mark.parametrize("composite", sorted(COMPOSITES))
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_reused_explainer_explains_the_changed_model(change: str, composite: str) -> None:
    m = model()
    x = torch.randn(3, 3, 8, 8)
    explainer = relprop.Explainer(m, composite, **COMPOSITES[composite])
    before = explainer(x, target=1)
    explainer(x, target=1)  # every cache warm
    CHANGES[change](m)
    if next(m.parameters()).dtype == torch.float64:
        x = x.double()
    reused = explainer(x, target=1)
    fresh = relprop.Explainer(m, composite, **COMPOSITES[composite])(x, target=1)
    assert torch.equal(reused.output, fresh.output)
    assert torch.equal(reused.relevance, fresh.relevance)
    assert reused.ledger.closes(rtol=1e-4)
    if change.startswith("to_double"):
        assert reused.relevance.dtype == torch.float64  # the change mattered: computed in float64
    else:
        assert not torch.allclose(reused.relevance, before.relevance)  # the change mattered


def test_requires_grad_off_and_on_changes_nothing() -> None:
    m = model()
    x = torch.randn(2, 3, 8, 8)
    explainer = relprop.Explainer(m, "epsilon-gamma-box", low=-3.0, high=3.0)
    before = explainer(x, target=1)
    m.requires_grad_(False)
    off = explainer(x, target=1)
    m.requires_grad_(True)
    on = explainer(x, target=1)
    assert torch.equal(off.relevance, before.relevance) and torch.equal(on.relevance, before.relevance)


def test_a_model_moved_to_the_meta_device_is_refused_then_followed_back() -> None:
    m = model()
    x = torch.randn(2, 3, 8, 8)
    explainer = relprop.Explainer(m, "epsilon-gamma-box", low=-3.0, high=3.0)
    explainer(x)
    m.to("meta")
    message = (
        r"^tensor '0.weight' of the model is on the meta device, which holds no values to explain; load the weights "
        r"first \(e.g. model.to_empty\(device='cpu'\) and load_state_dict\).$"
    )
    with pytest.raises(relprop.ModelStateError, match=message):
        explainer(x)
    assert [op.kind for op in explainer.plan(x).ops][:2] == ["conv", "batchnorm"]  # plans need shapes only
    m.to_empty(device="cpu")
    m.load_state_dict(other_weights())
    fresh = relprop.Explainer(m, "epsilon-gamma-box", low=-3.0, high=3.0)(x)
    assert torch.equal(explainer(x).relevance, fresh.relevance)


def test_a_few_values_changed_behind_the_version_counter_need_refresh() -> None:
    """The documented limit: a single value written through .data may be missed until refresh()."""
    m = model()
    x = torch.randn(2, 3, 8, 8)
    explainer = relprop.Explainer(m, "epsilon-gamma-box", low=-3.0, high=3.0)
    explainer(x)
    m[0].weight.data[0, 0, 1, 1] += 1.0  # not a probed position, version counter untouched
    explainer.refresh()
    fresh = relprop.Explainer(m, "epsilon-gamma-box", low=-3.0, high=3.0)(x)
    assert torch.equal(explainer(x).relevance, fresh.relevance)


def test_snapshot_notices_each_kind_of_change() -> None:
    weight = torch.randn(6, 4)
    snapshot = Snapshot.of([weight, None])
    assert snapshot.matches([weight, None])
    assert not snapshot.matches([weight.clone(), None])  # another object
    assert not snapshot.matches([weight, torch.zeros(6)])  # a bias appeared
    weight.add_(0.0)
    assert not snapshot.matches([weight, None])  # version counter
    snapshot = Snapshot.of([weight])
    weight.data = weight.data.clone()
    assert not snapshot.matches([weight])  # other memory, same values and version
    snapshot = Snapshot.of([weight])
    weight.data = weight.data.double()
    assert not snapshot.matches([weight])  # dtype
    snapshot = Snapshot.of([weight])
    weight.data = weight.data.t().contiguous().t()
    assert not snapshot.matches([weight])  # strides
    snapshot = Snapshot.of([weight])
    weight.requires_grad_(True)
    assert not snapshot.matches([weight])
    snapshot = Snapshot.of([weight])
    weight.data.mul_(2.0)  # bypasses the version counter: seen by the probed values
    assert not snapshot.matches([weight])
    meta = torch.empty(6, 4, device="meta")
    assert Snapshot.of([meta]).matches([meta]) and not Snapshot.of([weight]).matches([meta])


def test_snapshot_keeps_the_old_memory_alive() -> None:
    """A freed weight's memory could be reused by a new weight that would then look unchanged."""
    weight = nn.Parameter(torch.randn(64, 64))
    pointer = weight.data_ptr()
    snapshot = Snapshot.of([weight])
    weight.data = torch.randn(64, 64)
    assert snapshot.storages[0].data_ptr() == pointer
    replacements = [torch.randn(64, 64) for _ in range(8)]
    assert all(r.data_ptr() != pointer for r in replacements)


@pytest.mark.parametrize("change", ["batchnorm_buffer_replaced", "layer_replaced", "load_state_dict_assign"])
def test_replaced_tensors_are_followed_for_a_single_sample(change: str) -> None:
    """With one sample the explainer cannot re-plan on a mismatch; it must notice the new objects first."""
    m = model()
    x = torch.randn(1, 3, 8, 8)
    explainer = relprop.Explainer(m, "epsilon-gamma-box", low=-3.0, high=3.0)
    explainer(x)
    CHANGES[change](m)
    fresh = relprop.Explainer(m, "epsilon-gamma-box", low=-3.0, high=3.0)(x)
    assert torch.equal(explainer(x).relevance, fresh.relevance)
