"""``icibenefit demo`` (what ``make run`` runs) prints a prediction and writes every report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from icibenefit.reporting.sr import read_probabilities

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ICIBENEFIT = str(Path(sys.executable).with_name("icibenefit"))


def test_demo_writes_sr_and_risk_assessment_to_the_local_outbox(demo_bundle, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICIBENEFIT_")}
    env["ICIBENEFIT_MODEL_BUNDLE"] = str(demo_bundle)  # skip training: tested elsewhere
    data = tmp_path / "data"
    result = subprocess.run(
        [ICIBENEFIT, "demo", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    dicom_files = sorted((data / "outbox" / "dicom").glob("*.dcm"))
    modality = {path: dcmread(path, stop_before_pixels=True).Modality for path in dicom_files}
    sr_files = [path for path in dicom_files if modality[path] == "SR"]
    pdf_files = [path for path in dicom_files if modality[path] == "DOC"]
    fhir_files = sorted((data / "outbox" / "fhir").glob("*.json"))
    assert sr_files, out
    assert fhir_files, out
    for path in [*sr_files, *fhir_files]:
        assert str(path) in out, f"{path} not announced"

    # The PDF report (dicom_reports = "both" by default) went through the outbox
    # too; the demo says where each report went and where its copy is archived.
    assert pdf_files, out
    for path in pdf_files:
        assert f"PDF report -> {path}" in out
        archived = data / "reports" / "pdf" / dcmread(path).SeriesInstanceUID / path.name
        assert f"(archived: {archived})" in out
    for path in sr_files:
        assert f"SR -> {path}" in out

    # The printed summary is the latest SR's, with the probabilities it holds.
    latest = max((dcmread(p) for p in sr_files), key=lambda ds: (ds.StudyDate, ds.InstanceNumber))
    probabilities = read_probabilities(latest)
    printed = dict(re.findall(r"(pfs\d+) (\d\.\d{3})", out.split("probabilities read back")[1]))
    assert {k: float(v) for k, v in printed.items()} == {
        k: pytest.approx(v, abs=5e-4) for k, v in probabilities.items()
    }
    assert "NOT FOR CLINICAL USE" in out

    # The printed RiskAssessment is the one queued for the EHR, with the same numbers.
    risk_json = out.split("FHIR RiskAssessment (latest report)")[1]
    risk = json.loads(risk_json[risk_json.index("{") :])
    assert risk["resourceType"] == "RiskAssessment"
    assert {
        p["outcome"]["coding"][0]["code"]: p["probabilityDecimal"] for p in risk["prediction"]
    } == (pytest.approx(probabilities, abs=1e-6))
    queued = [json.loads(p.read_text())["body"] for p in fhir_files]
    assert any(entry["resource"] == risk for bundle in queued for entry in bundle["entry"])
