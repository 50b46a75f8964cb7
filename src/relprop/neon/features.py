"""Tabular inputs: numeric checks, feature names (pandas columns kept), one-hot groups.

pandas is optional: a DataFrame is recognised by its type's module, and pandas is imported
only to build a DataFrame of relevances on request (:func:`relevance_frame`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigurationError

__all__ = ["Table", "as_table", "group_relevance", "onehot_groups", "relevance_frame", "resolve_groups"]


@dataclass
class Table:
    """Rows to explain, in the estimator's column order, and how to map back to the caller's order.

    Attributes
    ----------
    values
        ``(N, D)`` float64 values in the order the estimator was fitted with.
    names
        Feature names in the caller's column order.
    columns
        For each estimator column, its position in the caller's ``X``.
    index
        The row labels of a DataFrame (``None`` for arrays).
    """

    values: np.ndarray
    names: list[str]
    columns: np.ndarray
    index: list[Any] | None = None

    def to_caller_order(self, relevance: torch.Tensor) -> torch.Tensor:
        """Relevance in estimator column order → the caller's column order."""
        if bool((self.columns == np.arange(self.columns.size)).all()):
            return relevance
        out = torch.empty_like(relevance)
        out[:, torch.as_tensor(self.columns)] = relevance
        return out


def _is_dataframe(x: Any) -> bool:
    return type(x).__module__.startswith("pandas") and hasattr(x, "columns") and hasattr(x, "dtypes")


