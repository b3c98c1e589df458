"""Write a trained recipe as a model bundle (through :mod:`icibenefit.model_store`).

Bundle contents written here:

* ``estimators/<endpoint>-<source>-<kind>.skops``: the fitted pipelines;
* ``tensors/cnn.safetensors``: the fine-tuned CNN when the recipe uses it;
* ``tensors/unet.safetensors``: seed 2's UNET when the recipe uses it;
* ``json/shap-<endpoint>-clinical-<kind>.json``: SHAP background rows;
* manifest: feature schema, preprocessing (HU statistics, delta bounds),
  pyradiomics parameters, robust features, metrics, recipe, and in ``extra``
  the serving catalogue, the split, the tuned hyper-parameters and the
  clinical rules the features were computed under (``pipeline_rules``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from icibenefit.model_store.bundle import BundleWriter
from icibenefit.pipeline.inference import EXTRA_TRUSTED_TYPES
from icibenefit.pipeline.predictor import ModelCatalogue
from icibenefit.training.models import TunedModel
from icibenefit.training.recipes import Recipe

if TYPE_CHECKING:
    from icibenefit.training.features import ExtractedFeatures
    from icibenefit.training.report import ClinicalExplanation
    from icibenefit.training.trainer import TrainingData

DEMONSTRATION_STATEMENT = "Demonstration model trained on synthetic data: not for clinical use."


def write_bundle(
    out: Path,
    *,
    data: TrainingData,
    recipe: Recipe,
    fitted: dict[str, TunedModel],
    catalogue: ModelCatalogue,
    extracted: ExtractedFeatures,
    explanations: list[ClinicalExplanation],
    metrics: dict[str, Any],
    seed: int,
    trials: int,
    version: str,
) -> Path:
    """Write the bundle directory ``out`` and return it."""
    writer = BundleWriter(
        out,
        extra_trusted=EXTRA_TRUSTED_TYPES,
        name=f"icibenefit-{recipe.name}",
        version=version,
        training_data_fingerprint=data.cohort.fingerprint,
        endpoints=list(recipe.endpoints),
        feature_schema={name: list(names) for name, names in catalogue.feature_schema.items()},
        preprocessing=extracted.preprocessing
        | {"delta_bounds": {k: dict(v) for k, v in catalogue.delta_bounds.items()}},
        pyradiomics_params=extracted.pyradiomics_params,
        robust_features=extracted.robust_features,
        metrics=metrics,
        intended_use={
            "demonstration": data.cohort.synthetic,
            "statement": DEMONSTRATION_STATEMENT
            if data.cohort.synthetic
            else "Research model: validate locally before any clinical use.",
        },
        recipe=recipe.model_dump(mode="json"),
        extra={
            "catalogue": catalogue.to_json(),
            "seed": seed,
            "trials": trials,
            "split": {
                "train": data.train_ids,
                "test": sorted(data.test_ids),
            },
            "hyperparameters": {name: t.params for name, t in fitted.items()},
            "cv_auc": {name: t.cv_auc for name, t in fitted.items()},
            "cnn": extracted.cnn_manifest,
            "unet": extracted.unet_manifest,
            "pipeline_rules": extracted.rules.as_settings(),
        },
    )
    for name, tuned in sorted(fitted.items()):
        writer.add_estimator(name, tuned.pipeline)
    for e in explanations:
        writer.add_json(f"shap-{e.estimator_name}", {"background": e.background.tolist()})
    if extracted.cnn_state is not None:
        writer.add_tensors("cnn", extracted.cnn_state)
    if extracted.unet_state is not None:
        writer.add_tensors("unet", extracted.unet_state)
    return writer.write()
