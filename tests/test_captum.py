"""relprop.captum: Captum's interface on relprop's methods — same results as relprop.explain, agreement with
Captum's own classes where they compute the same thing, NoiseTunnel, captum.metrics, tuples of inputs,
additional forward arguments and Captum's target forms. Where Captum's own LRP differs, the test says why."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relprop
from relprop import rules
from relprop.targets import region

captum_attr = pytest.importorskip("captum.attr")
captum_metrics = pytest.importorskip("captum.metrics")
from captum.attr._utils import lrp_rules as captum_rules  # noqa: E402
from captum.attr._utils.custom_modules import Addition_Module  # noqa: E402

from methods.nets import maxpool_net, maxpool_net_twin  # noqa: E402
from relprop import captum as rc  # noqa: E402

from dense_models import tiny_segnet  # noqa: E402
from helpers import assert_close_relative  # noqa: E402


class PlainCNN(nn.Module):
    """Modules Captum's LRP has default rules for; flattening in forward (Captum has no rule for nn.Flatten)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.avg = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(48, 16)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.avg(self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x))))))
        return self.fc2(self.relu3(self.fc1(h.flatten(1))))


class Residual(nn.Module):
    """A residual block without biases (so that LRP-ε conserves relevance up to ε); the sum is written as
    ``a + b`` or through Captum's Addition_Module."""

    def __init__(self, captum_addition: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.add = Addition_Module() if captum_addition else None
        self.fc = nn.Linear(6 * 8 * 8, 5, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.conv1(x))
        r = self.relu2(self.conv2(h))
        s = self.add(h, r) if self.add is not None else h + r
        return self.fc(s.flatten(1))


class TwoInputs(nn.Module):
    """Takes an image and a feature vector, and a scale as an additional argument."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.image_fc = nn.Linear(4 * 8 * 8, 6)
        self.feature_fc = nn.Linear(5, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, image: torch.Tensor, features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.image_fc(F.relu(self.conv(image)).flatten(1))) + F.relu(self.feature_fc(features))
        return self.out(h * scale)


def plain() -> PlainCNN:
    torch.manual_seed(0)
    return PlainCNN().double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(3, 3, 8, 8, dtype=torch.float64)


TARGET = [2, 5, 7]
RESIDUAL_TARGET = [0, 3, 4]


def test_importing_relprop_does_not_need_captum() -> None:
    code = textwrap.dedent(
        """
        import sys, importlib.abc

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "captum" or name.startswith("captum."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, Hide())
        import torch, relprop
        model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
        assert relprop.explain(model, torch.rand(2, 4)).ledger.closes()
        assert "captum" not in sys.modules
        try:
            import relprop.captum
        except ImportError as exc:
            print("IMPORT-ERROR:", exc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORT-ERROR: relprop.captum needs Captum (pip install captum); the rest of relprop works without it." in (
        proc.stdout
    )


@pytest.mark.parametrize(
    ("adapter", "method", "params"),
    [
        (lambda m: rc.LRP(m, composite="epsilon-gamma-box", low=0.0, high=1.0), "lrp", {"low": 0.0, "high": 1.0}),
        (lambda m: rc.InputXGradient(m), "gradient-x-input", {}),
        (lambda m: rc.GuidedBackprop(m), "guided-backprop", {}),
        (lambda m: rc.Deconvolution(m), "deconvnet", {}),
    ],
    ids=["lrp", "input-x-gradient", "guided-backprop", "deconvolution"],
)
def test_same_results_as_relprop_explain(x, adapter, method, params) -> None:
    model = plain()
    attributions = adapter(model).attribute(x, target=TARGET)
    if method == "lrp":
        params = {"composite": "epsilon-gamma-box", **params}
    expected = relprop.explain(model, x, target=torch.tensor(TARGET), method=method, **params)
    assert torch.equal(attributions, expected.relevance)


def test_lrp_convergence_delta_is_what_the_ledger_did_not_hand_to_the_input(x) -> None:
    model = plain()
    attributions, delta = rc.LRP(model, composite="epsilon", epsilon=0.1).attribute(
        x, target=TARGET, return_convergence_delta=True
    )
    ledger = relprop.explain(model, x, target=TARGET, composite="epsilon", epsilon=0.1).ledger
    assert torch.allclose(delta, ledger.score - ledger.input_relevance, rtol=1e-12)
    assert torch.allclose(delta, ledger.absorbed, rtol=1e-9)
    scores = model(x).detach()[range(3), TARGET]
    assert torch.allclose(attributions.sum((1, 2, 3)) + delta, scores, rtol=1e-12)
    assert torch.allclose(rc.LRP(model).compute_convergence_delta(attributions, scores), delta, rtol=1e-12)


def test_default_lrp_agrees_with_captums_lrp_on_a_plain_cnn(x) -> None:
    """Without a composite the adapter uses Captum's default, ε = 1e-9 on every layer: the same relevance."""
    model = plain()
    ours, our_delta = rc.LRP(model).attribute(x, target=TARGET, return_convergence_delta=True)
    theirs, their_delta = captum_attr.LRP(plain()).attribute(x, target=TARGET, return_convergence_delta=True)
    assert_close_relative(ours, theirs, 1e-6)
    assert torch.allclose(our_delta, their_delta.detach(), atol=1e-6 * float(theirs.abs().sum()))


def test_residual_sums_captum_needs_an_addition_module_relprop_does_not(x) -> None:
    """Captum's LRP passes the full gradient through a bare `a + b`, so its relevance is not conserved; with its
    Addition_Module it splits the sum in proportion to a and b — which is what relprop does with the bare `+`."""
    torch.manual_seed(1)
    bare = Residual().double().eval()
    with_module = Residual(captum_addition=True).double().eval()
    with_module.load_state_dict(bare.state_dict())
    ours, our_delta = rc.LRP(bare).attribute(x, target=RESIDUAL_TARGET, return_convergence_delta=True)
    theirs, _ = captum_attr.LRP(with_module).attribute(x, target=RESIDUAL_TARGET, return_convergence_delta=True)
    assert_close_relative(ours, theirs, 1e-6)
    naive, naive_delta = captum_attr.LRP(bare).attribute(x, target=RESIDUAL_TARGET, return_convergence_delta=True)
    scores = bare(x).detach()[range(3), RESIDUAL_TARGET]
    assert torch.all(our_delta.abs() <= 1e-6 * scores.abs())
    assert float((naive_delta.abs() / scores.abs()).max()) > 0.05
    assert (naive - ours).abs().max() > 0.01 * ours.abs().max()


def test_captum_style_rules_on_modules_are_honoured(x) -> None:
    model = plain()
    model.conv1.rule = captum_rules.GammaRule(gamma=0.5)
    model.fc2.rule = captum_rules.EpsilonRule(epsilon=0.01)
    ours = rc.LRP(model).attribute(x, target=TARGET)
    expected = relprop.explain(
        model,
        x,
        target=TARGET,
        composite="epsilon",
        epsilon=1e-9,
        stabilizer=1e-9,
        rules=[("conv1", rules.GammaRule(0.5)), ("fc2", rules.EpsilonRule(0.01))],
    )
    assert torch.equal(ours, expected.relevance)
    assert isinstance(model.conv1.rule, captum_rules.GammaRule)  # the user's settings stay
    model.conv1.rule = captum_rules.GammaRule(set_bias_to_zero=True)
    with pytest.raises(relprop.ConfigurationError, match=r"module 'conv1' \(Conv2d\) has a Captum rule with"):
        rc.LRP(model).attribute(x, target=TARGET)


@pytest.mark.parametrize(
    ("ours", "theirs", "kwargs"),
    [
        (rc.Saliency, captum_attr.Saliency, {}),
        (rc.Saliency, captum_attr.Saliency, {"abs": False}),
        (rc.InputXGradient, captum_attr.InputXGradient, {}),
        (rc.GuidedBackprop, captum_attr.GuidedBackprop, {}),
        (rc.Deconvolution, captum_attr.Deconvolution, {}),
        (rc.IntegratedGradients, captum_attr.IntegratedGradients, {"n_steps": 16}),
        (rc.IntegratedGradients, captum_attr.IntegratedGradients, {"n_steps": 8, "method": "riemann_left"}),
        (rc.Occlusion, captum_attr.Occlusion, {"sliding_window_shapes": (3, 2, 2), "strides": (3, 2, 2)}),
        (rc.Occlusion, captum_attr.Occlusion, {"sliding_window_shapes": (1, 3, 3), "strides": 1, "baselines": 0.5}),
    ],
    ids=lambda v: getattr(v, "__name__", "") or str(v),
)
def test_agrees_with_captums_own_class(x, ours, theirs, kwargs) -> None:
    model = plain()
    a = ours(model).attribute(x, target=TARGET, **kwargs)
    b = theirs(plain()).attribute(x, target=TARGET, **kwargs)
    assert_close_relative(a, b, 1e-7)  # Captum's quadrature nodes are rounded (about 1e-9 relative)


def test_deeplift_agrees_with_captum_where_captum_is_right() -> None:
    """Captum's DeepLift mishandles a max pool right after a ReLU (see tests/methods/test_deeplift.py); its twin
    network with a copy between them is the oracle, as in relprop's own DeepLIFT tests."""
    torch.manual_seed(3)
    model = maxpool_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    reference = torch.randn_like(x)
    ours = rc.DeepLift(model).attribute(x, baselines=reference, target=[1, 4])
    expected = relprop.explain(model, x, [1, 4], method="deeplift", reference=reference)
    assert torch.equal(ours, expected.relevance)
    theirs = captum_attr.DeepLift(maxpool_net_twin(model)).attribute(x, baselines=reference, target=[1, 4])
    assert_close_relative(ours, theirs, 1e-10)


def test_integrated_gradients_and_deeplift_deltas_follow_captums_sign(x) -> None:
    model = plain()
    _, ours = rc.IntegratedGradients(model).attribute(x, target=TARGET, n_steps=8, return_convergence_delta=True)
    _, theirs = captum_attr.IntegratedGradients(plain()).attribute(
        x, target=TARGET, n_steps=8, return_convergence_delta=True
    )
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-9)  # Captum rounds its quadrature nodes
    _, ours = rc.DeepLift(model).attribute(x, target=TARGET, return_convergence_delta=True)
    assert torch.all(ours.abs() < 1e-10)  # summation-to-delta holds on this network


