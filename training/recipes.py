"""Training recipes: declarative configurations read by one training code path.

A recipe names the endpoints, the feature sources, the model kinds, the
ensembles, the split and CV scheme and the hyper-parameter search space.  It is
a YAML file next to this module (``recipe_<name>.yaml``) validated by
:class:`Recipe`; adding seed 2's ``song2025`` is adding a file (and whatever
new source or scheme it names), not a second training path.  The validated
recipe is written into the bundle manifest so that a bundle says how it was
made.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from icibenefit.domain import ENDPOINTS
from icibenefit.errors import ConfigurationError

Source = Literal["clinical", "radiomics", "dfimm", "unet"]
ImagingSource = Literal["radiomics", "dfimm", "unet"]
Kind = Literal["baseline", "delta", "longitudinal"]
KINDS: tuple[Kind, ...] = ("baseline", "delta", "longitudinal")
IMAGING_SOURCES: tuple[ImagingSource, ...] = ("radiomics", "dfimm", "unet")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnsembleSpec(_Strict):
    """Mean of the probabilities of ``sources`` (all of the same ``kind``).

    ``served`` marks the ensemble inference serves for its kind; without any
    marked ensemble, clinical + the preferred imaging source is served.
    """

    kind: Kind
    sources: tuple[Source, ...] = Field(min_length=2)
    served: bool = False


class SplitSpec(_Strict):
    """How patients are held out for the independent test set."""

    scheme: Literal["holdout", "none"] = "holdout"
    test_fraction: float = Field(default=0.25, gt=0, lt=1)
    stratify_on: tuple[Literal["imaging_followup", "clinical_followup"], ...] = (
        "imaging_followup",
        "clinical_followup",
    )


class CVSpec(_Strict):
    """Cross-validation of the models.

    ``single`` tunes on the training set with ``folds``-fold CV; ``nested``
    also estimates performance over ``outer_folds`` (seed 2).
    """

    scheme: Literal["single", "nested"] = "single"
    folds: int = Field(default=3, ge=2)
    outer_folds: int = Field(default=5, ge=2)
    scoring: Literal["roc_auc"] = "roc_auc"
    risk_cutoff: float | Literal["median"] = 0.5


class ImagingSpec(_Strict):
    """Which CTs feed the imaging features and how radiomics are configured."""

    timepoints: Literal["all", "baseline"] = "all"
    radiomics_params: str = "radiomics_params.yaml"
    robustness: bool = True


class UnetSpec(_Strict):
    """Training settings of the UNET behind the ``unet`` deep radiomics source (seed 2)."""

    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=0.002, gt=0)


class SearchSpace(_Strict):
    """Ranges optuna searches (inclusive integer ranges, categorical max_features)."""

    n_estimators: tuple[int, int] = (50, 300)
    max_depth: tuple[int, int] = (2, 12)
    max_features: tuple[str | float, ...] = ("sqrt", "log2", 0.2, 0.5)
    k_features: tuple[int, int] = (3, 60)


class Comparison(_Strict):
    """A paired DeLong comparison to report; names may use the aliases of :meth:`Recipe.resolve`."""

    a: str
    b: str


class Recipe(_Strict):
    """One training recipe (see the module docstring)."""

    name: str
    description: str = ""
    endpoints: tuple[str, ...]
    sources: tuple[Source, ...]
    kinds: tuple[Kind, ...]
    cnn_baseline: bool = False
    ensemble_imaging_preference: tuple[ImagingSource, ...] = ("dfimm", "radiomics")
    ensembles: tuple[EnsembleSpec, ...] = ()
    split: SplitSpec = Field(default_factory=SplitSpec)
    cv: CVSpec = Field(default_factory=CVSpec)
    imaging: ImagingSpec = Field(default_factory=ImagingSpec)
    unet: UnetSpec = Field(default_factory=UnetSpec)
    resample: dict[str, Literal["smote"]] = Field(default_factory=dict)
    smote_k_neighbors: int = Field(5, ge=1)
    imputer_clusters: int = Field(5, ge=1)
    search_space: SearchSpace = Field(default_factory=SearchSpace)
    default_trials: int = Field(12, ge=1)
    comparisons: tuple[Comparison, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        unknown = [e for e in (*self.endpoints, *self.resample) if e not in ENDPOINTS]
        if unknown:
            raise ValueError(f"unknown endpoints {unknown}; known: {sorted(ENDPOINTS)}")
        for spec in self.ensembles:
            missing = [s for s in spec.sources if s not in self.sources]
            if missing or spec.kind not in self.kinds:
                raise ValueError(f"ensemble {spec} uses a source or kind the recipe lacks")
        if self.cv.scheme == "nested" and self.split.scheme == "holdout":
            raise ValueError(
                "nested CV estimates on outer folds: use split scheme none, not holdout"
            )
        return self

    def with_endpoints(self, endpoints: tuple[str, ...]) -> Recipe:
        """The same recipe restricted to ``endpoints`` (``--endpoints`` of ``train``)."""
        return Recipe.model_validate(self.model_dump() | {"endpoints": endpoints})

    def imaging_source(self, available: set[str]) -> str | None:
        """The preferred imaging source among those that were actually trained."""
        return next((s for s in self.ensemble_imaging_preference if s in available), None)

    def resolve(self, name: str, available: set[str]) -> str:
        """Resolve model-name aliases against the trained imaging sources.

        ``imaging-<kind>`` is the preferred imaging source's model of that kind
        and ``ensemble-<kind>`` the ensemble of clinical with that source, so a
        recipe can name "the flagship" whether or not the CNN was available.
        """
        imaging = self.imaging_source(available)
        parts = name.split("-")
        if imaging is not None and len(parts) == 2 and parts[1] in KINDS:
            if parts[0] == "imaging":
                return f"{imaging}-{parts[1]}"
            if parts[0] == "ensemble":
                return f"ensemble-{parts[1]}-{imaging}"
        return name


def model_name(source: str, kind: str) -> str:
    """Name of a single-source model, e.g. ``clinical-baseline``."""
    return f"{source}-{kind}"


def ensemble_name(spec: EnsembleSpec) -> str:
    """Name of an ensemble, e.g. ``ensemble-longitudinal-dfimm`` (clinical + DF-imm)."""
    imaging = "+".join(s for s in spec.sources if s != "clinical")
    return f"ensemble-{spec.kind}-{imaging}"


def available_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    package = resources.files("icibenefit.training")
    return sorted(
        entry.name[len("recipe_") : -len(".yaml")]
        for entry in package.iterdir()
        if entry.name.startswith("recipe_") and entry.name.endswith(".yaml")
    )


def load_recipe(name: str) -> Recipe:
    """Load and validate the shipped recipe ``name``, or a recipe YAML file at path ``name``.

    Raises
    ------
    ConfigurationError
        When no such recipe exists or its YAML is invalid.
    """
    resource: Any = resources.files("icibenefit.training") / f"recipe_{name}.yaml"
    if name.endswith((".yaml", ".yml")):
        resource = Path(name)
    if not resource.is_file():
        raise ConfigurationError(f"unknown recipe {name!r}; available: {available_recipes()}")
    try:
        return Recipe.model_validate(yaml.safe_load(resource.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise ConfigurationError(f"invalid recipe {name!r}: {exc}") from None
