"""Persistence: every SQL statement and the on-disk layout of the service's data.

The listener, reporting, the status page, the CLI and the demo never write
SQL or build data-directory paths themselves; they call these modules, so
the schema, its transactions and the files beside it change in one place
(and a second database backend has one package to implement).

Modules
-------
- :mod:`.index` -- the one SQLite database (WAL): schema, migrations, ``connect``.
- :mod:`.instances` -- the instance store: durable file write and index commit.
- :mod:`.jobs` -- study index (read side), the job queue and the job context.
- :mod:`.outbox` -- the durable queue of outgoing items: enqueue, claim, mark, retry.
- :mod:`.queries` -- read-only views and counts for the CLI, status API and demo.
- :mod:`.archive` -- reporting's archive of produced SRs, FHIR transactions and runs.
"""
