"""UNET patches and deep features: the one function pair training and inference share.

:func:`unet_patch` samples the network's input (and the mask it learns) from a
CT and its tumour mask; :func:`unet_features` turns one timepoint into named
deep features.  Training calls :func:`unet_patch` to build the segmentation
training set and :func:`unet_features` for every cohort timepoint;
:func:`icibenefit.pipeline.inference.timepoint_features` calls
:func:`unet_features` for a new patient, so both sides compute the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray

from icibenefit.training.unet.network import (
    N_DEEP_FEATURES,
    N_SLICES,
    PATCH_PIXELS,
    PATCH_SIDE_MM,
    UNet25D,
)

if TYPE_CHECKING:
    import SimpleITK as sitk

    from icibenefit.pipeline.normalization import IntensityNormalizer
    from icibenefit.pipeline.patches import TumourPatch

#: Prefix of the deep feature names (``unet000`` ... ``unet063``).
FEATURE_PREFIX = "unet"


def unet_patch(ct: sitk.Image, mask: sitk.Image, normalizer: IntensityNormalizer) -> TumourPatch:
    """The UNET input patch (5 x 32 x 32, 3 mm pixels) of the tumour in ``mask``."""
    from icibenefit.pipeline.patches import tumour_patch

    return tumour_patch(
        ct, mask, normalizer, side_mm=PATCH_SIDE_MM, pixels=PATCH_PIXELS, slices=N_SLICES
    )


def bottleneck_features(
    network: UNet25D, patches: NDArray[np.floating], batch_size: int = 32
) -> NDArray[np.float64]:
    """Globally average-pooled bottleneck activations ``[n, 64]`` of patches ``[n, 5, 32, 32]``.

    Run in eval mode without gradients; GroupNorm makes each row independent
    of the others in the batch.
    """
    x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    network.eval()
    with torch.no_grad():
        pooled = [network.encode(chunk)[0].mean(dim=(2, 3)) for chunk in torch.split(x, batch_size)]
    if not pooled:
        return np.zeros((0, N_DEEP_FEATURES), dtype=np.float64)
    return torch.cat(pooled).double().numpy()


def feature_names(n: int) -> list[str]:
    """Names of ``n`` deep features, in bottleneck channel order."""
    return [f"{FEATURE_PREFIX}{i:03d}" for i in range(n)]


def unet_features(
    network: UNet25D, ct: sitk.Image, mask: sitk.Image, normalizer: IntensityNormalizer
) -> dict[str, float]:
    """Named deep features of one CT timepoint (training and inference call this).

    One patch on one torch thread: the convolution sums then run in one fixed
    order, so a training worker and the service compute identical values
    (the DF-imm CNN does the same).
    """
    patch = unet_patch(ct, mask, normalizer).image[None]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        values = bottleneck_features(network, patch)[0]
    finally:
        torch.set_num_threads(threads)
    return dict(zip(feature_names(values.size), map(float, values), strict=True))
