"""Training loop, fine-tuning, pretraining and storing the CNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from icibenefit.errors import TrainingError
from icibenefit.model_store import BundleWriter, load_bundle
from icibenefit.pipeline import deep
from icibenefit.training import cnn
from icibenefit.training.cnn.finetune import validation_split
from icibenefit.training.cnn.loop import augment, train_network


def _toy_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 has a bright blob at the centre, class 0 none: easy to learn."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, size=(n, 5, 47, 47)).astype(np.float32)
    y = np.arange(n) % 2
    yy, xx = np.mgrid[:47, :47]
    blob = np.exp(-((yy - 23) ** 2 + (xx - 23) ** 2) / 30.0).astype(np.float32)
    x[y == 1] += 2 * blob
    return x, y


def _fast(**overrides: object) -> cnn.LoopConfig:
    settings: dict = {"epochs": 2, "batch_size": 8, "num_threads": 1, "progress": False}
    settings.update(overrides)
    return cnn.LoopConfig(**settings)


def test_loss_falls_when_overfitting_a_tiny_set() -> None:
    x, y = _toy_set(16, seed=0)
    model = deep.build_network(seed=0)
    history = train_network(model, (x, y), (x, y), _fast(epochs=8, augment=False), seed=0)
    losses = [record.train_loss for record in history.epochs]
    assert losses[-1] < 0.5 * losses[0]
    assert history.epochs[-1].validation_auc == 1.0
    assert model.training is False


def test_same_seed_gives_identical_weights_and_outputs() -> None:
    x, y = _toy_set(12, seed=1)
    probe = _toy_set(4, seed=2)[0]
    runs = []
    for _ in range(2):
        model = deep.build_network(seed=3)
        train_network(model, (x, y), None, _fast(), seed=4)
        runs.append((model.state_dict(), deep.extract_deep_features(model, probe)))
    (state_a, out_a), (state_b, out_b) = runs
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    np.testing.assert_array_equal(out_a, out_b)
    other = deep.build_network(seed=3)
    train_network(other, (x, y), None, _fast(), seed=5)
    assert not torch.equal(other.conv1.weight, state_a["conv1.weight"])


def test_training_leaves_the_callers_torch_state_alone() -> None:
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    x, y = _toy_set(8, seed=0)
    train_network(deep.build_network(seed=0), (x, y), None, _fast(epochs=1), seed=0)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert not torch.are_deterministic_algorithms_enabled()


def test_augmentation_rotates_and_shifts_but_keeps_intensities() -> None:
    x = torch.zeros(4, 5, 47, 47)
    x[:, :, 20:27, 10:14] = 1.0  # off-centre bar
    out = augment(x, torch.Generator().manual_seed(0), max_shift_px=3)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)
    assert float(out.max()) <= 1.0 + 1e-6
    assert float(out.min()) >= -1e-6
    # all 5 slices of a patch get the same transform
    assert torch.allclose(out[:, 0], out[:, 4])


def test_early_stopping_keeps_the_best_validation_epoch() -> None:
    x, y = _toy_set(16, seed=3)
    xv, yv = _toy_set(8, seed=4)
    yv = 1 - yv  # validation labels contradict training: its loss rises as training fits
    model = deep.build_network(seed=0)
    history = train_network(
        model, (x, y), (xv, yv), _fast(epochs=12, patience=2, augment=False), seed=0
    )
    best = min(history.epochs, key=lambda r: r.validation_loss or np.inf)
    assert history.best_epoch == best.epoch
    assert history.stopped_early
    assert len(history.epochs) < 12
    # the restored weights are those of the best epoch
    with torch.no_grad():
        loss_now = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(xv)), torch.from_numpy(yv), weight=torch.tensor([1.0, 1.0])
        )
    assert float(loss_now) == pytest.approx(best.validation_loss, rel=1e-4)


def test_fine_tuning_trains_only_the_last_two_conv_layers_and_classifier() -> None:
    x, y = _toy_set(40, seed=5)
    groups = np.repeat(np.arange(20), 2)  # two tumours per patient
    y = np.repeat(np.arange(20) % 2, 2)
    x[y == 1] += 0.5
    start = deep.build_network(seed=6).state_dict()
    config = cnn.FineTuneConfig(
        max_epochs=2, patience=2, batch_size=8, num_threads=1, progress=False
    )
    tuned, history = cnn.fine_tune(start, x, y, groups, seed=0, config=config)
    for name in start:
        changed = not torch.equal(start[name], tuned[name])
        assert changed == (name.split(".")[0] in cnn.finetune.TRAINABLE_MODULES), name
    assert 1 <= len(history.epochs) <= 2
    assert history.epochs[0].validation_loss is not None
    again, _ = cnn.fine_tune(start, x, y, groups, seed=0, config=config)
    assert all(torch.equal(tuned[k], again[k]) for k in tuned)


def test_rebased_network_sees_cohort_normalised_patches_like_pretraining_ones() -> None:
    model = deep.build_network(seed=11)
    hu = np.random.default_rng(0).uniform(-1000, 200, size=(3, 5, 47, 47)).astype(np.float32)
    pre, cohort = (-820.0, 210.0), (-480.0, 460.0)
    rebased = deep.load_network(cnn.rebase_input_normalisation(model.state_dict(), pre, cohort))
    with torch.no_grad():
        expected = model.conv1(torch.from_numpy((hu - pre[0]) / pre[1]))
        got = rebased.conv1(torch.from_numpy((hu - cohort[0]) / cohort[1]))
    # identical away from the zero-padded 2-pixel border
    torch.testing.assert_close(
        got[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2], rtol=1e-4, atol=1e-3
    )
    assert torch.equal(rebased.conv2.weight, model.conv2.weight)


def test_validation_split_keeps_patients_whole_and_both_classes() -> None:
    labels = np.repeat(np.arange(30) % 2, 3)
    groups = np.repeat(np.arange(30), 3)
    train_idx, val_idx = validation_split(labels, groups, 0.2, seed=0)
    assert not set(groups[train_idx]) & set(groups[val_idx])
    assert set(labels[val_idx]) == {0, 1}
    assert len(train_idx) + len(val_idx) == 90
    with pytest.raises(TrainingError, match="patients of each class"):
        validation_split(labels[:9], groups[:9], 0.2, seed=0)


def test_safetensors_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = deep.build_network(seed=8)
    probe = _toy_set(6, seed=9)[0]
    path = cnn.save_weights(model.state_dict(), tmp_path / "w.safetensors")
    restored = deep.load_network(cnn.load_weights(path))
    np.testing.assert_array_equal(
        deep.cnn_probability(model, probe), deep.cnn_probability(restored, probe)
    )
    writer = BundleWriter(
        tmp_path / "bundle",
        name="cnn-test",
        version="1",
        training_data_fingerprint="toy",
        intended_use={"demonstration": True},
        extra={"cnn": cnn.cnn_manifest_entry()},
    )
    cnn.add_network(writer, model.state_dict())
    bundle = load_bundle(writer.write())
    from_bundle = cnn.network_from_bundle(bundle)
    np.testing.assert_array_equal(
        deep.extract_deep_features(model, probe), deep.extract_deep_features(from_bundle, probe)
    )
    table = bundle.manifest.extra["cnn"]["layer_table"]
    assert [row["name"] for row in table] == [row["name"] for row in deep.LAYER_TABLE]


def test_pretraining_on_rendered_lidc_nodules_reports_a_held_out_auc() -> None:
    config = cnn.PretrainConfig(
        epochs=1,
        max_scans=60,
        max_nodules=40,
        annotations_per_nodule=1,
        batch_size=16,
        num_threads=1,
        progress=False,
    )
    result = cnn.pretrain(config, seed=0)
    report = result.report
    assert report.source == "rendered"
    assert report.n_nodules == 40
    assert report.n_train_patches + report.n_held_out_patches == 40
    assert 0.0 <= report.held_out_auc <= 1.0
    assert "held-out AUC" in report.summary()
    assert set(result.state_dict) == set(deep.build_network().state_dict())
    assert report.as_dict()["history"]["epochs"][0]["epoch"] == 1


def test_cached_pretraining_returns_the_stored_result(tmp_path: Path) -> None:
    config = cnn.PretrainConfig(
        epochs=1,
        max_scans=60,
        max_nodules=30,
        annotations_per_nodule=1,
        batch_size=16,
        num_threads=1,
        progress=False,
    )
    first = cnn.pretrain_cached(config, 0, tmp_path)
    assert len(list(tmp_path.glob("pretrained-*.safetensors"))) == 1
    second = cnn.pretrain_cached(config, 0, tmp_path)
    assert second.report == first.report
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    cnn.pretrain_cached(config, 1, tmp_path)  # another seed is another entry
    assert len(list(tmp_path.glob("pretrained-*.safetensors"))) == 2


def test_pretraining_source_follows_the_configured_lidc_folder(tmp_path: Path) -> None:
    assert cnn.pretraining_source(None) == "rendered"
    assert cnn.pretraining_source(tmp_path / "absent") == "rendered"
    assert cnn.pretraining_source(tmp_path) == "lidc-images"
