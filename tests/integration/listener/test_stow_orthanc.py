"""STOW-RS of the SR and the PDF report to a real Orthanc's DICOMweb plugin."""

import pytest
from unit.reporting.factories import Case

from icibenefit.listener.stow import StowError, StowRsClient
from icibenefit.reporting.pdf_report import build_pdf_report
from icibenefit.reporting.sr import build_sr

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reports():
    case = Case(n_followups=1)
    prediction = case.prediction()
    return [
        build_sr(prediction, case.images, case.segmentations),
        build_pdf_report(prediction, case.images, case.segmentations),
    ]


@pytest.mark.parametrize("auth", [None, ("icibenefit", "s3cret")])
def test_reports_are_stored_and_retrievable(start_orthanc, reports, auth):
    pacs = start_orthanc(dicomweb=True, auth=auth)
    with StowRsClient(f"{pacs.url}/dicom-web", auth=auth) as client:
        result = client.store(reports, study_uid=str(reports[0].StudyInstanceUID))
    assert set(result.stored) == {str(ds.SOPInstanceUID) for ds in reports}
    for ds in reports:
        assert pacs.find_instance(str(ds.SOPInstanceUID)) is not None
    # Storing again (a retry) is accepted and stores nothing twice.
    with StowRsClient(f"{pacs.url}/dicom-web", auth=auth) as client:
        client.store(reports)
    assert len(pacs.rest.get("/instances").json()) == 2


def test_wrong_password_is_a_permanent_error(start_orthanc, reports):
    pacs = start_orthanc(dicomweb=True, auth=("icibenefit", "s3cret"))
    with (
        StowRsClient(f"{pacs.url}/dicom-web", auth=("icibenefit", "wrong")) as client,
        pytest.raises(StowError) as caught,
    ):
        client.store(reports)
    assert caught.value.status == 401
    assert caught.value.permanent
