"""Seed 2's deep radiomics: a 2.5D UNET trained to segment the tumour, features from its bottleneck.

Typical use (training; inference calls :func:`unet_features` with the bundle's network)::

    from icibenefit.training.unet import (
        UNetConfig, load_unet, train_unet, unet_features, unet_patch,
    )

    patches = [unet_patch(ct, mask, normalizer) for ct, mask in training_scans]
    state, history = train_unet(
        np.stack([p.image for p in patches]), np.stack([p.mask for p in patches]),
        UNetConfig(epochs=30), seed=0,
    )
    network = load_unet(state)
    features = unet_features(network, ct, mask, normalizer)   # {"unet000": ..., ...}
    writer.add_tensors(UNET_TENSORS, state)                   # safetensors in the bundle

Importing this package imports torch; import it inside functions on the
``icibenefit --help`` path.
"""

from icibenefit.training.unet.features import (
    FEATURE_PREFIX,
    bottleneck_features,
    feature_names,
    unet_features,
    unet_patch,
)
from icibenefit.training.unet.network import (
    INPUT_SHAPE,
    LAYER_TABLE,
    N_DEEP_FEATURES,
    UNet25D,
    load_unet,
)
from icibenefit.training.unet.train import (
    UNET_TENSORS,
    UNetConfig,
    UNetHistory,
    dice_bce_loss,
    train_unet,
    unet_manifest_entry,
)

__all__ = [
    "FEATURE_PREFIX",
    "INPUT_SHAPE",
    "LAYER_TABLE",
    "N_DEEP_FEATURES",
    "UNET_TENSORS",
    "UNet25D",
    "UNetConfig",
    "UNetHistory",
    "bottleneck_features",
    "dice_bce_loss",
    "feature_names",
    "load_unet",
    "train_unet",
    "unet_features",
    "unet_manifest_entry",
    "unet_patch",
]
