"""The Encapsulated PDF report passes dicom3tools' dciodvfy and is a PDF Ghostscript reads."""

import shutil
import subprocess

import pytest
from unit.reporting.factories import Case

from icibenefit.reporting.pdf_report import build_pdf_report, read_pdf

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("demonstration", [True, False])
def test_dciodvfy_reports_no_errors(tmp_path, demonstration):
    case = Case()
    report = build_pdf_report(
        case.prediction(demonstration=demonstration), case.images, case.segmentations
    )
    path = tmp_path / "report.dcm"
    report.save_as(path, enforce_file_format=True)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert not errors, output
    assert result.returncode == 0, output
    assert "EncapsulatedPDF" in output


@pytest.mark.skipif(shutil.which("gs") is None, reason="Ghostscript not installed")
def test_pdf_renders_two_pages(tmp_path):
    case = Case()
    report = build_pdf_report(case.prediction(), case.images, case.segmentations)
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(read_pdf(report))
    result = subprocess.run(
        [
            "gs",
            "-q",
            "-dNOPAUSE",
            "-dBATCH",
            "-sDEVICE=png16m",
            "-r40",
            f"-sOutputFile={tmp_path}/page%d.png",
            str(pdf),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("page*.png")) == ["page1.png", "page2.png"]
