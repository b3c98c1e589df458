"""SHAP explanations of the clinical model (seed 1, "Model interpretation").

SHAP's :class:`~shap.KernelExplainer` is model-agnostic, so it explains the
whole fitted pipeline (imputer, scaler, selector and forest) on the raw
clinical features the report shows.  Contributions are SHAP values on the
probability of durable benefit: a negative value pushes towards "high risk".

The background set is a k-means summary of the training rows after the
pipeline's own imputation (KernelExplainer cannot hide a feature behind a
missing value), computed with scikit-learn's seeded :class:`KMeans` and stored
in the model bundle, so training and inference explain against the same
reference.  KernelExplainer draws its coalitions from numpy's global random
state; :func:`shap_values` seeds it and restores it, so explanations are
reproducible and do not disturb the caller's randomness.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import KMeans

from icibenefit.domain import FeatureContribution
from icibenefit.pipeline.predictor import Classifier

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline  # the type only: no import at run time

#: Coalitions sampled per explained row: enough for a stable top-5 on ~60 features.
DEFAULT_NSAMPLES = 200
BACKGROUND_SIZE = 10


def background(pipeline: Pipeline, X_train: NDArray[np.float64], seed: int) -> NDArray[np.float64]:
    """K-means summary of the imputed training rows (at most :data:`BACKGROUND_SIZE` rows)."""
    imputed = pipeline.named_steps["impute"].transform(X_train)
    k = min(BACKGROUND_SIZE, len(imputed))
    return np.asarray(
        KMeans(n_clusters=k, n_init=3, random_state=seed).fit(imputed).cluster_centers_,
        dtype=np.float64,
    )


def shap_values(
    pipeline: Classifier,
    reference: NDArray[np.float64],
    X: NDArray[np.float64],
    *,
    nsamples: int = DEFAULT_NSAMPLES,
    seed: int = 0,
) -> NDArray[np.float64]:
    """SHAP values of P(benefit) for every row of ``X`` (shape ``[n_rows, n_features]``)."""
    import shap

    classes = list(pipeline.classes_)

    def benefit(rows: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(pipeline.predict_proba(rows)[:, classes.index(1)], dtype=np.float64)

    # shap logs every coalition's arrays at INFO; keep the training log readable.
    logging.getLogger("shap").setLevel(logging.WARNING)
    state = np.random.get_state()
    with warnings.catch_warnings():
        # numpy warns that seeding the global RNG is legacy; it is what KernelExplainer reads.
        warnings.simplefilter("ignore")
        np.random.seed(seed)
        try:
            explainer = shap.KernelExplainer(benefit, reference)
            values = explainer.shap_values(
                np.asarray(X, dtype=np.float64), nsamples=nsamples, silent=True
            )
        finally:
            np.random.set_state(state)
    return np.asarray(values, dtype=np.float64).reshape(len(X), -1)


def top_features(
    values: NDArray[np.float64], row: NDArray[np.float64], names: Sequence[str], n: int = 5
) -> tuple[FeatureContribution, ...]:
    """The ``n`` features with the largest absolute contribution, largest first."""
    order = np.argsort(-np.abs(values), kind="stable")[:n]
    return tuple(
        FeatureContribution(
            name=names[i],
            value=None if np.isnan(row[i]) else float(row[i]),
            contribution=float(values[i]),
        )
        for i in order
    )


def summary_plot(
    values: NDArray[np.float64],
    X: NDArray[np.float64],
    names: Sequence[str],
    title: str,
    path: Path,
    max_display: int = 15,
) -> Path:
    """Write SHAP's beeswarm summary plot (the layout of seed 1's Fig. 7) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    plt.figure()
    shap.summary_plot(
        values,
        X,
        feature_names=list(names),
        max_display=max_display,
        show=False,
        rng=np.random.default_rng(0),  # the beeswarm jitter: same data, same picture
    )
    plt.title(title)
    plt.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(path, dpi=110)
    plt.close("all")
    return path
