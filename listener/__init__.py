"""Durable DICOM ingest: SCP, workers, outbox sender and status (``icibenefit serve``).

Modules
-------
- :mod:`.scp` -- pynetdicom SCP: contexts, AE/address allow-lists, TLS, thin handlers.
- :mod:`.store` -- validate a received dataset, have persistence store and index it,
  answer the status and audit.
- :mod:`.jobs` -- the processor seam (:class:`~.jobs.StudyProcessor`) and its factories.
- :mod:`.outbox` -- the sender: delivers outgoing DICOM (C-STORE to the PACS) and FHIR writes.
- :mod:`.status_api`, :mod:`.status_page` -- ``/health``, ``/metrics``, JSON lists, HTML page.
- :mod:`.service` -- process layout, crash recovery at start, graceful SIGTERM.

Every SQL statement and the data directory's layout (instance store, index,
job queue, outbox, report archive) are :mod:`icibenefit.persistence`'s.

Plugging in processing
----------------------
A processor is an object with ``process(job: JobContext) -> None``, built per
worker process by a factory ``f(settings)``: the one named ``"module:function"``
by ``settings.job_processor`` if set, else
:func:`icibenefit.reporting.processor.build_processor`.
``JobContext`` (:mod:`icibenefit.persistence.jobs`) gives ``settings``,
``job_id``, ``study_uid``, ``version``, ``attempt``, ``index`` (``study()``,
``instances()``, ``patient_studies()``) and ``outbox``
(``enqueue_dicom(dataset, dedup_key=None)``, ``enqueue_fhir(method, url, body,
dedup_key, headers=...)``).  Raising fails the attempt (retried with
exponential backoff, then ``dead``).
"""