def test_tuple_inputs_and_additional_forward_args(x) -> None:
    torch.manual_seed(2)
    model = TwoInputs().double().eval()
    inputs = (x, torch.rand(3, 5, dtype=torch.float64))
    scale = torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)
    for ours, theirs, kwargs in [
        (rc.InputXGradient, captum_attr.InputXGradient, {}),
        (rc.IntegratedGradients, captum_attr.IntegratedGradients, {"n_steps": 8, "internal_batch_size": 6}),
        (rc.Occlusion, captum_attr.Occlusion, {"sliding_window_shapes": ((3, 4, 4), (2,)), "strides": ((3, 4, 4), 1)}),
    ]:
        a = ours(model).attribute(inputs, target=1, additional_forward_args=(scale,), **kwargs)
        b = theirs(model).attribute(inputs, target=1, additional_forward_args=(scale,), **kwargs)
        assert isinstance(a, tuple) and len(a) == 2
        for got, expected in zip(a, b, strict=True):
            assert_close_relative(got, expected, 1e-7)  # Captum's rounded quadrature nodes
    # LRP-0 through the same model is Gradient×Input: LRP follows tuples and arguments the same way.
    lrp0, delta = rc.LRP(model, composite="lrp-0").attribute(
        inputs, target=1, additional_forward_args=scale, return_convergence_delta=True
    )
    gxi = captum_attr.InputXGradient(model).attribute(inputs, target=1, additional_forward_args=scale)
    for got, expected in zip(lrp0, gxi, strict=True):
        assert_close_relative(got, expected, 1e-9)
    total = lrp0[0].sum((1, 2, 3)) + lrp0[1].sum(1) + delta
    assert torch.allclose(total, model(*inputs, scale).detach()[:, 1], rtol=1e-12)


