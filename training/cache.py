"""Feature extraction cache keyed by (input instance set, parameters).

Radiomics and CNN patches take seconds per timepoint; training revisits every
CT at each run and inference re-runs when a study gains instances.  The cache
key is the SHA-256 of a canonical JSON of the feature kind, the *sorted* set
of SOP Instance UIDs that went in (CT images and segmentation), the caller's
parameters (radiomics parameters, normaliser statistics, feature list...) and
the versions of the libraries that compute the values, so a changed input,
setting or library never returns a stale value.

Feature dicts are stored as JSON (Python's float repr round-trips exactly, so
a cached value is bit-identical to a computed one, and order is kept), arrays
as ``.npz``.  Writes go to a temporary file that is renamed into place, so a
crash never leaves a half-written entry; an unreadable entry counts as a miss.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from icibenefit.model_store.manifest import library_versions

log = logging.getLogger(__name__)

#: Bump when the meaning of cached values changes without a parameter change.
CACHE_SCHEMA = 1
_VERSIONED = ("pyradiomics", "SimpleITK", "numpy", "pydicom", "highdicom", "torch")


@functools.cache
def cached_library_versions() -> dict[str, str]:
    """Versions of the libraries whose output the cache stores (read once per process).

    A missing library counts as ``"absent"``, so installing it changes every key.
    """
    versions = library_versions(_VERSIONED)
    return {name: versions.get(name, "absent") for name in _VERSIONED}


def cache_key(kind: str, instance_uids: Iterable[str], parameters: Mapping[str, Any]) -> str:
    """The hex SHA-256 identifying one extraction (order of ``instance_uids`` is irrelevant)."""
    payload = {
        "schema": CACHE_SCHEMA,
        "kind": kind,
        "instances": sorted(set(instance_uids)),
        "parameters": parameters,
        "libraries": cached_library_versions(),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class FeatureCache:
    """A directory of cached feature dicts (JSON) and arrays (npz)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def features(
        self,
        kind: str,
        instance_uids: Iterable[str],
        parameters: Mapping[str, Any],
        compute: Callable[[], Mapping[str, float]],
    ) -> dict[str, float]:
        """Return the cached feature dict, computing and storing it on a miss."""
        path = self._path(cache_key(kind, instance_uids, parameters), ".json")
        try:
            return {
                str(k): float(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()
            }
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("unreadable cache entry %s (%s): recomputing", path.name, exc)
        values = {str(k): float(v) for k, v in compute().items()}
        self._write(path, json.dumps(values).encode())
        return values

    def array(
        self,
        kind: str,
        instance_uids: Iterable[str],
        parameters: Mapping[str, Any],
        compute: Callable[[], np.ndarray],
    ) -> np.ndarray:
        """Return the cached array, computing and storing it on a miss."""
        path = self._path(cache_key(kind, instance_uids, parameters), ".npz")
        try:
            with np.load(path, allow_pickle=False) as stored:
                return np.asarray(stored["array"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError) as exc:
            log.warning("unreadable cache entry %s (%s): recomputing", path.name, exc)
        array = np.asarray(compute())
        with tempfile.SpooledTemporaryFile() as buffer:
            np.savez(buffer, array=array)
            buffer.seek(0)
            self._write(path, buffer.read())
        return array

    def _path(self, key: str, suffix: str) -> Path:
        return self.directory / key[:2] / f"{key}{suffix}"

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
