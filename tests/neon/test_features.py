"""Feature names, pandas DataFrames, one-hot groups and input checks of ``relprop.neon.explain``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from relprop import neon
from relprop.errors import ConfigurationError

from .fitting import assert_exact, fit_quietly

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def frame() -> Any:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame.drop(columns="target")


@pytest.fixture(scope="module")
def frame_model(frame: Any) -> Any:
    from sklearn.datasets import load_wine

    return fit_quietly(make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)), frame, load_wine().target)


def test_dataframe_columns_are_kept_in_any_order(frame: Any, frame_model: Any, wine_kmeans: Any) -> None:
    rows = frame.iloc[10:20]
    result = neon.explain(frame_model, rows, composite="lrp-0")
    assert result.info["feature_names"] == list(frame.columns)
    assert result.info["index"] == list(range(10, 20))
    shuffled = rows[list(reversed(frame.columns))]
    again = neon.explain(frame_model, shuffled, composite="lrp-0")
    assert again.info["feature_names"] == list(reversed(frame.columns))
    assert_exact(again.relevance, result.relevance.flip(1).numpy(), tol=0)
    table = neon.relevance_frame(again)
    assert list(table.columns) == list(reversed(frame.columns)) and list(table.index) == list(range(10, 20))
    assert_exact(table["proline"].to_numpy(), result.relevance[:, list(frame.columns).index("proline")].numpy())
    # A model fitted on an array names the columns from the DataFrame, or x0, x1, ... for arrays.
    assert neon.explain(wine_kmeans, rows).info["feature_names"] == list(frame.columns)
    assert neon.explain(wine_kmeans, rows.to_numpy()).info["feature_names"] == [f"x{i}" for i in range(13)]
    named = neon.explain(frame_model, rows.to_numpy(), composite="lrp-0")
    assert named.info["feature_names"] == list(frame.columns)  # the estimator's feature_names_in_


def test_one_hot_groups_sum_back_to_the_categorical_feature() -> None:
    generator = np.random.default_rng(0)
    raw = pd.DataFrame(
        {
            "age": generator.normal(40, 10, 300),
            "color": generator.choice(["red", "green", "blue"], 300),
            "size": generator.choice(["S", "L"], 300),
        }
    )
    encoded = pd.get_dummies(raw, columns=["color", "size"], dtype=float)
    y = (raw["color"] == "red").to_numpy() ^ (raw["age"] > 45).to_numpy()
    model = fit_quietly(LogisticRegression(max_iter=300), encoded, y)
    groups = neon.onehot_groups(encoded.columns, ["color", "size"])
    assert groups == {"color": ["color_blue", "color_green", "color_red"], "size": ["size_L", "size_S"]}
    result = neon.explain(model, encoded.iloc[:20], groups=groups, composite="lrp-0")
    assert result.info["groups"] == ["age", "color", "size"]
    grouped = result.info["group_relevance"]
    names = result.info["feature_names"]
    for g, members in enumerate([["age"], groups["color"], groups["size"]]):
        columns = [names.index(m) for m in members]
        assert_exact(grouped[:, g], result.relevance[:, columns].sum(1).numpy(), tol=0)
    assert list(neon.relevance_frame(result).columns) == ["age", "color", "size"]
    assert list(neon.relevance_frame(result, grouped=False).columns) == names
    with pytest.raises(ConfigurationError, match="column 'color_red' is in groups 'color' and 'red'"):
        neon.explain(model, encoded.iloc[:2], groups={"color": groups["color"], "red": ["color_red"]})
    with pytest.raises(ConfigurationError, match="group 'shape': X has no column 'shape_round'"):
        neon.explain(model, encoded.iloc[:2], groups={"shape": ["shape_round"]})
    with pytest.raises(ConfigurationError, match=r"no column of X is named weight_<value>"):
        neon.onehot_groups(encoded.columns, ["weight"])


def test_inputs_that_cannot_be_explained_get_one_line_errors(frame: Any, frame_model: Any) -> None:
    rows = frame.iloc[:3]
    text = rows.assign(alcohol=["low", "mid", "high"])
    with pytest.raises(ConfigurationError, match=r"column 'alcohol' of X is not numeric \(dtype (object|str)\)"):
        neon.explain(frame_model, text)
    with pytest.raises(ConfigurationError, match=r"missing \['proline'\], unexpected \['prolin'\]"):
        neon.explain(frame_model, rows.rename(columns={"proline": "prolin"}))
    with pytest.raises(ConfigurationError, match="X has 12 columns but Pipeline was fitted with 13 features"):
        neon.explain(frame_model, rows.drop(columns="proline"))
    gap = rows.copy()
    gap.iloc[1, 4] = np.nan
    with pytest.raises(ConfigurationError, match=r"missing or infinite value in column 'magnesium' \(row 1\)"):
        neon.explain(frame_model, gap)
    with pytest.raises(ConfigurationError, match="X must be a non-empty 2-D table"):
        neon.explain(frame_model, rows.to_numpy()[0])
    with pytest.raises(ConfigurationError, match="X holds non-numeric values"):
        neon.explain(frame_model, np.array([["a"] * 13]))


def test_lists_tensors_and_feature_names() -> None:
    x = np.arange(12, dtype=float).reshape(4, 3)
    ridge = Ridge().fit(x, x.sum(1))
    from_list = neon.explain(ridge, x.tolist(), composite="lrp-0", feature_names=["a", "b", "c"])
    from_tensor = neon.explain(ridge, torch.as_tensor(x, dtype=torch.float32), composite="lrp-0")
    assert from_list.info["feature_names"] == ["a", "b", "c"]
    assert torch.equal(from_list.relevance, from_tensor.relevance)
    assert from_tensor.relevance.dtype == torch.float64
    with pytest.raises(ConfigurationError, match="got 2 feature names for 3 columns"):
        neon.explain(ridge, x, feature_names=["a", "b"])
