"""The delta clipping bounds training learns and the bundle stores for inference.

Inference clips a patient's delta features to these bounds
(:func:`icibenefit.pipeline.predictor.clip_delta`); only training learns them,
from the training patients' delta vectors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from icibenefit.pipeline.clinical_features import as_row
from icibenefit.pipeline.delta import DeltaClipper

#: Percentiles of the training delta vectors a delta feature is clipped to.
DELTA_QUANTILES = (1.0, 99.0)


def learn_delta_bounds(rows: Sequence[Mapping[str, float]]) -> dict[str, list[float]]:
    """Per-feature [1st, 99th] percentile bounds of training delta vectors (nan ignored)."""
    if not rows:
        return {}
    names = list(rows[0])
    clipper = DeltaClipper(*DELTA_QUANTILES).fit(np.array([as_row(row, names) for row in rows]))
    # Stored by name in the bundle manifest, so inference clips a vector built
    # from whatever features the patient has without relying on column order.
    return {
        name: [float(low), float(high)]
        for name, low, high in zip(names, clipper.lower_, clipper.upper_, strict=True)
        if not math.isnan(low)
    }
