"""Listener commands: ``serve``, ``studies list``, ``jobs list|retry``, ``outbox list|retry``.

``--json`` prints a JSON array (the same objects as the status API's
``/studies``, ``/jobs`` and ``/outbox``); patients appear only as pseudonyms.
"""

from __future__ import annotations

import json
from contextlib import closing
from typing import Annotated, Any

import typer

from icibenefit import audit
from icibenefit.cli.common import settings_from
from icibenefit.persistence import index, queries
from icibenefit.persistence.jobs import JOB_STATES, JobQueue
from icibenefit.persistence.outbox import (
    NotRetryableError,
    dead_ids,
    normalise_states,
    requeue_dead,
)

studies_app = typer.Typer(help="Inspect received studies.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect and retry processing jobs.", no_args_is_help=True)
outbox_app = typer.Typer(
    help="Inspect outgoing DICOM and FHIR items and re-send dead letters.", no_args_is_help=True
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON array.")]
LimitOption = Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")]


def serve(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="DICOM port (overrides scp_port).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Run the DICOM SCP, the workers and the status API until SIGTERM."""
    # Function-local: the service imports the reporting pipeline (highdicom,
    # pyradiomics' dependencies: seconds) that no other command here needs.
    from icibenefit.listener.service import ListenerService

    settings = settings_from(ctx, scp_port=port, workers=workers)
    ListenerService(settings).run()


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row[name] is None else str(row[name]) for name in columns))
    Console().print(table)


@studies_app.command("list")
def studies_list(
    ctx: typer.Context, as_json: JsonOption = False, limit: LimitOption = 1000
) -> None:
    """List received studies, most recent first."""
    settings = settings_from(ctx)
    with closing(index.connect(settings.data_dir)) as conn:
        rows = queries.list_studies(conn, limit)
    columns = ["study_uid", "patient_id_hash", "study_date", "instances", "state", "version"]
    _print_rows(rows, columns, as_json)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    as_json: JsonOption = False,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: LimitOption = 1000,
) -> None:
    """List processing jobs, most recent first."""
    if state is not None and state not in JOB_STATES:
        raise typer.BadParameter(f"one of {', '.join(JOB_STATES)}", param_hint="--state")
    settings = settings_from(ctx)
    with closing(index.connect(settings.data_dir)) as conn:
        rows = queries.list_jobs(conn, state, limit)
    columns = ["id", "study_uid", "version", "state", "attempts", "last_error"]
    _print_rows(rows, columns, as_json)


@jobs_app.command("retry")
def jobs_retry(
    ctx: typer.Context,
    job_ids: Annotated[list[int] | None, typer.Argument(help="Job ids to re-queue.")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Re-queue every dead job.")] = False,
) -> None:
    """Re-queue failed or dead jobs with a fresh attempt budget."""
    settings = settings_from(ctx)
    with closing(index.connect(settings.data_dir)) as conn:
        queue = JobQueue(conn, settings)
        ids = list(job_ids or [])
        if all_dead:
            ids += queue.dead_ids()
        if not ids:
            typer.secho("no job ids given", err=True)
            raise typer.Exit(2)
        count = queue.retry(ids)
    with audit.configured(settings):
        audit.record(
            "job_retried",
            component="cli",
            actor=audit.process_user(),
            outcome="requeued" if count else "not_retryable",
            details={"jobs": sorted(set(ids)), "requeued": count},
        )
    typer.echo(f"re-queued {count} job(s)")
    if count < len(set(ids)):
        raise typer.Exit(1)


@outbox_app.command("list")
def outbox_list(
    ctx: typer.Context,
    as_json: JsonOption = False,
    states: Annotated[
        list[str] | None,
        typer.Option(
            "--state", help="Only items in this state (repeatable): queued, sending, sent, dead."
        ),
    ] = None,
    limit: LimitOption = 1000,
) -> None:
    """List outgoing items, most recent first (delivered items show as done)."""
    # Function-local: the sender module imports httpx, pynetdicom and the FHIR
    # auth stack (seconds), for the destinations shown here only.
    from icibenefit.listener.outbox import list_items

    try:
        normalise_states(states or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--state") from None
    settings = settings_from(ctx)
    with closing(index.connect(settings.data_dir)) as conn:
        rows = list_items(conn, settings, states, limit)
    columns = ["id", "kind", "state", "attempts", "destination", "last_error"]
    _print_rows(rows, columns, as_json)


@outbox_app.command("retry")
def outbox_retry(
    ctx: typer.Context,
    item_ids: Annotated[list[int] | None, typer.Argument(help="Dead item ids to re-send.")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Re-send every dead item.")] = False,
) -> None:
    """Re-queue dead letters (attempts reset, due now); the running service sends them.

    Refuses, changing nothing, if any id is not a dead item.
    """
    settings = settings_from(ctx)
    with closing(index.connect(settings.data_dir)) as conn:
        ids = list(item_ids or [])
        if all_dead:
            ids += dead_ids(conn)
        elif not ids:
            typer.secho("no item ids given (or --all-dead)", err=True)
            raise typer.Exit(2)
        with audit.configured(settings):
            try:
                requeued = requeue_dead(conn, ids, actor=audit.process_user(), component="cli")
            except NotRetryableError as exc:
                typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
                raise typer.Exit(1) from None
    typer.echo(f"re-queued {len(requeued)} item(s)")
