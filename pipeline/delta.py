"""Delta and longitudinal feature vectors (seed 1 "delta-radiomics"; METHOD.md "Models").

* Delta: the relative net change between the baseline and the first
  follow-up, ``(f1 - f0) / (|f0| + eps)``, with ``0/0 -> 0`` and ``eps = 1e-6``
  (keeps a zero baseline finite).  Deltas are then clipped per feature to the
  [1st, 99th] percentile of the training deltas by :class:`DeltaClipper`: a
  baseline value near zero otherwise yields deltas of ~1e6 that dominate any
  scaler and forest split.
* Longitudinal: baseline, follow-up 1 and follow-up 2 concatenated with
  ``baseline.``/``followup1.``/``followup2.`` prefixes.  A missing timepoint
  takes the features of the nearest available one in the timeline's order
  (ties go to the earlier, so no later information leaks backwards); the
  decisions say which slot was imputed from which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_array, check_is_fitted

DELTA_EPS = 1e-6
SLOTS: tuple[str, ...] = ("baseline", "followup1", "followup2")


def relative_change(before: float, after: float, eps: float = DELTA_EPS) -> float:
    """``(after - before) / (|before| + eps)``; ``0/0 -> 0``; ``nan`` stays ``nan``."""
    if math.isnan(before) or math.isnan(after):
        return math.nan
    if after == before:
        return 0.0
    return (after - before) / (abs(before) + eps)


def delta_features(
    baseline: Mapping[str, float], followup: Mapping[str, float], eps: float = DELTA_EPS
) -> dict[str, float]:
    """Relative change of every baseline feature (``nan`` when the follow-up lacks it)."""
    return {
        name: relative_change(float(value), float(followup.get(name, math.nan)), eps)
        for name, value in baseline.items()
    }


class DeltaClipper(TransformerMixin, BaseEstimator):
    """Clip each delta column to percentile bounds learned on training deltas.

    Parameters
    ----------
    lower_percentile, upper_percentile
        Percentiles (0-100) of the training deltas used as bounds; ``nan``
        values are ignored when learning and passed through when clipping (the
        model's imputer handles them).

    Attributes
    ----------
    lower_, upper_
        Per-column bounds (``nan`` for an all-missing column: not clipped).
    n_features_in_
        Number of delta columns seen by ``fit``.
    """

    def __init__(self, lower_percentile: float = 1.0, upper_percentile: float = 99.0) -> None:
        # scikit-learn's contract: store only; ``fit`` validates (so ``set_params`` is checked too).
        self.lower_percentile = lower_percentile
        self.upper_percentile = upper_percentile

    def __sklearn_tags__(self) -> Tags:
        """``nan`` deltas are accepted (passed through, left to the model's imputer)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X: ArrayLike, y: object = None) -> DeltaClipper:
        """Learn the per-column bounds from training deltas.

        Raises
        ------
        ValueError
            When the percentiles are not ``0 <= lower < upper <= 100``.
        """
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ValueError("need 0 <= lower_percentile < upper_percentile <= 100")
        matrix = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
        self.n_features_in_ = matrix.shape[1]
        self.lower_ = np.full(matrix.shape[1], np.nan)
        self.upper_ = np.full(matrix.shape[1], np.nan)
        for j in range(matrix.shape[1]):
            column = matrix[:, j][~np.isnan(matrix[:, j])]
            if column.size:
                self.lower_[j], self.upper_[j] = np.percentile(
                    column, [self.lower_percentile, self.upper_percentile]
                )
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Clip to the learned bounds (``nan`` stays ``nan``)."""
        check_is_fitted(self, ("lower_", "upper_"))
        matrix = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan", copy=True)
        if matrix.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {matrix.shape[1]} features, but DeltaClipper is expecting "
                f"{self.n_features_in_} features as input (the delta columns seen in fit)"
            )
        lower = np.where(np.isnan(self.lower_), -np.inf, self.lower_)
        upper = np.where(np.isnan(self.upper_), np.inf, self.upper_)
        return np.where(np.isnan(matrix), np.nan, np.clip(matrix, lower, upper))


def longitudinal_vector(
    timepoints: Mapping[str, Mapping[str, float] | None],
    slots: Sequence[str] = SLOTS,
) -> tuple[dict[str, float], tuple[str, ...]]:
    """Concatenate per-timepoint features, imputing a missing slot from the nearest one.

    Parameters
    ----------
    timepoints
        ``{slot: features or None}``; the first slot (baseline) is required.
    slots
        Slot order = time order.

    Returns
    -------
    vector, decisions
        ``{"<slot>.<feature>": value}`` in slot order, and one sentence per
        imputed slot.

    Raises
    ------
    ValueError
        When the first slot is missing.
    """
    available = [i for i, slot in enumerate(slots) if timepoints.get(slot) is not None]
    if not available or available[0] != 0:
        raise ValueError(f"the {slots[0]} features are required for a longitudinal vector")
    vector: dict[str, float] = {}
    decisions: list[str] = []
    for index, slot in enumerate(slots):
        nearest = min(available, key=lambda i: (abs(i - index), i))
        if nearest != index:
            decisions.append(f"{slot} missing: imputed with the {slots[nearest]} features")
        source = timepoints[slots[nearest]]
        assert source is not None  # guaranteed by ``available``
        vector |= {f"{slot}.{name}": float(value) for name, value in source.items()}
    return vector, tuple(decisions)
