"""Graphs of ATen operators (TorchScript converted by the model loader) explain like eager models."""

from __future__ import annotations

import warnings

import pytest
import torch

import relprop

from helpers import assert_close_relative, require
from models import randomize_batchnorm

torchvision = require("torchvision")


@pytest.mark.parametrize("name", ["mobilenet_v2", "vgg11_bn"])
def test_converted_torchscript_graph_matches_the_eager_model(name: str) -> None:
    from torch._export.converter import TS2EPConverter

    eager = randomize_batchnorm(getattr(torchvision.models, name)()).eval().double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(eager, torch.randn(1, 3, 32, 32, dtype=torch.float64))
        graph = TS2EPConverter(scripted, (torch.randn(2, 3, 32, 32, dtype=torch.float64),)).convert().module()
    assert any(isinstance(n.target, torch._ops.OpOverload) for n in graph.graph.nodes)  # really ATen calls
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    for composite in ("epsilon-gamma-box", "epsilon-plus-flat"):
        ours = relprop.explain(graph, x, composite=composite)
        reference = relprop.explain(eager, x, composite=composite)
        assert_close_relative(ours.relevance, reference.relevance, 1e-10)
        assert ours.ledger.closes(rtol=1e-8)