def test_captums_target_forms_on_a_dense_output() -> None:
    model = tiny_segnet()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    ours = rc.Saliency(model, output="out")
    theirs = captum_attr.Saliency(lambda t: model(t)["out"])
    for target in [(1, 2, 3), [(0, 0, 0), (3, 7, 7)]]:
        assert_close_relative(ours.attribute(x, target=target), theirs.attribute(x, target=target), 1e-12)
    by_tuple = rc.LRP(model, output="out", composite="epsilon").attribute(x, target=(1, 2, 3))
    one_pixel = torch.zeros(8, 8, dtype=torch.bool)
    one_pixel[2, 3] = True
    by_region = rc.LRP(model, output="out", composite="epsilon").attribute(x, target=region(one_pixel, channel=1))
    assert torch.equal(by_tuple, by_region)
    classifier = plain()
    xs = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    reference = rc.Saliency(classifier).attribute(xs, target=TARGET)
    assert torch.equal(rc.Saliency(classifier).attribute(xs, target=torch.tensor(TARGET)), reference)
    assert torch.equal(
        rc.Saliency(classifier).attribute(xs, target=torch.tensor(4)),
        rc.Saliency(classifier).attribute(xs, target=4),
    )
    with pytest.raises(relprop.TargetError, match=r"target \(1, 9, 3\) does not index an output of shape"):
        ours.attribute(x, target=(1, 9, 3))
    with pytest.raises(relprop.TargetError, match="Captum's forms"):
        ours.attribute(x, target="cat")


