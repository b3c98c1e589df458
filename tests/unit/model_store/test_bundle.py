from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icibenefit.errors import ModelBundleError
from icibenefit.model_store import BundleWriter, load_bundle


def test_round_trip_predicts_identically(
    make_bundle: Callable[..., Path], fitted_pipeline: tuple[Any, np.ndarray]
) -> None:
    import torch

    pipeline, X_new = fitted_pipeline
    bundle = load_bundle(make_bundle())

    np.testing.assert_array_equal(
        bundle.estimator("pfs6-clinical").predict_proba(X_new), pipeline.predict_proba(X_new)
    )
    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 2).state_dict()
    loaded = bundle.tensors("cnn")
    assert set(loaded) == set(reference)
    for key, value in reference.items():
        assert torch.equal(loaded[key], value)
    assert bundle.json("thresholds") == {"pfs6": 0.5}
    assert bundle.manifest.intended_use.demonstration is True
    assert bundle.manifest.feature_schema["pfs6-clinical"][0] == "f0"
    assert "scikit-learn" in bundle.manifest.library_versions
    assert bundle.names("estimators") == ["pfs6-clinical"]


def _every_file(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_one_changed_byte_in_any_file_refuses_to_load(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle()
    files = _every_file(root)
    assert {p.name for p in files} >= {
        "manifest.json",
        "manifest.sha256",
        "pfs6-clinical.skops",
        "cnn.safetensors",
        "thresholds.json",
    }
    for path in files:
        original = path.read_bytes()
        for position in (0, len(original) // 2, len(original) - 1):
            changed = bytearray(original)
            changed[position] ^= 0x01
            path.write_bytes(bytes(changed))
            with pytest.raises(ModelBundleError) as info:
                load_bundle(root)
            # The error names the file that failed (the manifest digest covers both manifest files).
            rel = path.relative_to(root).as_posix()
            expected = "manifest.json" if path.name.startswith("manifest") else rel
            assert expected in str(info.value)
            path.write_bytes(original)
    load_bundle(root)  # restored: loads again


def test_missing_file_refuses_to_load(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle()
    (root / "tensors" / "cnn.safetensors").unlink()
    with pytest.raises(ModelBundleError, match=r"missing: tensors/cnn\.safetensors"):
        load_bundle(root)


def test_tampering_after_load_is_caught_on_read(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle()
    bundle = load_bundle(root)
    (root / "json" / "thresholds.json").write_text('{"pfs6": 0.1}')
    with pytest.raises(ModelBundleError, match=r"json/thresholds\.json"):
        bundle.json("thresholds")


def test_writer_refuses_types_outside_allow_list(tmp_path: Path) -> None:
    from sklearn.preprocessing import FunctionTransformer

    writer = BundleWriter(
        tmp_path / "b",
        name="x",
        version="1",
        training_data_fingerprint="f",
        intended_use={"demonstration": True},
    )
    with pytest.raises(ModelBundleError, match=r"allow-list.*posix\.system"):
        writer.add_estimator("bad", FunctionTransformer(os.system))
    assert not (tmp_path / "b").exists()


def test_loader_refuses_untrusted_types_even_with_valid_checksums(
    make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    """A bundle built elsewhere with a foreign type (checksums recomputed) still does not load."""
    import hashlib

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    root = make_bundle()
    rel = "estimators/pfs6-clinical.skops"
    data = sio.dumps(FunctionTransformer(os.system))  # what a malicious bundle would carry
    (root / rel).write_bytes(data)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    manifest_bytes = json.dumps(manifest).encode()
    (root / "manifest.json").write_bytes(manifest_bytes)
    (root / "manifest.sha256").write_text(hashlib.sha256(manifest_bytes).hexdigest() + "\n")
    bundle = load_bundle(root)
    with pytest.raises(ModelBundleError, match=r"posix\.system"):
        bundle.estimator("pfs6-clinical")


def test_invalid_manifest_fields_fail_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ModelBundleError, match="intended_use"):
        BundleWriter(tmp_path / "b", name="x", version="1", training_data_fingerprint="f")
    with pytest.raises(ModelBundleError, match="version"):
        BundleWriter(
            tmp_path / "b",
            name="x",
            version="../1",
            training_data_fingerprint="f",
            intended_use={"demonstration": True},
        )


def test_existing_directory_is_never_overwritten(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle()
    with pytest.raises(ModelBundleError, match="already exists"):
        make_bundle(directory=root)


def test_unknown_member_is_a_clear_error(make_bundle: Callable[..., Path]) -> None:
    bundle = load_bundle(make_bundle())
    with pytest.raises(ModelBundleError, match=r"no member estimators/pfs9\.skops"):
        bundle.estimator("pfs9")


def test_project_transformers_are_allow_listed(tmp_path: Path) -> None:
    """The training pipeline shape (KMeansImputer first) loads without extra_trusted."""
    from imblearn.pipeline import Pipeline
    from sklearn.ensemble import RandomForestClassifier

    from icibenefit.pipeline.clinical_features import KMeansImputer

    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    y = rng.integers(0, 2, 40)
    pipeline = Pipeline(
        [("impute", KMeansImputer(n_clusters=3)), ("rf", RandomForestClassifier(5, random_state=0))]
    ).fit(X, y)
    writer = BundleWriter(
        tmp_path / "b",
        name="x",
        version="1",
        training_data_fingerprint="f",
        intended_use={"demonstration": True},
    )
    writer.add_estimator("m", pipeline)
    loaded = load_bundle(writer.write()).estimator("m")
    np.testing.assert_array_equal(loaded.predict_proba(X), pipeline.predict_proba(X))