def _expected_names(estimator: Any) -> list[str] | None:
    names = getattr(estimator, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _frame_values(frame: Any) -> tuple[np.ndarray, list[str]]:
    names = [str(c) for c in frame.columns]
    for name, dtype in zip(names, frame.dtypes, strict=True):
        if getattr(dtype, "kind", "O") not in "biuf":
            raise ConfigurationError(
                f"column {name!r} of X is not numeric (dtype {dtype}); encode it first (e.g. one-hot with "
                "pandas.get_dummies) and pass groups= to sum its columns back into one feature."
            )
    return frame.to_numpy(dtype=np.float64, na_value=np.nan), names


def _array_values(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"X holds non-numeric values (dtype {array.dtype}); NEON explains numeric features — encode "
                "categorical columns first (one-hot) and pass groups= to sum them back."
            ) from None
    return array.astype(np.float64, copy=False)


def _check_finite(values: np.ndarray, names: list[str]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        raise ConfigurationError(
            f"X has a missing or infinite value in column {names[col]!r} (row {row}); impute or drop such rows first."
        )


def as_table(x: Any, estimator: Any, feature_names: Sequence[str] | None = None) -> Table:
    """Check ``x`` against the estimator and return it as float64 in the estimator's column order.

    A DataFrame keeps its column names; its columns may come in any order as long as they are
    the ones the estimator was fitted with. Arrays take the estimator's ``feature_names_in_``,
    ``feature_names`` or ``x0, x1, ...``.
    """
    frame = _is_dataframe(x)
    if frame:
        values, names = _frame_values(x)
        index = list(x.index)
    else:
        values, names, index = _array_values(x), [], None
    if values.ndim != 2 or values.shape[0] == 0:
        raise ConfigurationError(
            f"X must be a non-empty 2-D table (rows × features), got shape {values.shape}; use X.reshape(1, -1) "
            "for a single row."
        )
    n_features = values.shape[1]
    expected = _expected_names(estimator)
    wanted = getattr(estimator, "n_features_in_", None)
    if wanted is not None and n_features != wanted:
        raise ConfigurationError(
            f"X has {n_features} columns but {type(estimator).__name__} was fitted with {wanted} features; pass "
            "the same columns as at fit time."
        )
    columns = np.arange(n_features)
    if frame and expected is not None:
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        if missing or extra:
            raise ConfigurationError(
                f"the columns of X do not match those {type(estimator).__name__} was fitted with: missing "
                f"{missing or 'none'}, unexpected {extra or 'none'}."
            )
        columns = np.array([names.index(n) for n in expected])
        values = values[:, columns]
    elif not frame:
        names = list(feature_names) if feature_names is not None else expected or [f"x{i}" for i in range(n_features)]
    if feature_names is not None and frame:
        names = list(feature_names)
    if len(names) != n_features:
        raise ConfigurationError(f"got {len(names)} feature names for {n_features} columns; give one name per column.")
    _check_finite(values, [names[c] for c in columns])
    values = np.array(values, dtype=np.float64, order="C")  # a private, writable copy
    return Table(values=values, names=[str(n) for n in names], columns=columns, index=index)


def onehot_groups(columns: Sequence[Any], categorical: Sequence[str], sep: str = "_") -> dict[str, list[str]]:
    """Groups of one-hot columns named ``<feature><sep><value>`` (as ``pandas.get_dummies`` names them).

    Parameters
    ----------
    columns
        All column names of the encoded table.
    categorical
        The original categorical features.
    sep
        The separator between feature and value.

    Examples
    --------
    >>> onehot_groups(["age", "color_red", "color_blue"], ["color"])
    {'color': ['color_red', 'color_blue']}
    """
    names = [str(c) for c in columns]
    groups: dict[str, list[str]] = {}
    for feature in categorical:
        members = [n for n in names if n.startswith(f"{feature}{sep}")]
        if not members:
            raise ConfigurationError(f"no column of X is named {feature}{sep}<value>; check the categorical feature.")
        groups[feature] = members
    return groups


def resolve_groups(groups: Mapping[str, Sequence[Any]] | None, names: list[str]) -> list[tuple[str, list[int]]]:
    """``(group name, column positions)`` covering every column once (ungrouped columns stand alone)."""
    if groups is None:
        return [(n, [i]) for i, n in enumerate(names)]
    owner: dict[int, str] = {}
    for group, members in groups.items():
        if isinstance(members, (str, int)):
            raise ConfigurationError(f"group {group!r} must list its columns, got {members!r}.")
        for member in members:
            position = _position(member, names, group)
            if position in owner:
                raise ConfigurationError(
                    f"column {names[position]!r} is in groups {owner[position]!r} and {group!r}; put it in one group."
                )
            owner[position] = str(group)
    resolved: list[tuple[str, list[int]]] = []
    seen: set[str] = set()
    for position, name in enumerate(names):
        owning = owner.get(position)
        if owning is None:
            resolved.append((name, [position]))
        elif owning not in seen:
            seen.add(owning)
            resolved.append((owning, [p for p, g in sorted(owner.items()) if g == owning]))
    return resolved


def _position(member: Any, names: list[str], group: str) -> int:
    if isinstance(member, (int, np.integer)) and not isinstance(member, bool):
        if not 0 <= int(member) < len(names):
            raise ConfigurationError(f"group {group!r}: column index {member} is out of range 0..{len(names) - 1}.")
        return int(member)
    if str(member) not in names:
        raise ConfigurationError(f"group {group!r}: X has no column {member!r}.")
    return names.index(str(member))


def group_relevance(relevance: torch.Tensor, groups: list[tuple[str, list[int]]]) -> torch.Tensor:
    """Relevance summed per group, ``(N, G)``."""
    return torch.stack([relevance[:, members].sum(1) for _, members in groups], dim=1)


def relevance_frame(explanation: Any, grouped: bool = True) -> Any:
    """A pandas DataFrame of relevance per row and feature (or group) of a :func:`relprop.neon.explain` result."""
    import pandas as pd

    info = explanation.info
    if grouped and "group_relevance" in info:
        values, columns = info["group_relevance"], info["groups"]
    else:
        values, columns = explanation.relevance, info["feature_names"]
    return pd.DataFrame(values.detach().cpu().numpy(), columns=columns, index=info.get("index"))
