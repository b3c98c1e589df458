"""Pretraining, fine-tuning and storing the NoduleX-style CNN behind DF-imm.

Typical use by the training orchestration (all on CPU, seeded, deterministic)::

    from icibenefit.pipeline.deep import load_network, extract_deep_features, cnn_probability
    from icibenefit.training.cnn import (
        PretrainConfig, pretrain, rebase_input_normalisation, FineTuneConfig, fine_tune,
        cnn_manifest_entry, add_network,
    )

    pretrained = pretrain(PretrainConfig(epochs=3), seed=0)     # LIDC malignancy
    # or pretrain_cached(config, seed, settings.data_dir / "cache"): same result, reused
    print(pretrained.report.summary())                           # held-out AUC
    report = pretrained.report
    start = rebase_input_normalisation(                         # pretraining z-score ->
        pretrained.state_dict, (report.hu_mean, report.hu_std),  # the bundle normaliser's
        (normalizer.mean_, normalizer.std_),
    )
    weights, history = fine_tune(start, patches, pfs6, patient_ids, seed=0)
    model = load_network(weights)
    df_imm = extract_deep_features(model, patches)               # [n, 500]
    p_cnn = cnn_probability(model, baseline_patches)             # CNN-baseline
    add_network(writer, weights)                                 # safetensors in the bundle
    extra = {"cnn": cnn_manifest_entry(pretrained.report.as_dict(), history.as_dict())}

Importing this package imports torch; keep it out of ``icibenefit --help``'s
import path (import inside the command function).
"""

from icibenefit.training.cnn.finetune import (
    FineTuneConfig,
    fine_tune,
    freeze_for_fine_tuning,
    rebase_input_normalisation,
)
from icibenefit.training.cnn.loop import EpochRecord, LoopConfig, TrainingHistory
from icibenefit.training.cnn.pretrain import (
    PretrainConfig,
    PretrainReport,
    PretrainResult,
    pretrain,
    pretrain_cached,
    pretraining_source,
)
from icibenefit.training.cnn.weights import (
    CNN_TENSORS,
    add_network,
    cnn_manifest_entry,
    load_weights,
    network_from_bundle,
    save_weights,
)

__all__ = [
    "CNN_TENSORS",
    "EpochRecord",
    "FineTuneConfig",
    "LoopConfig",
    "PretrainConfig",
    "PretrainReport",
    "PretrainResult",
    "TrainingHistory",
    "add_network",
    "cnn_manifest_entry",
    "fine_tune",
    "freeze_for_fine_tuning",
    "load_weights",
    "network_from_bundle",
    "pretrain",
    "pretrain_cached",
    "pretraining_source",
    "rebase_input_normalisation",
    "save_weights",
]
