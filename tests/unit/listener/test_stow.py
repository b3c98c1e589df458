import email
import email.policy
import io

import httpx
import pytest
from pydicom import dcmread
from unit.reporting.factories import Case

from icibenefit.listener.stow import StowError, StowRsClient, multipart_body
from icibenefit.reporting.sr import build_sr


@pytest.fixture(scope="module")
def sr():
    case = Case(n_followups=0)
    return build_sr(case.prediction(), case.images, case.segmentations)


def _response_for(uids, failed=()):
    payload = {
        "00081199": {
            "vr": "SQ",
            "Value": [{"00081155": {"vr": "UI", "Value": [uid]}} for uid in uids],
        }
    }
    if failed:
        payload["00081198"] = {
            "vr": "SQ",
            "Value": [
                {"00081155": {"vr": "UI", "Value": [uid]}, "00081197": {"vr": "US", "Value": [272]}}
                for uid in failed
            ],
        }
    return payload


def _client(handler, **kwargs):
    transport = httpx.MockTransport(handler)
    client = httpx.Client(transport=transport)
    return StowRsClient("http://pacs/dicom-web/", client=client, **kwargs)


def test_posts_multipart_related_that_parses_back_to_the_instance(sr):
    seen = {}

    def handler(request):
        seen["request"] = request
        return httpx.Response(200, json=_response_for([str(sr.SOPInstanceUID)]))

    result = _client(handler, auth=("u", "p")).store([sr], study_uid=sr.StudyInstanceUID)
    request = seen["request"]
    assert str(request.url) == f"http://pacs/dicom-web/studies/{sr.StudyInstanceUID}"
    assert request.headers["Accept"] == "application/dicom+json"
    assert request.headers["Authorization"].startswith("Basic ")
    content_type = request.headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.content,
        policy=email.policy.HTTP,
    )
    [part] = list(message.iter_parts())
    assert part.get_content_type() == "application/dicom"
    parsed = dcmread(io.BytesIO(part.get_payload(decode=True)))
    assert parsed.SOPInstanceUID == sr.SOPInstanceUID
    assert result.stored == (str(sr.SOPInstanceUID),)


def test_failed_instances_are_a_permanent_error(sr):
    uid = str(sr.SOPInstanceUID)
    client = _client(lambda request: httpx.Response(202, json=_response_for([], failed=[uid])))
    with pytest.raises(StowError) as caught:
        client.store([sr])
    assert caught.value.permanent
    assert caught.value.status == 202


@pytest.mark.parametrize(("status", "permanent"), [(401, True), (409, True), (503, False)])
def test_http_errors_say_whether_a_retry_can_help(sr, status, permanent):
    client = _client(lambda request: httpx.Response(status))
    with pytest.raises(StowError) as caught:
        client.store([sr])
    assert caught.value.permanent is permanent


def test_transport_errors_are_transient(sr):
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(StowError) as caught:
        _client(handler).store([sr])
    assert not caught.value.permanent


def test_body_is_deterministic():
    first, boundary = multipart_body([b"a", b"b"])
    again, _ = multipart_body([b"a", b"b"])
    assert first == again
    assert first.endswith(f"--{boundary}--\r\n".encode())
    assert first.count(f"--{boundary}\r\n".encode()) == 2
