"""The intensity normalisation every imaging feature shares (METHOD.md "Imaging features").

HU are clipped to [-1000, 3050] and z-scored with a mean and standard deviation
learned once on the training CTs; the fitted :class:`IntensityNormalizer` is part
of the model bundle and is applied unchanged at inference, so a patient's image
is normalised the same way whatever else is in the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

HU_CLIP_MIN = -1000.0
HU_CLIP_MAX = 3050.0


class IntensityNormalizer(TransformerMixin, BaseEstimator):
    """Clip HU to ``[clip_min, clip_max]``, then z-score with training statistics.

    Parameters
    ----------
    clip_min, clip_max
        Clip bounds in HU (the paper's -1000 and 3050).

    Attributes
    ----------
    mean_, std_
        Mean and standard deviation of the clipped training intensities.
    n_voxels_seen_
        How many voxels the statistics were computed from.
    """

    def __init__(self, clip_min: float = HU_CLIP_MIN, clip_max: float = HU_CLIP_MAX) -> None:
        # scikit-learn's contract: store only; ``fit`` validates (so ``set_params`` is checked too).
        self.clip_min = clip_min
        self.clip_max = clip_max

    def fit(self, X: ArrayLike | Iterable[ArrayLike], y: object = None) -> IntensityNormalizer:
        """Learn mean and standard deviation of the clipped HU values.

        ``X`` is one array of HU values of any shape, or an iterable of them
        (e.g. a generator yielding one training CT at a time); the statistics
        are pooled over all voxels in float64 running sums, so CTs are never
        concatenated or held together.

        Raises
        ------
        ValueError
            When ``clip_min >= clip_max``, fewer than two voxels are given, or
            the clipped intensities are constant.
        """
        self._check_clip()
        # Iterated lazily: a generator of whole CTs is never held in memory at once.
        arrays: Iterable[ArrayLike] = [X] if isinstance(X, np.ndarray) else X  # type: ignore[assignment]
        count, total, squares = 0, 0.0, 0.0
        for array in arrays:
            values = np.clip(np.asarray(array, dtype=np.float64), self.clip_min, self.clip_max)
            count += values.size
            total += float(values.sum())
            squares += float(np.square(values).sum())
        if count < 2:
            raise ValueError("IntensityNormalizer needs at least two voxels to fit")
        mean = total / count
        variance = max(squares / count - mean * mean, 0.0)
        return self._learn(mean, float(np.sqrt(variance)), count)

    def statistics(self) -> dict[str, float | int]:
        """The fitted parameters as plain numbers, as a model bundle's manifest stores them.

        Keys ``clip_min``, ``clip_max``, ``mean``, ``std``, ``n_voxels``; JSON
        floats round-trip exactly, so :meth:`from_statistics` rebuilds a
        normaliser with bit-identical parameters.
        """
        check_is_fitted(self, ("mean_", "std_"))
        return {
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "mean": self.mean_,
            "std": self.std_,
            "n_voxels": self.n_voxels_seen_,
        }

    @classmethod
    def from_statistics(cls, statistics: Mapping[str, float | int]) -> IntensityNormalizer:
        """The fitted normaliser whose parameters are ``statistics`` (see :meth:`statistics`).

        This is how inference restores the normaliser of a model bundle: the
        bundle keeps the HU statistics as numbers in its manifest (auditable, no
        extra trusted type to unpickle), and they are checked by the same rules
        as in :meth:`fit` before being set.

        Raises
        ------
        KeyError
            When a key is missing.
        ValueError
            When ``clip_min >= clip_max`` or the stored ``std`` is not positive.
        """
        normalizer = cls(float(statistics["clip_min"]), float(statistics["clip_max"]))
        normalizer._check_clip()
        return normalizer._learn(
            float(statistics["mean"]), float(statistics["std"]), int(statistics["n_voxels"])
        )

    def _check_clip(self) -> None:
        if not self.clip_min < self.clip_max:
            raise ValueError(f"clip_min ({self.clip_min}) must be below clip_max ({self.clip_max})")

    def _learn(self, mean: float, std: float, n_voxels: int) -> IntensityNormalizer:
        """Set the fitted attributes, refusing statistics that cannot z-score."""
        if not std > 0.0:
            raise ValueError("training intensities are constant: cannot z-score")
        self.mean_ = mean
        self.std_ = std
        self.n_voxels_seen_ = n_voxels
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Return clipped, z-scored float32 values of the same shape as ``X``."""
        check_is_fitted(self, ("mean_", "std_"))
        values = np.clip(np.asarray(X, dtype=np.float32), self.clip_min, self.clip_max)
        return ((values - np.float32(self.mean_)) / np.float32(self.std_)).astype(np.float32)

    def transform_image(self, image: sitk.Image) -> sitk.Image:
        """Normalise a SimpleITK image, keeping its geometry."""
        out = sitk.GetImageFromArray(self.transform(sitk.GetArrayViewFromImage(image)))
        out.CopyInformation(image)
        return out
