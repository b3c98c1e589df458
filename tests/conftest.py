"""Shared test configuration.

Real peers (Orthanc, the FHIR server, dcmtk, R) are started by the fixture
plugins in ``tests/peers``; each picks free loopback ports so tests can run in
parallel with anything else on the machine.
"""

pytest_plugins = [
    "peers.common",
    "peers.cohort",
    "peers.orthanc",
    "peers.fhir_server_fixture",
    "peers.browser",
]
