"""Durable DICOM ingest: SCP, study index, job queue and outbox (``icibenefit serve``).

Modules
-------
- :mod:`.scp` -- pynetdicom SCP: contexts, AE/address allow-lists, TLS, thin handlers.
- :mod:`.store` -- validate, write (temp file, fsync, rename), index; answer status.
- :mod:`.index` -- the one SQLite database (WAL): schema and migrations.
- :mod:`.jobs` -- study completion, job queue, and the processor seam
  (:class:`~.jobs.StudyProcessor`, :class:`~.jobs.JobContext`).
- :mod:`.outbox` -- durable outgoing DICOM (C-STORE to the PACS) and FHIR writes.
- :mod:`.status_api` -- ``/health``, ``/metrics``, ``/jobs``, ``/studies`` on loopback.
- :mod:`.service` -- process layout, crash recovery at start, graceful SIGTERM.
- :mod:`.queries`, :mod:`.cli` -- read views and the ``studies``/``jobs`` commands.

Plugging in processing
----------------------
A processor is an object with ``process(job: JobContext) -> None``, built per
worker process by a factory ``f(settings)`` named ``"module:function"``:
``settings.job_processor`` if set, else
``icibenefit.reporting.processor:build_processor`` when that module exists,
else a recorder that only marks studies processed.  ``JobContext`` gives
``settings``, ``job_id``, ``study_uid``, ``version``, ``attempt``, ``index``
(``study()``, ``instances()``, ``patient_studies()``) and ``outbox``
(``enqueue_dicom(dataset, dedup_key=None)``, ``enqueue_fhir(method, url, body,
dedup_key, headers=...)``).  Raising fails the attempt (retried with
exponential backoff, then ``dead``).
"""
