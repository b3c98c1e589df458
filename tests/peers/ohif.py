"""A real OHIF viewer (``@ohif/app``'s prebuilt ``dist/``) for integration tests.

``make setup`` unpacks the pinned npm package into ``tests/peers/ohif/dist``
(see the Makefile's ``ohif`` stamp: ``npm pack`` of an exact version, checked
against the registry's sha512 integrity).  :func:`serve_ohif` serves that
folder the way a hospital would deploy it next to its PACS: one origin that
serves the static viewer, answers every unknown path with ``index.html`` (the
viewer is a single-page app), and proxies ``/dicom-web/`` to Orthanc's DICOMweb
plugin, so no CORS is involved.  ``/app-config.js`` is generated: one DICOMweb
data source pointing at that proxy.

The proxy is written here because nothing in the standard library or the
test dependencies proxies HTTP (checked: ``http.server`` serves only files;
httpx is a client), and a static server plus a 40-line forwarder keeps the
peer a real, unmodified OHIF build.
"""

from __future__ import annotations

import http.server
import json
import mimetypes
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from peers.common import free_port

OHIF_DIST = Path(__file__).parent / "ohif" / "dist"
OHIF_VERSION_FILE = Path(__file__).parent / "ohif" / "VERSION"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}


def app_config() -> str:
    """OHIF's ``window.config``: one DICOMweb source behind the same-origin proxy."""
    data_source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "orthanc",
        "configuration": {
            "friendlyName": "Orthanc (test PACS)",
            "name": "orthanc",
            "wadoUriRoot": "/dicom-web",
            "qidoRoot": "/dicom-web",
            "wadoRoot": "/dicom-web",
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True},
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "maxNumberOfWebWorkers": 2,
        "showErrorDetails": "always",
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "orthanc",
        "dataSources": [data_source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


@dataclass
class OhifServer:
    """A running viewer: its URL and the server thread."""

    url: str
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread

    def viewer_url(self, *study_uids: str) -> str:
        """The viewer route that opens these studies in the default (longitudinal) mode."""
        return f"{self.url}/viewer?StudyInstanceUIDs={','.join(study_uids)}"

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def serve_ohif(orthanc_url: str, dist: Path = OHIF_DIST) -> OhifServer:
    """Serve ``dist`` on a free loopback port with ``/dicom-web/`` proxied to Orthanc."""
    if not (dist / "index.html").is_file():
        raise RuntimeError(f"{dist} holds no OHIF build (make setup unpacks @ohif/app there)")
    client = httpx.Client(base_url=orthanc_url, timeout=60.0)
    config = app_config().encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return  # the test's own assertions say what failed

        def do_GET(self) -> None:
            self._handle(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._handle(self.rfile.read(length))

        def _handle(self, body: bytes) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith("/dicom-web/"):
                self._proxy(body)
            elif path == "/app-config.js":
                self._send(200, "application/javascript", config)
            else:
                self._static(path)

        def _proxy(self, body: bytes) -> None:
            # Host is passed on, as a reverse proxy does: Orthanc's DICOMweb plugin
            # writes absolute BulkDataURIs with it, which must point back here.
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            answer = client.request(self.command, self.path, headers=headers, content=body)
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def _static(self, path: str) -> None:
            target = (dist / path.lstrip("/")).resolve()
            if not target.is_relative_to(dist.resolve()) or not target.is_file():
                target = dist / "index.html"
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            if target.suffix == ".wasm":
                kind = "application/wasm"
            self._send(200, kind, target.read_bytes())

        def _send(self, status: int, kind: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ohif", daemon=True)
    thread.start()
    return OhifServer(url=f"http://127.0.0.1:{port}", server=server, thread=thread)
