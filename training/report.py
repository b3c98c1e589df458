"""The training report: seed 1's Tables 2-6, DeLong comparisons, SHAP, served predictions.

Statistics come from :mod:`icibenefit.training.evaluation` (checked against R);
this module only decides which patients each model is evaluated on and lays
the results out.  As in seed 1, every model is evaluated on the test patients
it can score (its own "N test"), and a paired comparison (DeLong) uses the
patients both models can score.

Layout of the report folder::

    report.md                      Tables 2-6 per endpoint (each model on its own
                                   test patients) + comparisons + SHAP
    metrics.json                   endpoint -> model -> metrics (issue 7 schema)
    <endpoint>/predictions.csv     test predictions (``icibenefit evaluate`` layout)
    <endpoint>/<kind>/             every model of one kind on their common patients (ROC/KM plots)
    <endpoint>/comparisons/        the recipe's DeLong comparisons
    shap_<endpoint>_<kind>.png     SHAP summary of the clinical model
    served_predictions.csv         what inference serves for every patient (train and test)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from icibenefit.pipeline import explain
from icibenefit.pipeline.predictor import ModelCatalogue, Predictor
from icibenefit.training.evaluation import ModelLabel, evaluate_models
from icibenefit.training.evaluation import write_report as write_evaluation
from icibenefit.training.evaluation.tables import (
    delong_table,
    discrimination_table,
    survival_table,
    to_markdown,
)
from icibenefit.training.models import TunedModel
from icibenefit.training.recipes import Recipe

if TYPE_CHECKING:
    from icibenefit.training.trainer import EndpointScores, TrainingData

logger = logging.getLogger(__name__)

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class ClinicalExplanation:
    """SHAP of one clinical model: its background and the test-set values."""

    endpoint: str
    kind: str
    estimator_name: str
    names: list[str]
    background: NDArray[np.float64]
    values: NDArray[np.float64]
    rows: NDArray[np.float64]


def explain_clinical(
    data: TrainingData,
    recipe: Recipe,
    fitted: dict[str, TunedModel],
    catalogue: ModelCatalogue,
    seed: int,
) -> list[ClinicalExplanation]:
    """SHAP on the clinical models inference serves (baseline and longitudinal), per endpoint.

    Explained rows are the test patients (the training patients when the
    cohort has no test set), as seed 1's Fig. 7.
    """
    explanations = []
    for endpoint in recipe.endpoints:
        for kind in ("baseline", "longitudinal"):
            name = ModelCatalogue.estimator_name(endpoint, "clinical", kind)
            if name not in fitted:
                continue
            train_ids, X_train = data.matrix("clinical", kind, data.train_ids)
            ids, X = data.matrix("clinical", kind, sorted(data.test_ids))
            if not ids:
                ids, X = train_ids, X_train
            pipeline = fitted[name].pipeline
            reference = explain.background(pipeline, X_train, seed)
            values = explain.shap_values(pipeline, reference, X, seed=seed)
            explanations.append(
                ClinicalExplanation(
                    endpoint, kind, name, list(catalogue.feature_schema[name]), reference, values, X
                )
            )
    return explanations


def _evaluate(
    labels: dict[str, int],
    scores: dict[str, dict[str, float]],
    models: list[str],
    titles: dict[str, tuple[str, str]],
    endpoint: str,
    data: TrainingData,
    n_boot: int,
    seed: int,
    pairs: list[tuple[str, str]] | None = None,
) -> Any:
    common = sorted(set.intersection(*(set(scores[m]) for m in models)))
    y = np.array([labels[pid] for pid in common])
    if len(common) < 4 or len(set(y.tolist())) < 2:
        return None
    outcomes = {p.patient_id: p.outcomes for p in data.cohort.patients}
    survival = {
        "pfs": (
            [outcomes[p].pfs_months for p in common],
            [int(outcomes[p].pfs_event) for p in common],
        ),
        "os": (
            [outcomes[p].os_months for p in common],
            [int(outcomes[p].os_event) for p in common],
        ),
    }
    return evaluate_models(
        y,
        {m: [scores[m][pid] for pid in common] for m in models},
        endpoint=endpoint,
        survival=survival,
        labels={m: ModelLabel(*titles[m]) for m in models},
        n_boot=n_boot,
        seed=seed,
        delong_pairs=pairs or [],
    )


def write_report(
    out_dir: Path,
    data: TrainingData,
    recipe: Recipe,
    scores: dict[str, EndpointScores],
    fitted: dict[str, TunedModel],
    explanations: list[ClinicalExplanation],
    *,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Write the report folder (module docstring) and return the metrics for the bundle."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [
        "# Training report\n",
        f"Recipe `{recipe.name}`; {len(data.train_ids)} training and {len(data.test_ids)} "
        f"held-out test patients; seed {seed}."
        + (
            " Synthetic cohort: demonstration models, not for clinical use."
            if data.cohort.synthetic
            else ""
        )
        + "\n",
    ]
    metrics: dict[str, Any] = {}
    for endpoint, endpoint_scores in scores.items():
        folder = out_dir / endpoint
        folder.mkdir(parents=True, exist_ok=True)
        endpoint_scores.table(data).to_csv(
            folder / "predictions.csv", index=False, float_format="%.17g"
        )
        labels, per_model, titles = (
            endpoint_scores.labels,
            endpoint_scores.scores,
            endpoint_scores.titles,
        )
        singles = []
        for model in per_model:
            result = _evaluate(labels, per_model, [model], titles, endpoint, data, n_boot, seed)
            if result is None:
                logger.warning("%s %s: too few test patients to evaluate", endpoint, model)
                continue
            singles.append(result)
        for kind in recipe.kinds:
            group = [m for m in per_model if m.split("-")[-1] == kind or f"-{kind}-" in m]
            if group and (
                result := _evaluate(labels, per_model, group, titles, endpoint, data, n_boot, seed)
            ):
                write_evaluation(result, folder / kind)
        trained = {m.split("-")[0] for m in per_model}
        comparisons = []
        for comparison in recipe.comparisons:
            a, b = recipe.resolve(comparison.a, trained), recipe.resolve(comparison.b, trained)
            if a in per_model and b in per_model and a != b:
                result = _evaluate(
                    labels, per_model, [a, b], titles, endpoint, data, n_boot, seed, [(a, b)]
                )
                if result is not None:
                    comparisons.append(result)
        if comparisons:
            for index, result in enumerate(comparisons):
                write_evaluation(result, folder / "comparisons" / f"{index + 1}")
        model_metrics = {}
        for result in singles:
            name = next(iter(result.models))
            model_metrics[name] = result.metrics_json()["models"][name] | {"n": result.n}
        metrics[endpoint] = {
            "models": model_metrics,
            "delong": [pair for r in comparisons for pair in r.metrics_json()["delong"]],
            "cv_auc": {
                name: round(t.cv_auc, 6)
                for name, t in fitted.items()
                if name.startswith(f"{endpoint}-")
            },
        }
        sections += _endpoint_section(endpoint, singles, comparisons)
    sections += _shap_section(out_dir, explanations)
    (out_dir / "metrics.json").write_text(
        json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    (out_dir / "report.md").write_text("\n".join(sections), encoding="utf-8")
    return metrics


def _endpoint_section(endpoint: str, singles: list[Any], comparisons: list[Any]) -> list[str]:
    title = endpoint.upper()
    lines = [f"## Endpoint {title}\n"]
    if not singles:
        return [*lines, "Too few test patients to evaluate.\n"]
    lines.append(
        "### Response prediction in the independent test set (Tables 2-4 layout)\n\n"
        + to_markdown(discrimination_table(singles), ["AUC [95% CI]"])
    )
    lines.append(
        "### Hazard ratios and C-indexes (Tables 5-6 layout)\n\n"
        + to_markdown(survival_table(singles))
    )
    if comparisons:
        lines.append("### DeLong comparisons\n\n" + to_markdown(delong_table(comparisons)))
        for result in comparisons:
            pair = result.delong[0]
            p = pair.result.p
            verdict = (
                "not testable (identical or degenerate curves)"
                if not np.isfinite(p)
                else f"{'significant' if p < SIGNIFICANCE else 'not significant'} at {SIGNIFICANCE}"
            )
            if pair.result.auc_a == pair.result.auc_b:
                order = "the AUCs are equal"
            else:
                better = pair.a if pair.result.auc_a > pair.result.auc_b else pair.b
                order = f"{better} is higher"
            lines.append(
                f"- {pair.a} (AUC {pair.result.auc_a:.3f}) vs {pair.b} "
                f"(AUC {pair.result.auc_b:.3f}) on {result.n} paired patients: {order}; "
                f"DeLong p = {p:.3g}, {verdict}.\n"
            )
    return lines


def _shap_section(out_dir: Path, explanations: list[ClinicalExplanation]) -> list[str]:
    if not explanations:
        return []
    lines = ["## SHAP explanations of the clinical models\n"]
    for e in explanations:
        path = explain.summary_plot(
            e.values,
            e.rows,
            e.names,
            f"{e.endpoint.upper()} clinical {e.kind}",
            out_dir / f"shap_{e.endpoint}_{e.kind}.png",
        )
        mean_abs = np.abs(e.values).mean(axis=0)
        top = np.argsort(-mean_abs, kind="stable")[:5]
        names = ", ".join(f"{e.names[i]} ({mean_abs[i]:.3f})" for i in top)
        heading = f"- {e.endpoint.upper()} {e.kind}: top mean |SHAP| {names}"
        lines.append(f"{heading}\n\n![{path.stem}]({path.name})\n")
    return lines


def served_predictions(predictor: Predictor, data: TrainingData) -> pd.DataFrame:
    """What inference serves for every patient of the cohort (for the one-feature-path check)."""
    rows = []
    for patient_id, features in sorted(data.features.items()):
        prediction = predictor.predict(
            features, bundle_name="training", bundle_version="0", demonstration=True
        )
        for endpoint in prediction.endpoints:
            rows.append(
                {
                    "patient_id": patient_id,
                    "split": "test" if patient_id in data.test_ids else "train",
                    "endpoint": endpoint.endpoint,
                    "kind": prediction.ensemble_kind,
                    "model": endpoint.model,
                    "probability": endpoint.probability,
                }
            )
    return pd.DataFrame(rows)
