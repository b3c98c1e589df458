"""The manifest of a model bundle: what was trained, on what, and how to use it.

The manifest is the bundle's contract with the inference pipeline and with the
people who audit a model: everything a prediction depends on that is not a
fitted object (feature order, preprocessing statistics, the pyradiomics
parameters, the robust feature list) lives here, together with the checksums
that make a modified bundle refuse to load.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MANIFEST_SCHEMA_VERSION = 1

#: Names of bundle members (estimators, tensors, JSON) become file names, so they
#: are restricted to characters that are safe on every file system.
MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")

#: Libraries whose versions decide whether a fitted object behaves the same after loading.
TRACKED_LIBRARIES = (
    "icibenefit",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "imbalanced-learn",
    "skops",
    "safetensors",
    "torch",
    "pyradiomics",
    "SimpleITK",
    "lifelines",
)


class IntendedUse(BaseModel):
    """Who may use the model for what; ``demonstration`` marks synthetic-data models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    demonstration: bool = Field(
        ..., description="True for a model trained on synthetic data: not for clinical use."
    )
    statement: str = Field(
        "",
        description="Human-readable intended use, repeated in the SR and the RiskAssessment.",
    )


class BundleManifest(BaseModel):
    """Everything about a bundle except its fitted objects.

    ``recipe`` and ``extra`` are free-form on purpose: training recipes (seed 1,
    seed 2) add settings there without a schema change here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str = Field(..., min_length=1)
    version: str = Field(..., min_length=1)
    created: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    training_data_fingerprint: str = Field(
        ..., description="Hash of the training data, so a bundle can be traced to its cohort."
    )
    endpoints: list[str] = Field(default_factory=list)
    feature_schema: dict[str, list[str]] = Field(
        default_factory=dict, description="Model name -> ordered input feature names."
    )
    preprocessing: dict[str, Any] = Field(
        default_factory=dict,
        description="Statistics learned on the training set (HU z-score, delta bounds, ...).",
    )
    pyradiomics_params: dict[str, Any] = Field(default_factory=dict)
    robust_features: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    intended_use: IntendedUse
    library_versions: dict[str, str] = Field(default_factory=lambda: library_versions())
    recipe: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(
        default_factory=dict, description="Relative path -> sha256 of every bundle file."
    )

    @field_validator("name", "version")
    @classmethod
    def _safe_identifier(cls, value: str) -> str:
        # name and version form the folder name of the bundle in a model store.
        if not MEMBER_NAME.match(value):
            raise ValueError("use letters, digits and _.+- only (at most 128 characters)")
        return value

    @property
    def bundle_id(self) -> str:
        """The identifier of the bundle in a model store: ``<name>-<version>``."""
        return f"{self.name}-{self.version}"


def library_versions(libraries: Iterable[str] = TRACKED_LIBRARIES) -> dict[str, str]:
    """Versions of Python and of ``libraries`` (absent ones are skipped).

    The bundle manifest records those of :data:`TRACKED_LIBRARIES`, on which a
    fitted bundle depends; training's feature cache keys its entries on those
    of the libraries that compute features.
    """
    versions = {"python": platform.python_version()}
    for library in libraries:
        try:
            versions[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
