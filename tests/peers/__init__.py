"""Fixtures that start real peers (Orthanc, FHIR server) and shared test data."""
