"""Issue 6 acceptance: Orthanc -> icibenefit -> SR back in Orthanc, RiskAssessment in FHIR.

Real peers on loopback: Orthanc (with DICOMweb) auto-routes stable CT studies
with deploy/orthanc's Lua script (the file itself) to ``icibenefit serve`` (a
subprocess configured from deploy/'s example settings), which reads labs from
the Medplum FHIR server, predicts with a small bundle trained on the shared
synthetic cohort, sends the SR back to Orthanc by C-STORE and writes the
RiskAssessment to the FHIR server.

Checked: one SR per processed run in each study (DICOMweb QIDO), one
RiskAssessment per study (FHIR search by subject), the SR's probabilities equal
the RiskAssessment's and the offline ``icibenefit predict`` ones, every SR passes
dciodvfy, and a late instance yields a second SR naming the first as
predecessor while the RiskAssessment count stays the same.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from icibenefit.reporting import identity
from icibenefit.reporting.sr import read_probabilities
from tests.peers.common import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
ROUTE_LUA = REPO / "deploy" / "orthanc" / "route-to-icibenefit.lua"
EXAMPLE_SETTINGS = REPO / "deploy" / "icibenefit.example.toml"
ICIBENEFIT = str(Path(sys.executable).with_name("icibenefit"))


def _patients(cohort: Path, count: int = 3) -> list:
    """Patients with a segmented baseline and follow-up; an RTSTRUCT one when available."""
    from icibenefit.synth import load_manifest

    manifest = load_manifest(cohort)
    usable = [
        p
        for p in manifest.patients
        if len([tp for tp in p.timepoints if tp.segmentation is not None]) >= 2
    ]
    rt = [
        p
        for p in usable
        if any(tp.segmentation and tp.segmentation.kind == "RTSTRUCT" for tp in p.timepoints)
    ]
    chosen = (rt[:1] + [p for p in usable if p not in rt[:1]])[:count]
    assert len(chosen) == count, "the shared cohort has too few longitudinal patients"
    return chosen


def _timepoint_files(cohort: Path, tp) -> list[Path]:
    files = sorted((cohort / tp.ct_dir).glob("*.dcm"))
    if tp.segmentation is not None:
        files.append(cohort / tp.segmentation.path)
    return files


def _example_settings(**overrides) -> dict:
    """deploy/'s example settings (documented = tested), with the test's ports and paths."""
    values = tomllib.loads(EXAMPLE_SETTINGS.read_text())
    for machine_specific in (
        "data_dir",
        "scp_bind",
        "status_bind",
        "fhir_ndjson_dir",
        "model_store_dir",
    ):
        values.pop(machine_specific, None)
    values.update(overrides)
    return values


def _sr_instances(pacs, study_uid: str) -> list:
    """SR instances of a study, found by DICOMweb QIDO (series?Modality=SR), read back."""
    response = pacs.rest.get(f"/dicom-web/studies/{study_uid}/series", params={"Modality": "SR"})
    if response.status_code == 204 or not response.content:
        return []
    response.raise_for_status()
    datasets = []
    for series in response.json():
        series_uid = series["0020000E"]["Value"][0]
        instances = pacs.rest.get(
            f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances"
        ).json()
        for instance in instances:
            sop_uid = instance["00080018"]["Value"][0]
            orthanc_id = pacs.find_instance(sop_uid)
            data = pacs.rest.get(f"/instances/{orthanc_id}/file").content
            datasets.append(dcmread(io.BytesIO(data)))
    return datasets


def _risk_assessments(fhir_server, patient_ref: str) -> list[dict]:
    response = httpx.get(
        f"{fhir_server.base_url}/RiskAssessment",
        params={"subject": patient_ref},
        headers=fhir_server.auth_headers,
        timeout=30,
    )
    response.raise_for_status()
    return [e["resource"] for e in response.json().get("entry", [])]


def _library_predict(files: list[Path], fhir_dir: Path, bundle: Path):
    """In-process prediction through the function ``icibenefit predict`` uses."""
    from icibenefit.pipeline.inference import open_bundle
    from icibenefit.reporting.processor import LazyClinicalSource
    from icibenefit.settings import load_settings

    settings = load_settings(None, fhir_ndjson_dir=fhir_dir)
    patient_id = dcmread(files[0], stop_before_pixels=True).PatientID
    record = LazyClinicalSource(settings).clinical_record(str(patient_id))
    return open_bundle(bundle).predict(sorted(str(f) for f in files), record)


def _offline_predict(files: list[Path], fhir_dir: Path, bundle: Path, workdir: Path) -> dict:
    """``icibenefit predict`` (offline: files and NDJSON) on exactly these files."""
    patient_id = str(dcmread(files[0], stop_before_pixels=True).PatientID)
    folder = workdir / "dicom" / patient_id
    folder.mkdir(parents=True)
    for index, path in enumerate(files):
        (folder / f"{index:04d}.dcm").symlink_to(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICIBENEFIT_")}
    result = subprocess.run(
        [
            ICIBENEFIT,
            "predict",
            "--dicom",
            str(workdir / "dicom"),
            "--clinical",
            str(fhir_dir),
            "--patient",
            patient_id,
            "--bundle",
            str(bundle),
            "--out",
            str(workdir / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    prediction = json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())
    return {ep["endpoint"]: ep["probability"] for ep in prediction["endpoints"]}


def _probabilities(prediction) -> dict[str, float]:
    return {ep.endpoint: ep.probability for ep in prediction.endpoints}


def _expected_runs(cohort: Path, patient, bundle: Path, exclude: Path | None = None) -> list:
    """Offline, each run the service will make: (its study, the SR's study, prediction).

    Every routed study (every study with CT) is one run over the patient's
    studies up to its date; its SR lands in the study of the latest CT the
    model used (runs with the same inputs share one SR), its RiskAssessment is
    the run's own.
    """
    runs = []
    for tp in patient.timepoints:
        files = [
            f
            for other in patient.timepoints
            if other.study_date <= tp.study_date
            for f in _timepoint_files(cohort, other)
            if f != exclude
        ]
        prediction = _library_predict(files, cohort / "fhir", bundle)
        used = sorted(prediction.imaging, key=lambda t: t.study_date)
        runs.append((tp.study_uid, used[-1].study_uid if used else None, prediction))
    return runs


def _ra_probabilities(risk: dict) -> dict[str, float]:
    return {p["outcome"]["coding"][0]["code"]: p["probabilityDecimal"] for p in risk["prediction"]}


def _ra_of(risks: list[dict], prediction, study_uid: str) -> dict:
    """The RiskAssessment of the run of ``study_uid``, found by its business identifier."""
    wanted = identity.risk_assessment_identifier(prediction, study_uid)
    [risk] = [r for r in risks if wanted in {i["value"] for i in r["identifier"]}]
    return risk


def test_orthanc_to_reports_and_rerun_after_late_instance(
    small_cohort, demo_bundle, fhir_server, start_orthanc, start_listener, tmp_path
):
    patients = _patients(small_cohort)
    # The late instance: the first CT slice of a SEG patient's baseline, which every
    # imaging model uses, so its arrival changes the inputs of the baseline run.
    late_patient = next(
        p
        for p in patients
        if all(tp.segmentation is None or tp.segmentation.kind == "SEG" for tp in p.timepoints)
    )
    late_tp = late_patient.timepoints[0]
    late_file = sorted((small_cohort / late_tp.ct_dir).glob("*.dcm"))[0]
    expected = {
        p.patient_id: _expected_runs(small_cohort, p, demo_bundle, exclude=late_file)
        for p in patients
    }

    fhir_server.load_ndjson(small_cohort)
    scp_port = free_port()
    pacs = start_orthanc(
        aet="ORTHANC",
        modalities={"ICIBENEFIT": ("ICIBENEFIT", "127.0.0.1", scp_port)},
        lua_scripts=[ROUTE_LUA],
        stable_age=1,
        dicomweb=True,
    )
    server = start_listener(
        **_example_settings(
            scp_port=scp_port,
            allowed_calling_ae_titles=[pacs.aet],
            pacs_ae_title=pacs.aet,
            pacs_host="127.0.0.1",
            pacs_port=pacs.dicom_port,
            fhir_base_url=fhir_server.base_url,
            model_bundle=str(demo_bundle),
            study_quiet_seconds=1.0,
            retry_base_seconds=0.5,
            workers=2,
            job_processor="icibenefit.reporting.processor:build_processor",
        ),
    )
    for patient in patients:
        for tp in patient.timepoints:
            for path in _timepoint_files(small_cohort, tp):
                if path != late_file:
                    pacs.upload(path)
    studies = {tp.study_uid for p in patients for tp in p.timepoints}

    def settled(version_of: dict[str, int]) -> bool:
        jobs = server.get("/jobs")
        done = {(j["study_uid"], j["version"]) for j in jobs if j["state"] == "done"}
        busy = any(j["state"] in ("queued", "running", "failed", "dead") for j in jobs)
        wanted = {(study, version_of.get(study, 1)) for study in studies}
        return wanted <= done and not busy and "icibenefit_outbox_depth 0" in server.metrics()

    server.wait_for(lambda: settled({}), timeout=600)

    first_srs = {}
    for patient in patients:
        runs = expected[patient.patient_id]
        risks = _risk_assessments(fhir_server, f"Patient/pat-{patient.patient_id.lower()}")
        assert len(risks) == len(runs), "one RiskAssessment per run"
        for study_uid, report_study, prediction in runs:
            ra = _ra_of(risks, prediction, study_uid)
            assert _ra_probabilities(ra) == pytest.approx(_probabilities(prediction), abs=1e-6)
            if report_study is None:
                continue
            srs = pacs.wait_for(lambda s=report_study: _sr_instances(pacs, s), timeout=60)
            assert len(srs) == 1, "one SR per distinct run (same inputs, same SR)"
            sr = first_srs[report_study] = srs[0]
            assert read_probabilities(sr) == pytest.approx(_probabilities(prediction), abs=1e-6)
    assert first_srs, "the bundle served no imaging model: no SR to check"

    # What the PACS and the EHR hold equals the offline command for the same inputs
    # (each patient's last run: all its studies).
    for patient in patients:
        _, report_study, final = expected[patient.patient_id][-1]
        files = [
            f
            for tp in patient.timepoints
            for f in _timepoint_files(small_cohort, tp)
            if f != late_file
        ]
        offline = _offline_predict(
            files, small_cohort / "fhir", demo_bundle, tmp_path / "offline" / patient.patient_id
        )
        assert offline == pytest.approx(_probabilities(final), abs=1e-9)
        if report_study is not None:
            assert read_probabilities(first_srs[report_study]) == pytest.approx(offline, abs=1e-6)

    for sr in first_srs.values():
        path = tmp_path / f"{sr.SOPInstanceUID}.dcm"
        sr.save_as(path, enforce_file_format=True)
        check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in check.stderr.splitlines() if line.startswith("Error")]
        assert not errors, check.stderr

    # The late instance: a new run of its study, a second SR naming the first.
    pacs.upload(late_file)
    server.wait_for(lambda: settled({late_tp.study_uid: 2}), timeout=300)
    late_files = [
        f
        for tp in late_patient.timepoints
        if tp.study_date <= late_tp.study_date
        for f in _timepoint_files(small_cohort, tp)
    ]
    rerun = _library_predict(late_files, small_cohort / "fhir", demo_bundle)
    offline_rerun = _offline_predict(
        late_files, small_cohort / "fhir", demo_bundle, tmp_path / "offline" / "late"
    )
    assert offline_rerun == pytest.approx(_probabilities(rerun), abs=1e-9)
    srs = pacs.wait_for(
        lambda: (found := _sr_instances(pacs, late_tp.study_uid)) and len(found) == 2 and found,
        timeout=60,
    )
    first = first_srs[late_tp.study_uid]
    [second] = [ds for ds in srs if ds.SOPInstanceUID != first.SOPInstanceUID]
    named = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert named.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert read_probabilities(second) == pytest.approx(_probabilities(rerun), abs=1e-6)
    risks = _risk_assessments(fhir_server, f"Patient/pat-{late_patient.patient_id.lower()}")
    assert len(risks) == len(expected[late_patient.patient_id]), "the rerun updated, not added"
    ra = _ra_of(risks, rerun, late_tp.study_uid)
    assert _ra_probabilities(ra) == pytest.approx(_probabilities(rerun), abs=1e-6)

    # Every step left an audit entry, and none names a patient or a study in clear.
    audit_text = (server.data_dir / "audit" / "audit.jsonl").read_text()
    events = {json.loads(line)["event"] for line in audit_text.splitlines()}
    assert {"received", "study_stable", "fetched", "reported", "sent"} <= events
    for patient in patients:
        assert patient.patient_id.lower() not in audit_text.lower()
        for tp in patient.timepoints:
            assert tp.study_uid not in audit_text
