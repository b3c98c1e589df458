"""The synthetic cohort (CT, SEG and RTSTRUCT per timepoint) through dcmtk storescu."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from icibenefit.persistence import index
from icibenefit.persistence.jobs import StudyIndex
from tests.integration.listener.server import storescu

pytestmark = pytest.mark.integration


def test_cohort_patients_arrive_as_one_study_per_timepoint(start_listener, small_cohort: Path):
    manifest = json.loads((small_cohort / "manifest.json").read_text())
    kinds = {
        p["patient_id"]: {t["segmentation"]["kind"] for t in p["timepoints"] if t["segmentation"]}
        for p in manifest["patients"]
    }
    chosen = [next(pid for pid, k in kinds.items() if "RTSTRUCT" in k)]
    chosen.append(next(pid for pid, k in kinds.items() if "SEG" in k and pid not in chosen))
    server = start_listener()
    files = sorted(path for pid in chosen for path in (small_cohort / "dicom" / pid).rglob("*.dcm"))
    result = storescu(server.port, files, verbose=True)
    assert result.stderr.count("Received Store Response (Success)") == len(files), result.stderr

    own_studies = {
        p["patient_id"]: {t["study_uid"] for t in p["timepoints"]}
        for p in manifest["patients"]
        if p["patient_id"] in chosen
    }
    study_uids = set().union(*own_studies.values())
    server.wait_for(
        lambda: (
            {s["study_uid"]: s["state"] for s in server.get("/studies")}
            == dict.fromkeys(study_uids, "done")
        )
    )
    conn = sqlite3.connect(server.data_dir / "index.sqlite")
    modalities = {m for (m,) in conn.execute("SELECT DISTINCT modality FROM instances")}
    assert modalities == {"CT", "SEG", "RTSTRUCT"}
    with closing(index.connect(server.data_dir)) as view:
        studies = StudyIndex(view)
        for own in own_studies.values():
            for study_uid in own:
                assert {s.study_uid for s in studies.patient_studies(study_uid)} == own
    assert len(server.get("/jobs")) == len(study_uids)
