"""Training seed 2's UNET, whose bottleneck gives the deep radiomics.

The network and its feature extraction are inference's
(:mod:`icibenefit.pipeline.unet`); this package trains it.  Typical use::

    from icibenefit.pipeline.unet import load_unet, unet_features, unet_patch
    from icibenefit.training.unet import UNetConfig, train_unet

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

from icibenefit.training.unet.train import (
    UNET_TENSORS,
    UNetConfig,
    UNetHistory,
    dice_bce_loss,
    train_unet,
    unet_manifest_entry,
)

__all__ = [
    "UNET_TENSORS",
    "UNetConfig",
    "UNetHistory",
    "dice_bce_loss",
    "train_unet",
    "unet_manifest_entry",
]
