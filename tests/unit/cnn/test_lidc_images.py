"""The path for real LIDC-IDRI images: finding a series and cutting a patch from it."""

from __future__ import annotations

import locale
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from icibenefit.training.cnn.lidc import (
    LidcAnnotation,
    LidcContour,
    LidcNodule,
    LidcScan,
    find_series_dir,
)
from icibenefit.training.cnn.pretrain import PretrainConfig, _image_patches, cut_patch
from icibenefit.training.cnn.render import PatchGeometry

SERIES_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.1"


@pytest.fixture(autouse=True)
def _process_locale_kept() -> Iterator[None]:
    # SimpleITK's DICOM writer (GDCM) switches the process locale to "C" and
    # leaves it there; later tests would then write non-ASCII text as ASCII.
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


def _scan(patient: str = "LIDC-IDRI-0007") -> LidcScan:
    return LidcScan(7, patient, "1.2.3", SERIES_UID, 0.7, 2.5, 2.5)


def _volume() -> sitk.Image:
    """256 x 256 x 20 CT of air with a 3 x 3 x 1 bright block at column 100, row 80, slice 10."""
    array = np.full((20, 256, 256), -1000, dtype=np.int16)
    array[10, 79:82, 99:102] = 200
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.7, 2.5))
    image.SetOrigin((-150.0, -170.0, -300.0))
    return image


def test_series_found_by_folder_name(tmp_path: Path) -> None:
    series = tmp_path / "LIDC-IDRI-0007" / "01-01-2000-study" / SERIES_UID
    series.mkdir(parents=True)
    assert find_series_dir(tmp_path, _scan()) == series


def test_series_found_by_the_uid_inside_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "LIDC-IDRI-0007" / "study" / "3000566-series"
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(2):
        image = sitk.Image(8, 8, sitk.sitkInt16)
        image.SetMetaData("0020|000e", SERIES_UID)
        image.SetMetaData("0008|0060", "CT")
        image.SetMetaData("0020|0032", f"0\\0\\{k * 2.5}")
        writer.SetFileName(str(folder / f"{k}.dcm"))
        writer.Execute(image)
    assert find_series_dir(tmp_path, _scan()) == folder


def test_missing_patient_or_series_gives_none(tmp_path: Path) -> None:
    assert find_series_dir(tmp_path, _scan("LIDC-IDRI-0999")) is None
    (tmp_path / "LIDC-IDRI-0007" / "study" / "other").mkdir(parents=True)
    assert find_series_dir(tmp_path, _scan()) is None


def test_patch_is_cut_around_the_contour_centroid() -> None:
    # LIDC contour points are (column, row) pixel indices, scaled by the pixel
    # spacing when read; z is the physical slice position.
    centre = np.array([100 * 0.7, 80 * 0.7, -300.0 + 10 * 2.5])
    patch = cut_patch(_volume(), _scan(), centre, PatchGeometry())
    assert patch.shape == (5, 47, 47)
    brightest = np.unravel_index(np.argmax(patch), patch.shape)
    assert brightest == (2, 23, 23)
    assert patch[0].max() == -1000.0  # neighbouring native slices hold only air


def _write_series(folder: Path, volume: sitk.Image) -> None:
    """One DICOM file per slice, as a scanner writes a series (SimpleITK/GDCM)."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        image = volume[:, :, k]
        image.SetMetaData("0020|000e", SERIES_UID)
        image.SetMetaData("0008|0060", "CT")
        image.SetMetaData("0020|0013", str(k + 1))
        z = volume.TransformIndexToPhysicalPoint((0, 0, k))[2]
        image.SetMetaData("0020|0032", f"{volume.GetOrigin()[0]}\\{volume.GetOrigin()[1]}\\{z}")
        image.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(image)


def test_real_image_patches_are_read_from_a_local_download(tmp_path: Path) -> None:
    _write_series(tmp_path / "LIDC-IDRI-0007" / "study" / "series", _volume())
    z = -300.0 + 10 * 2.5
    angle = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    ring = np.column_stack([100 + 2 * np.cos(angle), 80 + 2 * np.sin(angle)]) * 0.7
    annotation = LidcAnnotation(1, 7, (LidcContour(z, True, ring),), 5, 5, 1, 1, 6, 1)
    nodule = LidcNodule(_scan(), (annotation,))
    missing = LidcNodule(_scan("LIDC-IDRI-0404"), (annotation,))
    patches, owners = _image_patches([missing, nodule], PretrainConfig(), tmp_path)
    assert patches.shape == (1, 5, 47, 47)
    assert list(owners) == [1]
    assert np.unravel_index(np.argmax(patches[0]), patches[0].shape) == (2, 23, 23)
    assert patches[0, 2, 23, 23] > -900  # the block survives anti-aliasing
