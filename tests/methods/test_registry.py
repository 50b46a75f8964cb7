"""The method registry and the spec parser the command line uses."""

from __future__ import annotations

import pytest
import torch

import relprop
from relprop import methods

from .nets import maxpool_net

ALL = [
    "lrp",
    "gradient",
    "gradient-x-input",
    "smoothgrad",
    "integrated-gradients",
    "guided-backprop",
    "deconvnet",
    "occlusion",
    "deeplift",
    "deep-taylor",
]


def test_names_and_descriptions() -> None:
    assert methods.names() == ALL
    described = dict(methods.describe())
    assert list(described) == ALL and all(described.values())
    smoothgrad = ("n", "sigma", "sigma_mode", "times_input", "seed", "batch_size", "output")
    assert methods.parameters("smoothgrad") == smoothgrad
    assert "gamma" in methods.parameters("lrp", "epsilon-gamma-box")
    assert "split" not in methods.parameters("lrp", "epsilon-gamma-box")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gradient", ("gradient", {})),
        ("  gradient:absolute=true ", ("gradient", {"absolute": True})),
        ("lrp", ("lrp", {})),
        ("lrp:epsilon-gamma-box", ("lrp", {"composite": "epsilon-gamma-box"})),
        (
            "lrp:epsilon-gamma-box,gamma=0.5,low=-1",
            ("lrp", {"composite": "epsilon-gamma-box", "gamma": 0.5, "low": -1}),
        ),
        ("smoothgrad:n=20,sigma=0.1", ("smoothgrad", {"n": 20, "sigma": 0.1})),
        ("smoothgrad:seed=none", ("smoothgrad", {"seed": None})),
        (
            "integrated-gradients:steps=32,baseline=blurred",
            ("integrated-gradients", {"steps": 32, "baseline": "blurred"}),
        ),
        ("occlusion:patch=4x4,stride=2,value=0.5", ("occlusion", {"patch": (4, 4), "stride": 2, "value": 0.5})),
        ("deeplift:reveal-cancel", ("deeplift", {"rule": "reveal-cancel"})),
        ("deeplift:rule=rescale,reference=mean", ("deeplift", {"rule": "rescale", "reference": "mean"})),
        ("deep-taylor:low=0,high=1", ("deep-taylor", {"low": 0, "high": 1})),
    ],
)
def test_resolve(spec: str, expected: tuple[str, dict]) -> None:
    assert methods.resolve(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("saliency", "unknown method 'saliency'; choose one of: lrp, gradient, gradient-x-input"),
        ("smoothgrad:steps=3", "method 'smoothgrad' does not take steps; its parameters are n, sigma"),
        ("smoothgrad:n=3,n=4", "gives 'n' twice"),
        ("smoothgrad:n=3,,sigma=1", "has an empty item"),
        ("smoothgrad:20", "item '20' is not key=value; write e.g. 'smoothgrad:n=...'"),
        (
            "gradient-x-input:absolute=true",
            "method 'gradient-x-input' does not take absolute; its parameters are output",
        ),
        ("lrp:epsilon-gamma-box,split=0.3", "method 'lrp' does not take split"),
        ("occlusion:patch=", "needs both a name and a value"),
        ("", "a method spec must be a non-empty string"),
    ],
)
def test_resolve_errors(spec: str, message: str) -> None:
    with pytest.raises(relprop.ConfigurationError, match=message.replace("(", r"\(")):
        methods.resolve(spec)


def test_a_resolved_spec_runs_through_explain() -> None:
    model, x = maxpool_net(), torch.randn(1, 3, 8, 8, dtype=torch.float64)
    for spec in (
        "lrp:epsilon-gamma-box,gamma=0.5",
        "smoothgrad:n=2,sigma=0.1",
        "occlusion:patch=4x4",
        "deeplift:reveal-cancel",
    ):
        name, params = methods.resolve(spec)
        assert relprop.explain(model, x, method=name, **params).relevance.shape == x.shape


def test_unknown_parameters_and_methods_are_configuration_errors() -> None:
    model, x = maxpool_net(), torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(
        relprop.ConfigurationError, match="method 'gradient' does not take steps; its parameters are absolute"
    ):
        relprop.explain(model, x, method="gradient", steps=3)
    with pytest.raises(relprop.ConfigurationError, match="unknown method 'gradcam'"):
        relprop.explain(model, x, method="gradcam")
    with pytest.raises(relprop.ConfigurationError, match="composite applies to method 'lrp' only"):
        relprop.explain(model, x, method="gradient", composite="epsilon")
