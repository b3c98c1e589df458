"""``icibenefit serve``: the SCP, the scheduler, the outbox sender, workers, status API.

Process layout: the main process runs the SCP (one thread per association),
a scheduler thread (stable studies -> jobs), an outbox thread and the status
API; ``settings.workers`` worker *processes* (spawned, so a crashing or
memory-hungry pipeline cannot take the SCP down) claim jobs from the database.
Workers die with the main process (``PR_SET_PDEATHSIG``), so after a
``kill -9`` no orphan keeps running a job that the restart re-queues.

Start-up order makes a crash at any point recoverable: discard partial
temporary files, re-queue ``running`` jobs and ``sending`` outbox items, start
workers, then accept associations.  SIGTERM/SIGINT: refuse new associations,
let in-flight ones finish, stop the scheduler and outbox threads between
items, let workers finish their current job, exit 0.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import closing
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from icibenefit import audit
from icibenefit.listener.jobs import load_processor_factory, resolve_processor_factory
from icibenefit.listener.outbox import OutboxSender
from icibenefit.listener.scp import ScpCounters, StorageScp
from icibenefit.listener.status_api import StatusServer
from icibenefit.listener.store import DicomStore
from icibenefit.logs import configure_logging
from icibenefit.persistence import index
from icibenefit.persistence.jobs import JobContext, JobQueue, StudyIndex
from icibenefit.persistence.outbox import Outbox
from icibenefit.settings import Settings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
WORKER_POLL_SECONDS = 0.2
WORKER_STOP_TIMEOUT = 120.0


class ListenerService:
    """The whole listener; :meth:`run` blocks until SIGTERM/SIGINT or :meth:`request_stop`."""

    def __init__(self, settings: Settings, processor_factory: str | None = None) -> None:
        self.settings = settings
        self.processor_factory = processor_factory or resolve_processor_factory(settings)
        load_processor_factory(self.processor_factory)  # fail fast on a bad name
        self.counters = ScpCounters()
        self.store = DicomStore(settings)
        self.scp = StorageScp(settings, self.store, self.counters)
        self.status = StatusServer(settings, self.counters, lambda: not self._stop.is_set())
        self._stop = threading.Event()
        self._worker_stop: ProcessEvent | None = None
        self._workers: list[multiprocessing.process.BaseProcess] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Recover from any previous crash, then start every part."""
        configure_logging(self.settings)
        audit.configure(self.settings).settings_loaded(self.settings, "listener.service")
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        conn = index.connect(self.settings.data_dir)
        try:
            partial = self.store.discard_partial_files()
            requeued = JobQueue(conn, self.settings).requeue_running()
            resent = OutboxSender(conn, self.settings).requeue_sending()
        finally:
            conn.close()
        if partial or requeued or resent:
            log.warning(
                "recovered after an unclean stop: %d partial files removed, %d jobs re-queued,"
                " %d outbox items to resend",
                partial,
                requeued,
                resent,
            )
        self._start_workers()
        self._start_thread("scheduler", self._schedule_loop)
        self._start_thread("outbox", self._outbox_loop)
        if self.settings.status_port:
            self.status.start()
        self.scp.start()
        log.info("listener ready (processor %s)", self.processor_factory)

    def run(self) -> None:
        """Start, then block until a stop signal; shut down gracefully."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.request_stop())
        self.start()
        try:
            while not self._stop.wait(0.5):
                self._restart_dead_workers()
        finally:
            self.shutdown()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self._stop.set()

    def shutdown(self) -> None:
        """Stop every part, in the order that keeps the queue consistent."""
        self._stop.set()
        log.info("shutting down: refusing new associations")
        self.scp.stop()
        for thread in self._threads:
            thread.join()
        if self._worker_stop is not None:
            self._worker_stop.set()
        for worker in self._workers:
            worker.join(WORKER_STOP_TIMEOUT)
            if worker.is_alive():
                log.warning("worker %s did not stop; its job will be re-queued", worker.pid)
                worker.kill()
                worker.join()
        self.status.stop()
        log.info("listener stopped")

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_workers(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._worker_stop = context.Event()
        self._workers = [self._spawn_worker(context) for _ in range(self.settings.workers)]

    def _spawn_worker(
        self, context: multiprocessing.context.SpawnContext
    ) -> multiprocessing.process.BaseProcess:
        worker = context.Process(
            target=worker_main,
            args=(
                self.settings.model_dump(),
                self.processor_factory,
                self._worker_stop,
                os.getpid(),
            ),
            name="icibenefit-worker",
            daemon=True,
        )
        worker.start()
        return worker

    def _restart_dead_workers(self) -> None:
        context = multiprocessing.get_context("spawn")
        for position, worker in enumerate(self._workers):
            if not worker.is_alive() and not self._stop.is_set():
                log.error("worker %s exited with %s; starting another", worker.pid, worker.exitcode)
                with closing(index.connect(self.settings.data_dir)) as conn:
                    JobQueue(conn, self.settings).requeue_running(worker.pid)
                self._workers[position] = self._spawn_worker(context)

    def _schedule_loop(self) -> None:
        interval = min(0.25, self.settings.study_quiet_seconds / 4)
        conn = index.connect(self.settings.data_dir)
        queue = JobQueue(conn, self.settings)
        try:
            while not self._stop.wait(interval):
                try:
                    for job_id in queue.enqueue_stable_studies():
                        log.info("study stable: job %d queued", job_id)
                except Exception:
                    log.exception("scheduler pass failed")
        finally:
            conn.close()

    def _outbox_loop(self) -> None:
        interval = min(0.25, self.settings.retry_base_seconds / 2)
        conn = index.connect(self.settings.data_dir)
        sender = OutboxSender(conn, self.settings)
        try:
            while not self._stop.wait(interval):
                try:
                    while not self._stop.is_set() and (item := sender.claim()) is not None:
                        sender.attempt(item)
                except Exception:
                    log.exception("outbox pass failed")
        finally:
            sender.close()
            conn.close()


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the poll on getppid() below still ends orphans between jobs
    if os.getppid() != parent_pid:
        os._exit(0)


def worker_main(
    settings_values: dict[str, Any],
    processor_factory: str,
    stop: ProcessEvent,
    parent_pid: int,
) -> None:
    """Entry point of a worker process: claim and run jobs until told to stop."""
    _die_with_parent(parent_pid)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)  # the parent decides when we stop
    settings = Settings(**settings_values)
    configure_logging(settings)
    audit.configure(settings)
    processor = load_processor_factory(processor_factory)(settings)
    conn = index.connect(settings.data_dir)
    queue = JobQueue(conn, settings)
    outbox = Outbox(conn, settings)
    study_index = StudyIndex(conn)
    pid = os.getpid()
    while not stop.is_set() and os.getppid() == parent_pid:
        job = queue.claim(pid)
        if job is None:
            stop.wait(WORKER_POLL_SECONDS)
            continue
        started = time.monotonic()
        context = JobContext(
            settings=settings,
            job_id=job.id,
            study_uid=job.study_uid,
            version=job.version,
            attempt=job.attempts,
            index=study_index,
            outbox=outbox,
        )
        try:
            processor.process(context)
        except Exception as exc:
            state = queue.fail(job, f"{type(exc).__name__}: {exc}")
            log.warning("job %d attempt %d failed (%s): %s", job.id, job.attempts, state, exc)
            continue
        queue.complete(job)
        log.info(
            "job %d (version %d) done in %.1f s", job.id, job.version, time.monotonic() - started
        )
    conn.close()
