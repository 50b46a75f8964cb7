"""TunedComposite: a JSON file that is accepted wherever a composite is, and only for its own model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import relprop
from relprop.errors import ConfigurationError
from relprop.models import load_digits_model
from relprop.tuning import Candidate, TunedComposite, model_fingerprint

from .conftest import QUICK


@pytest.fixture(scope="module")
def tuned(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> TunedComposite:
    # budget=None: every candidate is measured however loaded the machine is (the budget is tested in test_search).
    return relprop.tune(
        digits_model, digits[0], objective="pixel-flipping:replacement=blur", candidates=QUICK, seed=0, budget=None
    )


def test_saves_and_loads_unchanged(tuned: TunedComposite, tmp_path: Path) -> None:
    path = tuned.save(tmp_path / "sub" / "tuned.json")
    data = json.loads(path.read_text())
    assert data["format"] == "relprop-tuned-composite" and data["version"] == 1
    assert data["spec"] == tuned.spec and data["candidate"]["reference"] is None
    assert data["model"] == {"class": "DigitsCNN", "fingerprint": tuned.fingerprint}
    assert [r["spec"] for r in data["results"]] == QUICK
    loaded = TunedComposite.load(path)
    assert loaded.to_json() == tuned.to_json() and loaded.candidate == tuned.candidate
    assert loaded.table() == tuned.table() and loaded.summary() == tuned.summary()
    assert [p.name for p in path.parent.iterdir()] == ["tuned.json"]  # no temporary file left


def test_is_accepted_wherever_a_composite_is(
    tuned: TunedComposite, digits_model: nn.Module, digits: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    x = digits[0][:5]
    name, params = relprop.methods.resolve(tuned.spec)
    expected = relprop.explain(digits_model, x, **{"method": name, **params}).relevance
    path = tuned.save(tmp_path / "tuned.json")
    for composite in (tuned, str(path), path):
        assert torch.equal(relprop.explain(digits_model, x, composite=composite).relevance, expected)
        assert torch.equal(relprop.Explainer(digits_model, composite)(x).relevance, expected)
    assert torch.equal(relprop.explain(digits_model, x, composite="auto", tuned=path).relevance, expected)
    explainer = relprop.Explainer(digits_model, tuned)
    assert explainer.composite.name == f"tuned:{tuned.spec.removeprefix('lrp:')}"
    assert isinstance(tuned.composite(), relprop.Composite)


def test_a_file_for_another_model_is_refused(
    tuned: TunedComposite, digits: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    other = load_digits_model()
    with torch.no_grad():
        other.classifier[-1].bias[0] += 1e-3
    path = tuned.save(tmp_path / "tuned.json")
    for composite, source in ((tuned, "this tuned composite"), (str(path), f"tuned composite {path}")):
        with pytest.raises(ConfigurationError) as info:
            relprop.explain(other, digits[0][:2], composite=composite)
        theirs, ours = tuned.fingerprint[7:19], model_fingerprint(other)[7:19]
        assert str(info.value) == (
            f"{source} was made for another model (DigitsCNN, fingerprint {theirs}…), not this DigitsCNN "
            f"(fingerprint {ours}…); tune again for this model with relprop.tune or relprop tune."
        )


def test_parameters_beside_a_tuned_composite_are_refused(tuned: TunedComposite, digits_model: nn.Module) -> None:
    with pytest.raises(ConfigurationError) as info:
        relprop.Explainer(digits_model, tuned, gamma=0.5)
    assert str(info.value) == f"parameters gamma are chosen by the tuned composite ({tuned.spec}); drop them."


def test_damaged_files_are_clear_errors(tuned: TunedComposite, tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigurationError, match=r"^tuned composite file .*missing\.json does not exist; create it"):
        TunedComposite.load(missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"garbage\.json is not a readable JSON file \(JSONDecodeError\)\.$"):
        TunedComposite.load(garbage)
    other = tmp_path / "other.json"
    other.write_text('{"format": "something else"}')
    with pytest.raises(ConfigurationError, match=r"other\.json is not a relprop tuned-composite file"):
        TunedComposite.load(other)
    data = tuned.to_json()
    del data["model"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match=r"broken\.json is damaged: field 'model' is missing or malformed"):
        TunedComposite.load(broken)


def test_the_reference_slot_travels_with_the_candidate() -> None:
    candidate = Candidate.make("epsilon-gamma-box", {"epsilon": 0.25, "low": 0, "high": 1}, reference="blur")
    assert candidate.spec == "lrp:epsilon-gamma-box,epsilon=0.25,low=0,high=1,reference=blur"
    assert Candidate.from_json(candidate.to_json()) == candidate
    assert "reference" not in candidate.composite_params()  # the composite holds the rules, not the reference
    assert candidate.build().name == "epsilon-gamma-box"
    with pytest.raises(ConfigurationError, match=r"^candidate reference 'median' is unknown; choose one of zeros, "):
        Candidate.make("gamma", reference="median")


def test_candidate_specs_round_trip() -> None:
    for spec in ["lrp:montavon,epsilon=1e-06,gamma=0.25,split=0.5,low=0,high=1", "lrp:alpha-beta,alpha=2,beta=1"]:
        assert Candidate.from_spec(spec).spec == spec
    assert Candidate.from_spec("gamma") == Candidate("gamma")
    with pytest.raises(ConfigurationError, match=r"^candidate 'gradient:absolute=true' is not an LRP composite"):
        Candidate.from_spec("gradient:absolute=true")


def test_fingerprints_follow_the_weights_not_the_wrapper(digits_model: nn.Module) -> None:
    a, b = load_digits_model(), load_digits_model()
    assert model_fingerprint(a) == model_fingerprint(b) == model_fingerprint(nn.Sequential(b))
    before, weight = model_fingerprint(b), b.features[0].weight
    saved = float(weight.detach()[0, 0, 0, 0])
    with torch.no_grad():
        weight[0, 0, 0, 0] += 1.0  # in place: the cache must notice
    assert model_fingerprint(b) != before
    with torch.no_grad():
        weight[0, 0, 0, 0] = saved
    assert model_fingerprint(b) == before


@pytest.fixture(scope="module")
def tuned_with_mean(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> TunedComposite:
    return relprop.tune(
        digits_model, digits[0][:8], objective="pixel-flipping:replacement=dataset-mean",
        candidates=["lrp:epsilon,epsilon=1e-06,reference=dataset-mean"], budget=None,
    )  # fmt: skip


def test_an_explainer_runs_a_tuned_reference(
    tuned_with_mean: TunedComposite, digits_model: nn.Module, digits: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    """Explainer(model, tuned) explains f(x) - f(x̄) relative to the tuned reference, as relprop.explain does."""
    x, mean = digits[0][8:13], digits[0][:8].mean(0)
    path = tuned_with_mean.save(tmp_path / "tuned.json")
    direct = relprop.explain(digits_model, x, composite="epsilon", epsilon=1e-6, reference=mean)
    for composite in (tuned_with_mean, str(path)):
        explainer = relprop.Explainer(digits_model, composite)
        result = explainer(x)
        torch.testing.assert_close(result.relevance, direct.relevance, rtol=1e-5, atol=1e-7)
        assert torch.equal(result.info["reference"], mean.expand_as(x))
    plain = relprop.Explainer(digits_model, "epsilon", epsilon=1e-6, reference="mean", data=digits[0][:8])(x)
    torch.testing.assert_close(plain.relevance, direct.relevance, rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # the explained score is the difference of the model's logits at x and at the mean
        logits, at_mean = digits_model(x), digits_model(mean[None])
    predicted = logits.argmax(1)
    expected = logits.gather(1, predicted[:, None])[:, 0] - at_mean[0, predicted]
    torch.testing.assert_close(result.score, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.relevance.sum((1, 2, 3)), expected, rtol=1e-3, atol=1e-4)


def test_a_tuned_reference_refuses_what_it_cannot_explain(
    tuned_with_mean: TunedComposite, digits_model: nn.Module, digits: tuple[Tensor, Tensor]
) -> None:
    explainer = relprop.Explainer(digits_model, tuned_with_mean)
    name = f"tuned:{tuned_with_mean.spec.removeprefix('lrp:')}"
    with pytest.raises(ConfigurationError) as info:
        explainer(digits[0][:2], layers=["features.3"])
    assert str(info.value) == (
        f"layers cannot be used with reference-aware LRP ({name} relative to the reference, explaining f(x) - f(x̄)); "
        "drop them, or explain without a reference."
    )
    with pytest.raises(ConfigurationError, match=r"^top='log-odds', contrast cannot be used with reference-aware LRP"):
        relprop.Explainer(digits_model, tuned_with_mean, top="log-odds", contrast="rest")
    with pytest.raises(ConfigurationError) as info:
        relprop.Explainer(digits_model, tuned_with_mean, reference="zeros")
    chosen = f"parameters reference are chosen by the tuned composite ({tuned_with_mean.spec}); drop them."
    assert str(info.value) == chosen