def test_noise_tunnel_matches_captums_own_methods_in_it(x) -> None:
    model = plain()
    for ours, theirs, kwargs in [
        (rc.Saliency, captum_attr.Saliency, {}),
        (rc.IntegratedGradients, captum_attr.IntegratedGradients, {"n_steps": 4, "baselines": 0.2}),
    ]:
        ours_tunnel, theirs_tunnel = captum_attr.NoiseTunnel(ours(model)), captum_attr.NoiseTunnel(theirs(plain()))
        torch.manual_seed(5)
        a = ours_tunnel.attribute(x, nt_type="smoothgrad_sq", nt_samples=3, stdevs=0.1, target=TARGET, **kwargs)
        torch.manual_seed(5)
        b = theirs_tunnel.attribute(x, nt_type="smoothgrad_sq", nt_samples=3, stdevs=0.1, target=TARGET, **kwargs)
        assert_close_relative(a, b, 1e-7)


def test_noise_tunnel_with_lrp_and_its_delta(x) -> None:
    model = plain()
    lrp = rc.LRP(model, composite="epsilon", epsilon=0.1)
    attributions, delta = lrp.attribute(x, target=TARGET, return_convergence_delta=True)
    tunnel = captum_attr.NoiseTunnel(lrp)
    smoothed, deltas = tunnel.attribute(
        x, nt_samples=4, stdevs=0.0, target=TARGET, return_convergence_delta=True, nt_samples_batch_size=2
    )
    assert_close_relative(smoothed, attributions, 1e-12)
    assert torch.allclose(deltas.view(2, 3, 2).transpose(1, 2).reshape(4, 3), delta.expand(4, 3), rtol=1e-10)
    noisy = tunnel.attribute(x, nt_samples=4, stdevs=0.2, target=TARGET)
    assert noisy.shape == x.shape and not torch.allclose(noisy, attributions)


def test_captum_metrics(x) -> None:
    model = plain()

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn_like(inputs) * 0.05
        return noise, inputs - noise

    ours = rc.Saliency(model).attribute(x, target=TARGET, abs=False)
    theirs = captum_attr.Saliency(plain()).attribute(x, target=TARGET, abs=False)
    torch.manual_seed(3)
    a = captum_metrics.infidelity(model, perturb, x, ours, target=TARGET, n_perturb_samples=4)
    torch.manual_seed(3)
    b = captum_metrics.infidelity(model, perturb, x, theirs, target=TARGET, n_perturb_samples=4)
    assert torch.allclose(a, b, rtol=1e-9) and a.shape == (3,)

    saliency, captum_saliency = rc.Saliency(model), captum_attr.Saliency(plain())
    torch.manual_seed(4)
    a = captum_metrics.sensitivity_max(saliency.attribute, x, target=TARGET, n_perturb_samples=3)
    torch.manual_seed(4)
    b = captum_metrics.sensitivity_max(captum_saliency.attribute, x, target=TARGET, n_perturb_samples=3)
    assert torch.allclose(a, b, rtol=1e-9)

    lrp = rc.LRP(model, composite="epsilon-gamma-box", low=0.0, high=1.0)
    sensitivity = captum_metrics.sensitivity_max(lrp.attribute, x, target=TARGET, n_perturb_samples=3)
    infidelity = captum_metrics.infidelity(
        model, perturb, x, lrp.attribute(x, target=TARGET), target=TARGET, n_perturb_samples=4
    )
    assert sensitivity.shape == infidelity.shape == (3,)
    assert torch.isfinite(sensitivity).all() and torch.isfinite(infidelity).all() and (sensitivity > 0).all()


def test_errors_and_invariance(x) -> None:
    model = plain()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(relprop.ConfigurationError, match="Saliency has no convergence delta"):
        rc.Saliency(model).attribute(x, target=1, return_convergence_delta=True)
    with pytest.raises(relprop.ConfigurationError, match="every input must have the same batch dimension first"):
        rc.InputXGradient(model).attribute((x, torch.rand(2, 3)), target=1)
    with pytest.raises(relprop.ConfigurationError, match=r"needs a torch\.nn\.Module"):
        rc.LRP(lambda t: t)
    rc.LRP(model).attribute(x, target=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
