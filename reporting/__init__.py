"""DICOM SR (TID 1500) and FHIR RiskAssessment builders and the job processor."""
