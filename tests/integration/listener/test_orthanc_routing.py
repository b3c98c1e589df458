"""Orthanc auto-routes a stable study to icibenefit (deploy/orthanc Lua); our outbox answers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.integration.listener.dicom_factory import write_ct_series, write_seg
from tests.integration.listener.echo_processor import echo_sop_instance_uid
from tests.peers.common import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
ROUTE_LUA = REPO / "deploy" / "orthanc" / "route-to-icibenefit.lua"
HERE = Path(__file__).resolve().parent


def test_orthanc_routes_study_and_receives_our_object_back(
    start_orthanc, start_listener, tmp_path: Path
) -> None:
    scp_port = free_port()
    pacs = start_orthanc(
        aet="ORTHANC",
        modalities={"ICIBENEFIT": ("ICIBENEFIT", "127.0.0.1", scp_port)},
        lua_scripts=[ROUTE_LUA],
        stable_age=1,
    )
    server = start_listener(
        extra_env={"PYTHONPATH": str(HERE)},
        scp_port=scp_port,
        allowed_calling_ae_titles=["ORTHANC"],
        pacs_ae_title=pacs.aet,
        pacs_host="127.0.0.1",
        pacs_port=pacs.dicom_port,
        job_processor="echo_processor:build",
    )
    ct = write_ct_series(tmp_path / "ct", 8)
    seg = write_seg(ct, tmp_path / "seg.dcm")
    not_ct = write_ct_series(tmp_path / "mr", 2)  # a study without CT series: not routed
    for path in not_ct.files:
        ds = dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
    for path in [*ct.files, seg, *not_ct.files]:
        pacs.upload(path)

    server.wait_for(lambda: [j["state"] for j in server.get("/jobs")] == ["done"], timeout=60)
    studies = server.get("/studies")
    assert [(s["study_uid"], s["instances"]) for s in studies] == [(ct.study_uid, 9)]

    echo_uid = echo_sop_instance_uid(ct.study_uid)
    orthanc_id = pacs.wait_for(lambda: pacs.find_instance(echo_uid), timeout=30)
    tags = pacs.rest.get(f"/instances/{orthanc_id}/simplified-tags").json()
    assert tags["StudyInstanceUID"] == ct.study_uid
    assert tags["SeriesDescription"] == "icibenefit echo"
    assert "icibenefit_outbox_depth 0" in server.metrics()

    # Our object made the study stable again in Orthanc; the script re-sends a
    # study only when it gained CT/SEG/RTSTRUCT instances, so nothing comes back.
    time.sleep(3.0)  # StableAge (1 s) + routing time
    assert "icibenefit_instances_duplicate_total 0" in server.metrics()
    assert [j["state"] for j in server.get("/jobs")] == ["done"]
    assert not_ct.study_uid not in {s["study_uid"] for s in server.get("/studies")}

    # A late slice in Orthanc re-routes the study: icibenefit runs version 2.
    late = write_ct_series(tmp_path / "late", 1, study_uid=ct.study_uid).files[0]
    pacs.upload(late)
    server.wait_for(lambda: [j["state"] for j in server.get("/jobs")] == ["done", "done"])
    assert [j["version"] for j in server.get("/jobs")] == [2, 1]
    assert "icibenefit_instances_duplicate_total 9" in server.metrics()
