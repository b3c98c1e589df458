"""The ``demo`` command that ``make run`` runs."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from icibenefit import audit
from icibenefit.cli.common import configure_logging, settings_from


def demo(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (overrides data_dir).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="DICOM port of the demo's SCP (default: a free port).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the reports after sending.")
    ] = 300.0,
) -> None:
    """Run the whole loop on embedded defaults: synthetic patient in, reports out."""
    # Function-local: the demo imports the service and the reporting pipeline
    # (highdicom, pyradiomics' dependencies: seconds) that other commands do not need.
    from icibenefit import demo as demo_steps
    from icibenefit.listener.jobs import RECORDING_FACTORY

    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
    settings = settings_from(
        ctx, data_dir=data_dir, scp_port=port, study_quiet_seconds=2.0, status_port=0
    )
    configure_logging(settings)
    audit.configure(settings)  # the demo's model promotion is audited too
    for noisy in ("shap", "pynetdicom", "pykwalify", "radiomics", "matplotlib", "highdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console = Console()
    outcome = demo_steps.run_demo(settings, console.print, timeout=timeout)

    console.rule("result")
    for delivery in outcome.deliveries:
        what = delivery.get("report") or ("DICOM report" if delivery["kind"] == "dicom" else "FHIR")
        line = f"{what} -> {delivery['destination'] or delivery['state']}"
        if delivery.get("archived"):
            line += f" (archived: {delivery['archived']})"
        typer.echo(line)
    if outcome.summary:
        console.rule("DICOM SR summary (latest report)")
        typer.echo(outcome.summary)
        typer.echo(
            "probabilities read back from the SR: "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(outcome.probabilities.items()))
        )
    elif outcome.risk_assessment:
        console.print("No SR: the prediction used no CT (the model's clinical part only).")
    if outcome.risk_assessment:
        console.rule("FHIR RiskAssessment (latest report)")
        typer.echo(json.dumps(outcome.risk_assessment, indent=2))
    dead = [job for job in outcome.jobs if job["state"] == "dead"]
    for job in dead:
        console.print(f"[red]job {job['id']} failed: {job['last_error']}[/red]")
    if outcome.processor == RECORDING_FACTORY:
        console.print(
            "[yellow]No prediction: the pipeline is not part of this build yet; "
            "the studies were received, stored and processed by the recorder.[/yellow]"
        )
    if dead or not outcome.complete:
        raise typer.Exit(1)
