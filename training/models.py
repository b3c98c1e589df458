"""The random-forest models of seed 1 and their seeded Bayesian tuning.

Every model is one imbalanced-learn :class:`~imblearn.pipeline.Pipeline`::

    KMeansImputer -> StandardScaler -> SelectKBest(f_classif, k) -> [SMOTE] -> RandomForest

so that everything that learns from data is refitted inside each CV fold and
nothing leaks (METHOD.md, "Models").  SMOTE sits in the pipeline only for the
endpoints the recipe resamples (PFS9); imbalanced-learn applies samplers
during ``fit`` only, never at prediction time.  Scaling does not change a
forest, but it makes the imputer-filled, selected features comparable for
the univariate F-test and keeps the method's "z-score for continuous".

Tuning is optuna's TPE sampler, seeded, maximising the mean ROC AUC of a
seeded stratified k-fold CV over ``n_estimators``, ``max_depth``,
``max_features`` and the number of selected features ``k``; the best
parameters are then refitted on the whole training set.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.preprocessing import StandardScaler

from icibenefit.errors import TrainingError
from icibenefit.pipeline.clinical_features import KMeansImputer
from icibenefit.training.recipes import SearchSpace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunedModel:
    """A fitted pipeline with what tuning found."""

    pipeline: Pipeline
    params: dict[str, Any]
    cv_auc: float
    n_train: int
    n_features_in: int


def build_pipeline(
    *,
    n_estimators: int,
    max_depth: int,
    max_features: str | float,
    k_features: int,
    smote_k_neighbors: int | None,
    imputer_clusters: int,
    seed: int,
) -> Pipeline:
    """One model pipeline; ``smote_k_neighbors=None`` leaves SMOTE out."""
    steps: list[tuple[str, Any]] = [
        ("impute", KMeansImputer(n_clusters=imputer_clusters, random_state=seed)),
        ("scale", StandardScaler()),
        ("select", SelectKBest(f_classif, k=k_features)),
    ]
    if smote_k_neighbors is not None:
        steps.append(("smote", SMOTE(k_neighbors=smote_k_neighbors, random_state=seed)))
    steps.append(
        (
            "forest",
            RandomForestClassifier(
                n_estimators=n_estimators,
                max_depth=max_depth,
                max_features=max_features,
                random_state=seed,
                n_jobs=1,
            ),
        )
    )
    return Pipeline(steps)


def _smote_neighbours(y: NDArray[np.int_], folds: int, wanted: int) -> int | None:
    # SMOTE needs k_neighbors < minority count in every CV training fold; small
    # cohorts get the largest k that works (documented reduction of k = 5), and
    # none at all when a fold can hold a single minority patient.
    minority = int(min(np.bincount(y, minlength=2)))
    per_fold = minority - int(np.ceil(minority / folds))
    return None if per_fold < 2 else min(wanted, per_fold - 1)


def tune_model(
    X: NDArray[np.float64],
    y: NDArray[np.int_],
    *,
    space: SearchSpace,
    trials: int,
    folds: int,
    smote: bool,
    smote_k_neighbors: int,
    imputer_clusters: int,
    seed: int,
) -> TunedModel:
    """Tune a pipeline by seeded optuna over stratified CV, then refit it on all of ``X``.

    Raises
    ------
    TrainingError
        When a class has fewer members than the number of CV folds.
    """
    import optuna

    counts = np.bincount(y, minlength=2)
    if counts.min() < folds:
        raise TrainingError(f"too few patients per class for {folds}-fold CV: {counts.tolist()}")
    n_features = X.shape[1]
    k_low = min(space.k_features[0], n_features)
    k_high = min(space.k_features[1], n_features)
    smote_k = _smote_neighbours(y, folds, smote_k_neighbors) if smote else None
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    choices = [str(v) if isinstance(v, str) else float(v) for v in space.max_features]

    def params_of(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", *space.n_estimators, step=10),
            "max_depth": trial.suggest_int("max_depth", *space.max_depth),
            "max_features": trial.suggest_categorical("max_features", choices),
            "k_features": trial.suggest_int("k_features", k_low, k_high),
        }

    def objective(trial: optuna.trial.Trial) -> float:
        pipeline = build_pipeline(
            **params_of(trial),
            smote_k_neighbors=smote_k,
            imputer_clusters=imputer_clusters,
            seed=seed,
        )
        with warnings.catch_warnings():
            # Constant columns make f_classif warn; the selector then ranks them last.
            warnings.simplefilter("ignore", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message="(?s).*are constant")
            scores = cross_val_score(pipeline, X, y, cv=cv, scoring="roc_auc", n_jobs=1)
        return float(np.mean(scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best = params_of(study.best_trial)
    pipeline = build_pipeline(
        **best, smote_k_neighbors=smote_k, imputer_clusters=imputer_clusters, seed=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="(?s).*are constant")
        pipeline.fit(X, y)
    params = best | {"smote_k_neighbors": smote_k}
    return TunedModel(pipeline, params, float(study.best_value), len(y), n_features)


def positive_probability(pipeline: Pipeline, X: NDArray[np.float64]) -> NDArray[np.float64]:
    """P(responder) of each row; the forest's classes are always ``[0, 1]`` here."""
    proba = pipeline.predict_proba(X)
    classes = list(pipeline.classes_)
    return np.asarray(proba[:, classes.index(1)], dtype=np.float64)
