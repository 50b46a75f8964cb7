"""Clear errors: unsupported operations name their module path and type and how to give a rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop
from relprop import match, rules

from models import small_cnn


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.fc(x))


class WithExp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def test_unsupported_operation_names_path_type_and_remedy() -> None:
    with pytest.raises(relprop.UnsupportedOperationError) as info:
        relprop.explain(WithExp().eval(), torch.randn(2, 6))
    message = str(info.value)
    assert "torch.exp" in message
    assert "'encoder'" in message and "(Encoder)" in message
    assert "rules=[(relprop.match.op('exp') & relprop.match.path('encoder'), relprop.rules.GradientRule())]" in message


def test_unsupported_layer_module_is_named() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)).eval()
    with pytest.raises(relprop.UnsupportedOperationError) as info:
        relprop.explain(model, torch.randn(2, 6))
    message = str(info.value)
    assert "layer_norm" in message and "'1'" in message and "(LayerNorm)" in message


def test_the_suggested_rule_makes_it_work_and_the_ledger_shows_it() -> None:
    model = WithExp().double().eval()
    x = torch.randn(2, 6, dtype=torch.float64)
    result = relprop.explain(
        model, x, composite="epsilon", rules=[(match.op("exp") & match.path("encoder"), rules.GradientRule())]
    )
    assert torch.isfinite(result.relevance).all()
    assert result.ledger.closes(rtol=1e-9)
    gradient_rows = [e for e in result.ledger.entries if e.rule == "gradient"]
    assert len(gradient_rows) == 1 and gradient_rows[0].path == "encoder"


def test_target_out_of_range_names_the_valid_range() -> None:
    model = small_cnn().eval()
    with pytest.raises(
        relprop.TargetError,
        match=r"^target 10 is out of range for a model with 10 outputs; valid classes are 0\.\.9\.$",
    ):
        relprop.explain(model, torch.randn(2, 3, 8, 8), target=10)
    with pytest.raises(relprop.TargetError, match=r"target -1 is out of range"):
        relprop.explain(model, torch.randn(2, 3, 8, 8), target=[3, -1])
    with pytest.raises(relprop.TargetError, match="got 3 target indices for a batch of 2"):
        relprop.explain(model, torch.randn(2, 3, 8, 8), target=[1, 2, 3])
    with pytest.raises(relprop.TargetError, match="must be integers"):
        relprop.explain(model, torch.randn(2, 3, 8, 8), target=torch.tensor([1.0, 2.0]))


def test_training_mode_is_refused_with_a_clear_message() -> None:
    model = small_cnn(batchnorm=True).train()
    with pytest.raises(relprop.ModelStateError, match=r"batch norm at '1' \(BatchNorm2d\).*call model.eval\(\)"):
        relprop.explain(model, torch.randn(2, 3, 8, 8))
    model = small_cnn(batchnorm=False).train()
    with pytest.raises(relprop.ModelStateError, match=r"dropout at '9' \(Dropout\) is active"):
        relprop.explain(model, torch.randn(2, 3, 8, 8))


def test_discarded_in_place_result_is_refused() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            h.relu_()  # result discarded: relies on the in-place side effect
            return self.out(h)

    with pytest.raises(relprop.UnsupportedOperationError, match="uses a tensor after an in-place operation"):
        relprop.explain(Bad().eval(), torch.randn(2, 4))


def test_output_that_does_not_depend_on_the_input_is_refused() -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.detach())

    with pytest.raises(relprop.UnsupportedOperationError, match="does not depend on the input"):
        relprop.explain(Detached().eval(), torch.randn(2, 4))


def test_bad_options_are_named() -> None:
    model = small_cnn().eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(
        relprop.ConfigurationError, match="unknown composite 'epsilon-gama-box'; choose one of: lrp-0, "
    ):
        relprop.explain(model, x, composite="epsilon-gama-box")
    with pytest.raises(
        relprop.ConfigurationError,
        match="composite 'epsilon' does not take gamma; its parameters are epsilon, stabilizer",
    ):
        relprop.explain(model, x, composite="epsilon", gamma=0.5)
    with pytest.raises(relprop.ConfigurationError, match=r"needs alpha = beta \+ 1.*set alpha=2.0"):
        relprop.explain(model, x, composite="alpha-beta", alpha=3.0, beta=1.0)
    with pytest.raises(relprop.ConfigurationError, match="inputs must be a floating-point tensor"):
        relprop.explain(model, torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(relprop.ConfigurationError, match="z\\^B bound 'low' has shape \\(5,\\)"):
        relprop.explain(model, x, low=torch.zeros(5), high=1.0)


def test_model_returning_a_dict_is_refused_clearly() -> None:
    class DictOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"scores": self.fc(x)}

    with pytest.raises(
        relprop.ConfigurationError, match=r"the model returned a dict with keys 'scores' .*output='scores'"
    ):
        relprop.explain(DictOut().eval(), torch.randn(1, 4))
