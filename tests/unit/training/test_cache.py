"""The feature cache: keys, hits, misses, corrupt entries."""

from __future__ import annotations

import numpy as np

from icibenefit.training.cache import FeatureCache, cache_key


def test_key_depends_on_the_instance_set_and_parameters_only() -> None:
    params = {"binWidth": 25, "normalizer": {"mean": -300.0, "std": 400.0}}
    key = cache_key("radiomics", ["b", "a", "a"], params)
    assert key == cache_key("radiomics", ["a", "b"], dict(reversed(params.items())))
    assert key != cache_key("radiomics", ["a", "b", "c"], params)
    assert key != cache_key("radiomics", ["a", "b"], {**params, "binWidth": 10})
    assert key != cache_key("patch", ["a", "b"], params)


def test_features_are_computed_once_and_returned_identically(tmp_path) -> None:
    cache = FeatureCache(tmp_path)
    calls = []

    def compute() -> dict[str, float]:
        calls.append(1)
        return {"z": 0.1 + 0.2, "a": 1e-300, "m": float("nan")}

    first = cache.features("radiomics", ["a"], {"p": 1}, compute)
    second = FeatureCache(tmp_path).features("radiomics", ["a"], {"p": 1}, compute)
    assert len(calls) == 1
    assert list(second) == ["z", "a", "m"]
    assert second["z"] == 0.1 + 0.2  # bit-identical
    assert second["a"] == first["a"]
    assert np.isnan(second["m"])
    cache.features("radiomics", ["a"], {"p": 2}, compute)
    assert len(calls) == 2


def test_arrays_round_trip_and_corrupt_entries_are_recomputed(tmp_path) -> None:
    cache = FeatureCache(tmp_path)
    patch = np.random.default_rng(0).normal(size=(5, 47, 47)).astype(np.float32)
    out = cache.array("patch", ["a"], {}, lambda: patch)
    again = cache.array("patch", ["a"], {}, lambda: np.zeros(1))
    assert again.dtype == np.float32
    assert np.array_equal(again, patch)
    assert np.array_equal(out, patch)
    for entry in tmp_path.rglob("*.npz"):
        entry.write_bytes(b"garbage")
    assert np.array_equal(cache.array("patch", ["a"], {}, lambda: np.ones(2)), np.ones(2))
    assert not list(tmp_path.rglob(".tmp-*"))
