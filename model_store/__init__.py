"""Versioned, integrity-checked model bundles.

A bundle is a folder with a checksummed ``manifest.json``, fitted estimators
saved with skops and torch weights saved with safetensors
(:mod:`icibenefit.model_store.bundle`). A store keeps bundles side by side and
points at the active one (:mod:`icibenefit.model_store.store`).
"""

from icibenefit.model_store.bundle import (
    BundleWriter,
    ModelBundle,
    load_bundle,
    read_manifest,
    verify_bundle,
)
from icibenefit.model_store.manifest import BundleManifest, IntendedUse
from icibenefit.model_store.store import ModelStore, configured_bundle_path
from icibenefit.model_store.trusted import TRUSTED_TYPES

__all__ = [
    "TRUSTED_TYPES",
    "BundleManifest",
    "BundleWriter",
    "IntendedUse",
    "ModelBundle",
    "ModelStore",
    "configured_bundle_path",
    "load_bundle",
    "read_manifest",
    "verify_bundle",
]
