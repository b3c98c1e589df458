"""A stand-in for the trainer's TrainingData: labels and design matrices without DICOM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


class FakeData:
    """Patients ``p00``...; column 0 of every matrix is the patient's number (for leak checks).

    ``missing`` lists, per source, patients without a vector (e.g. no usable CT).
    """

    def __init__(
        self,
        labels: dict[str, dict[str, int]],
        sources: Sequence[str],
        n_features: int = 4,
        missing: dict[str, set[str]] | None = None,
        seed: int = 0,
    ) -> None:
        self._labels = labels
        self.sources = tuple(sources)
        self.missing = missing or {}
        ids = sorted({pid for per in labels.values() for pid in per})
        rng = np.random.default_rng(seed)
        self.rows = {pid: rng.normal(size=n_features) for pid in ids}
        self.vectors: dict[tuple[str, str], Any] = {(s, "baseline"): {} for s in self.sources}

    def labels(self, endpoint: str) -> dict[str, int]:
        return dict(self._labels[endpoint])

    def matrix(
        self, source: str, kind: str, ids: Sequence[str]
    ) -> tuple[list[str], NDArray[np.float64]]:
        kept = [pid for pid in ids if pid not in self.missing.get(source, set())]
        rows = [np.concatenate([[float(pid[1:])], self.rows[pid]]) for pid in kept]
        return kept, np.array(rows).reshape(len(kept), -1)


def balanced_labels(n: int, positives: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, positives, replace=False)] = 1
    return {f"p{i:02d}": int(v) for i, v in enumerate(y)}
