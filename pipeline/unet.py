"""The 2.5D UNET behind seed 2's deep radiomics, its patch geometry and its deep features.

Seed 2 extracts "deep radiomic features" with a UNET encoder-decoder trained
to segment the tumour; it gives no layer table, so this module fixes one and
records it as data (:data:`LAYER_TABLE`) for the bundle manifest.

Choices
-------
* 2.5D rather than 3D: the input is 5 axial slices as channels, like the
  DF-imm CNN (METHOD.md), and the output is the tumour mask of the same 5
  slices (5 sigmoid channels).  A 3D UNET on 5 slices would pool the slice
  axis away after one level, and 2D convolutions are 3-5 times cheaper on CPU.
* Patch: 96 x 96 mm around the tumour centroid resampled to 32 x 32 pixels
  (3 mm per pixel) on 5 native slices, sampled by
  :func:`icibenefit.pipeline.patches.tumour_patch` (the CNN's patch function,
  other size) and normalised with the bundle's HU statistics.  32 is
  divisible by 2^3, so three poolings give a 4 x 4 bottleneck (24 mm cells,
  tumour scale) and the decoder restores the input size exactly.  3 mm
  pixels are finer than the small synthetic CTs (5.5 mm) and coarser than a
  clinical reconstruction (0.7 mm): enough to outline a tumour of >= 1 cm.
* Channels 8-16-32 in the encoder, 64 in the bottleneck: 64 deep
  features.  The width is set by CPU cost (one training epoch over ~100
  patches must take seconds on 2 busy cores; a 16-32-64-128 net took 10x
  longer) and by the cohort sizes (tens to hundreds of patients: 64 features
  are already many next to the clinical variables).  Each block is two
  3x3 convolutions, each followed by GroupNorm (4 groups) and ReLU.
  GroupNorm rather than BatchNorm: its output depends neither on the batch
  nor on running statistics, so the deep features of a patient are the same
  whether computed alone at inference or in a batch at training.
* Deep features: the bottleneck block's output (post-ReLU) averaged over its
  4 x 4 positions, one value per channel (global average pooling).

:func:`unet_patch` samples the network's input (and the mask it learns) from a
CT and its tumour mask; :func:`unet_features` turns one timepoint into named
deep features.  Training calls :func:`unet_patch` to build the segmentation
training set and :func:`unet_features` for every cohort timepoint;
:func:`icibenefit.pipeline.inference.timepoint_features` calls
:func:`unet_features` for a new patient, so both sides compute the same numbers.

This module imports torch at import time: import it lazily (inside functions)
from anything on the path of ``icibenefit --help`` or the service's start-up.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import SimpleITK as sitk
import torch
from numpy.typing import NDArray
from torch import nn

from icibenefit.pipeline.normalization import IntensityNormalizer
from icibenefit.pipeline.patches import TumourPatch, tumour_patch
from icibenefit.pipeline.torch_threads import torch_threads

N_SLICES: Final = 5
PATCH_PIXELS: Final = 32
PATCH_SIDE_MM: Final = 96.0
ENCODER_CHANNELS: Final = (8, 16, 32)
BOTTLENECK_CHANNELS: Final = 64
GROUPS: Final = 4
INPUT_SHAPE: Final = (N_SLICES, PATCH_PIXELS, PATCH_PIXELS)
N_DEEP_FEATURES: Final = BOTTLENECK_CHANNELS


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.GroupNorm(GROUPS, out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        nn.GroupNorm(GROUPS, out_channels),
        nn.ReLU(),
    )


class UNet25D(nn.Module):
    """Encoder-decoder with skip connections; ``forward`` returns mask logits ``[n, 5, 32, 32]``."""

    def __init__(self) -> None:
        super().__init__()
        channels = (N_SLICES, *ENCODER_CHANNELS)
        self.encoders = nn.ModuleList(_block(a, b) for a, b in itertools.pairwise(channels))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(ENCODER_CHANNELS[-1], BOTTLENECK_CHANNELS)
        ups = (BOTTLENECK_CHANNELS, *reversed(ENCODER_CHANNELS))
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(a, b, kernel_size=2, stride=2) for a, b in itertools.pairwise(ups)
        )
        self.decoders = nn.ModuleList(_block(2 * c, c) for c in reversed(ENCODER_CHANNELS))
        self.head = nn.Conv2d(ENCODER_CHANNELS[0], N_SLICES, kernel_size=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Bottleneck activations ``[n, 64, 4, 4]`` and the skip tensors of each level."""
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        return self.bottleneck(x), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mask logits of the 5 input slices (decoder over the encoder's skips)."""
        bottom, skips = self.encode(x)
        for upsample, decoder, skip in zip(
            self.upsamplers, self.decoders, reversed(skips), strict=True
        ):
            bottom = decoder(torch.cat([upsample(bottom), skip], dim=1))
        logits: torch.Tensor = self.head(bottom)
        return logits


#: The architecture as data (JSON values), for the bundle manifest.
LAYER_TABLE: Final[list[dict[str, Any]]] = [
    {"name": "input", "shape": list(INPUT_SHAPE)},
    *(
        {
            "name": f"encoder{i + 1}",
            "kind": "2 x (Conv3x3, GroupNorm, ReLU) + MaxPool2",
            "out_channels": c,
            "output_shape": [c, PATCH_PIXELS >> i, PATCH_PIXELS >> i],
        }
        for i, c in enumerate(ENCODER_CHANNELS)
    ),
    {
        "name": "bottleneck",
        "kind": "2 x (Conv3x3, GroupNorm, ReLU); deep features = global average pool",
        "out_channels": BOTTLENECK_CHANNELS,
        "output_shape": [BOTTLENECK_CHANNELS, PATCH_PIXELS >> 3, PATCH_PIXELS >> 3],
    },
    *(
        {
            "name": f"decoder{i + 1}",
            "kind": "ConvTranspose2x2 + skip concat + 2 x (Conv3x3, GroupNorm, ReLU)",
            "out_channels": c,
        }
        for i, c in enumerate(reversed(ENCODER_CHANNELS))
    ),
    {"name": "head", "kind": "Conv1x1, sigmoid per slice", "out_channels": N_SLICES},
]


def load_unet(state_dict: Mapping[str, torch.Tensor]) -> UNet25D:
    """A network with these weights, in eval mode (strict: every tensor must match)."""
    network = UNet25D()
    network.load_state_dict(dict(state_dict), strict=True)
    network.eval()
    return network


#: Prefix of the deep feature names (``unet000`` ... ``unet063``).
FEATURE_PREFIX = "unet"


def unet_patch(ct: sitk.Image, mask: sitk.Image, normalizer: IntensityNormalizer) -> TumourPatch:
    """The UNET input patch (5 x 32 x 32, 3 mm pixels) of the tumour in ``mask``."""
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
    with torch_threads(1):
        values = bottleneck_features(network, patch)[0]
    return dict(zip(feature_names(values.size), map(float, values), strict=True))
