"""Durable DICOM ingest: SCP, study index, job queue and outbox."""
