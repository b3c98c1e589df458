"""The SOP classes and transfer syntaxes the SCP must accept, sent by dcmtk storescu."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    Comprehensive3DSRStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from tests.integration.listener.dicom_factory import write_ct_series
from tests.integration.listener.server import storescu

pytestmark = pytest.mark.integration

SYNTAX_OPTIONS = {
    "1.2.840.10008.1.2": ["-xi"],  # implicit VR little endian
    "1.2.840.10008.1.2.1.99": ["-xd"],  # deflated, converted on the fly by storescu
}


def _indexed(server) -> dict[str, tuple[str, str]]:
    conn = sqlite3.connect(server.data_dir / "index.sqlite")
    rows = conn.execute("SELECT sop_instance_uid, transfer_syntax, path FROM instances")
    return {sop: (syntax, path) for sop, syntax, path in rows}


def test_uncompressed_deflated_and_compressed_syntaxes(start_listener, tmp_path: Path) -> None:
    server = start_listener()
    ct = write_ct_series(tmp_path / "ct", 6, size=64)
    expected: dict[str, str] = {}
    for syntax, option in SYNTAX_OPTIONS.items():
        path = ct.files[len(expected)]
        result = storescu(server.port, [path], extra=option, verbose=True)
        assert "Received Store Response (Success)" in result.stderr, result.stderr
        expected[str(dcmread(path).SOPInstanceUID)] = syntax
    for syntax, option in ((RLELossless, "-xr"), (JPEG2000Lossless, "-xv")):
        path = ct.files[len(expected)]
        ds = dcmread(path)
        ds.compress(syntax)
        ds.save_as(path)
        result = storescu(server.port, [path], extra=[option], verbose=True)
        assert "Received Store Response (Success)" in result.stderr, result.stderr
        expected[str(ds.SOPInstanceUID)] = str(syntax)
    indexed = _indexed(server)
    assert {sop: indexed[sop][0] for sop in expected} == expected
    originals = {str(dcmread(p).SOPInstanceUID): p for p in ct.files}
    for sop in expected:
        stored = dcmread(indexed[sop][1])
        assert stored.file_meta.TransferSyntaxUID == expected[sop]
        reference = dcmread(originals[sop]).pixel_array
        assert np.array_equal(stored.pixel_array, reference)


def _enhanced_ct(path: Path) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.StudyDate = "ENH-1", "CT", "20240301"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 8, 8, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.arange(3 * 8 * 8, dtype="<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _comprehensive_3d_sr(path: Path) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = Comprehensive3DSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.StudyDate = "SR-1", "SR", "20240301"
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_enhanced_ct_and_comprehensive_3d_sr_are_accepted(start_listener, tmp_path: Path) -> None:
    server = start_listener()
    files = [_enhanced_ct(tmp_path / "enhanced.dcm"), _comprehensive_3d_sr(tmp_path / "sr.dcm")]
    result = storescu(server.port, files, verbose=True)
    assert result.stderr.count("Received Store Response (Success)") == 2, result.stderr
    indexed = _indexed(server)
    for path in files:
        assert str(dcmread(path).SOPInstanceUID) in indexed
