"""Nested cross-validation (seed 2): outer folds estimate, inner folds tune.

For every endpoint the patients with a label are split into ``outer_folds``
stratified folds (scikit-learn's ``StratifiedKFold``, seeded).  For each
outer fold and each data source, the model of the recipe is tuned and fitted
on the other folds only, by :func:`icibenefit.training.models.tune_model`
with its own stratified ``inner_folds``-fold CV (the inner loop), and scores
the held-out fold.  Every patient therefore gets one out-of-fold probability
per model from a model that never saw them, and the AUC of each outer fold
is an honest estimate; the report gives their mean and spread, as seed 2.

Ensembles average the out-of-fold probabilities of their members patient by
patient (members scored the patient in the same outer fold, with models
trained without them), like the served ensembles average the deployed models.

All outer folds are drawn over the endpoint's labelled patients once, so the
single-source models and their ensembles share folds; a source that lacks a
patient (no usable baseline CT) simply has no prediction for them.

What is *not* inside the loop: the preprocessing that never sees an outcome
(HU statistics, the UNET segmentation training, radiomics extraction) is
fitted once on all cohort patients.  It learns nothing about survival, so it
cannot leak the label; everything that does (imputer, scaler, feature
selection, forest, its hyper-parameters) is refitted in every outer fold.

The bundle's deployed models are fitted afterwards on all patients by the
trainer's usual path (tuned with the same inner CV).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedKFold

from icibenefit.errors import TrainingError
from icibenefit.pipeline.predictor import ModelCatalogue
from icibenefit.training.models import positive_probability, tune_model
from icibenefit.training.recipes import ensemble_name, model_name

if TYPE_CHECKING:
    from icibenefit.training.models import TunedModel
    from icibenefit.training.recipes import Recipe
    from icibenefit.training.trainer import TrainingData

logger = logging.getLogger(__name__)


def min_class_size(outer_folds: int, inner_folds: int) -> int:
    """Fewest patients per class for which nested CV is defined.

    Every outer test fold needs both classes (``outer_folds``), and every
    outer training set needs ``inner_folds`` of each class for the stratified
    inner CV: ``ceil(inner * outer / (outer - 1))`` members per class.
    """
    return max(outer_folds, math.ceil(inner_folds * outer_folds / (outer_folds - 1)))


def outer_folds(labels: Mapping[str, int], folds: int, seed: int) -> list[list[str]]:
    """Test patients of each stratified outer fold (sorted ids; disjoint; cover all)."""
    ids = sorted(labels)
    y = np.array([labels[pid] for pid in ids], dtype=np.int_)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [sorted(ids[i] for i in test) for _, test in splitter.split(np.zeros(len(ids)), y)]


@dataclass(frozen=True)
class OuterJob:
    """One model of one outer fold: train on the other folds, score this one."""

    endpoint: str
    source: str
    kind: str
    fold: int
    X_train: NDArray[np.float64]
    y_train: NDArray[np.int_]
    X_test: NDArray[np.float64]
    test_ids: tuple[str, ...]


@dataclass(frozen=True)
class OuterResult:
    """Out-of-fold probabilities of one outer job and what its inner tuning chose."""

    probabilities: dict[str, float]
    params: dict[str, Any]
    inner_auc: float


@dataclass
class NestedEndpoint:
    """Everything the nested CV produced for one endpoint.

    ``scores[model][patient]`` is the out-of-fold probability of label 1;
    ``folds[i]`` the outer test patients of fold ``i``; ``excluded`` says why
    the endpoint could not be estimated (then ``scores`` is empty).
    """

    endpoint: str
    labels: dict[str, int]
    folds: list[list[str]]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    titles: dict[str, tuple[str, str]] = field(default_factory=dict)
    params: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    excluded: str | None = None

    def fold_aucs(self, model: str) -> list[float]:
        """AUC of ``model`` in each outer fold (NaN when a fold lacks a class)."""
        from sklearn.metrics import roc_auc_score

        per_model = self.scores[model]
        aucs = []
        for fold in self.folds:
            ids = [pid for pid in fold if pid in per_model]
            y = [self.labels[pid] for pid in ids]
            if len(set(y)) < 2:
                aucs.append(float("nan"))
                continue
            aucs.append(float(roc_auc_score(y, [per_model[pid] for pid in ids])))
        return aucs


def outer_jobs(
    data: TrainingData, recipe: Recipe, endpoint: str, folds: Sequence[Sequence[str]]
) -> list[OuterJob]:
    """Every (source, kind, outer fold) job of one endpoint."""
    labels = data.labels(endpoint)
    jobs = []
    for source in data.sources:
        for kind in recipe.kinds:
            if (source, kind) not in data.vectors:
                continue
            for index, test in enumerate(folds):
                train_ids = [pid for pid in sorted(labels) if pid not in set(test)]
                kept_train, X_train = data.matrix(source, kind, train_ids)
                kept_test, X_test = data.matrix(source, kind, test)
                y = np.array([labels[pid] for pid in kept_train], dtype=np.int_)
                if not kept_test or np.bincount(y, minlength=2).min() < recipe.cv.folds:
                    logger.warning(
                        "%s %s %s fold %d: too few patients (%d train, classes %s)",
                        endpoint,
                        source,
                        kind,
                        index,
                        len(kept_train),
                        np.bincount(y, minlength=2).tolist(),
                    )
                    continue
                jobs.append(
                    OuterJob(endpoint, source, kind, index, X_train, y, X_test, tuple(kept_test))
                )
    return jobs


def run_outer_job(job: OuterJob, recipe: Recipe, trials: int, seed: int) -> OuterResult:
    """Tune on the outer training folds (inner CV) and score the outer test fold."""
    tuned = tune_model(
        job.X_train,
        job.y_train,
        space=recipe.search_space,
        trials=trials,
        folds=recipe.cv.folds,
        smote=recipe.resample.get(job.endpoint) == "smote",
        smote_k_neighbors=recipe.smote_k_neighbors,
        imputer_clusters=recipe.imputer_clusters,
        seed=seed + job.fold,
    )
    probabilities = positive_probability(tuned.pipeline, job.X_test)
    return OuterResult(
        dict(zip(job.test_ids, map(float, probabilities), strict=True)),
        tuned.params,
        tuned.cv_auc,
    )


def nested_cross_validation(
    data: TrainingData,
    recipe: Recipe,
    *,
    trials: int,
    seed: int,
    workers: int,
    progress: bool,
    titles: Mapping[str, str],
) -> dict[str, NestedEndpoint]:
    """Out-of-fold predictions of every model and ensemble of the recipe, per endpoint.

    Parameters
    ----------
    titles
        Source -> how the tables name its features (e.g. ``"Clinical data"``).
    """
    from joblib import Parallel, delayed
    from rich.progress import Progress

    outer, inner = recipe.cv.outer_folds, recipe.cv.folds
    needed = min_class_size(outer, inner)
    results: dict[str, NestedEndpoint] = {}
    jobs: list[OuterJob] = []
    for endpoint in recipe.endpoints:
        labels = data.labels(endpoint)
        counts = np.bincount(np.array(list(labels.values()), dtype=np.int_), minlength=2)
        if counts.min() < needed:
            reason = (
                f"{counts[1]} patients event-free beyond the landmark and {counts[0]} not "
                f"(of {len(labels)} evaluable); nested {outer}x{inner}-fold CV needs "
                f">= {needed} of each"
            )
            logger.warning("%s not estimable: %s", endpoint, reason)
            results[endpoint] = NestedEndpoint(endpoint, labels, [], excluded=reason)
            continue
        folds = outer_folds(labels, outer, seed)
        results[endpoint] = NestedEndpoint(endpoint, labels, folds)
        jobs += outer_jobs(data, recipe, endpoint, folds)

    runner = Parallel(n_jobs=workers, return_as="generator")
    outputs = runner(delayed(run_outer_job)(job, recipe, trials, seed) for job in jobs)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("nested CV (outer folds)", total=len(jobs))
        for job, output in zip(jobs, outputs, strict=True):
            entry = results[job.endpoint]
            name = model_name(job.source, job.kind)
            entry.scores.setdefault(name, {}).update(output.probabilities)
            entry.params.setdefault(name, []).append(
                output.params | {"fold": job.fold, "inner_cv_auc": output.inner_auc}
            )
            entry.titles[name] = (f"RF-{job.kind}", titles.get(job.source, job.source))
            bar.advance(task)
    for entry in results.values():
        _add_ensembles(entry, recipe, titles)
    return results


def _add_ensembles(entry: NestedEndpoint, recipe: Recipe, titles: Mapping[str, str]) -> None:
    for spec in recipe.ensembles:
        members = [model_name(s, spec.kind) for s in spec.sources]
        if not all(m in entry.scores for m in members):
            continue
        common = sorted(set.intersection(*(set(entry.scores[m]) for m in members)))
        name = ensemble_name(spec)
        entry.scores[name] = {
            pid: float(np.mean([entry.scores[m][pid] for m in members])) for pid in common
        }
        entry.titles[name] = (
            f"Ensemble RF-{spec.kind}",
            " + ".join(titles.get(s, s) for s in spec.sources),
        )


def deployable(
    recipe: Recipe, fitted: Mapping[str, TunedModel]
) -> tuple[Recipe, dict[str, TunedModel]]:
    """The recipe and models restricted to the endpoints the bundle can serve.

    An endpoint is served when its final clinical baseline model could be
    fitted on all patients (the trainer's rule for every recipe: both classes
    present, CV folds reduced for tiny classes), whether or not the nested CV
    could estimate it; the report says which endpoints have an estimate.

    Raises
    ------
    TrainingError
        When no endpoint can be served.
    """
    served = tuple(
        e
        for e in recipe.endpoints
        if ModelCatalogue.estimator_name(e, "clinical", "baseline") in fitted
    )
    if not served:
        raise TrainingError("no endpoint has both classes among the patients: nothing to serve")
    dropped = sorted(set(recipe.endpoints) - set(served))
    if dropped:
        logger.warning("endpoints %s not served: a class has fewer than 2 patients", dropped)
    kept = {name: t for name, t in fitted.items() if name.split("-")[0] in served}
    return recipe.with_endpoints(served), kept
