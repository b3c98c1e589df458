"""The ``synth`` command group: synthetic data for tests, demos and training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

synth_app = typer.Typer(help="Generate synthetic data.", no_args_is_help=True)


@synth_app.callback()
def synth() -> None:
    """Generate synthetic data (there is no real patient data in this project)."""


@synth_app.command("cohort")
def synth_cohort(
    out: Annotated[Path, typer.Option("--out", help="Target directory (new or empty).")],
    patients: Annotated[int, typer.Option("--patients", min=1, help="Number of patients.")] = 40,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed; same seed, same bytes.")] = 1,
    size: Annotated[
        str, typer.Option("--size", help="small (64x64x24, tests) or full (512x512x150).")
    ] = "small",
    signal: Annotated[
        float | None,
        typer.Option(
            "--signal", min=0.0, help="Predictability of outcomes (default: tuned value)."
        ),
    ] = None,
    identifier_system: Annotated[
        str | None,
        typer.Option(
            "--identifier-system",
            help="FHIR Patient.identifier system of the PatientID "
            "(default urn:icibenefit:synthetic:mrn).",
        ),
    ] = None,
    survival_scale: Annotated[
        float | None,
        typer.Option(
            "--survival-scale",
            min=1.0,
            help="Stretch of survival for good responders: 1 (default) median OS ~10 months; "
            "8 a long-survival cohort (seed 2) with estimable 36-month endpoints.",
        ),
    ] = None,
) -> None:
    """Generate a synthetic cohort (DICOM CT + SEG/RTSTRUCT, FHIR NDJSON, CSV, manifest)."""
    from icibenefit.synth import DEFAULT_SIGNAL, DEFAULT_SURVIVAL_SCALE, generate_cohort
    from icibenefit.synth.fhir_resources import DEFAULT_IDENTIFIER_SYSTEM

    if size not in ("small", "full"):
        raise typer.BadParameter("must be 'small' or 'full'", param_hint="--size")
    chosen: Literal["small", "full"] = "small" if size == "small" else "full"
    try:
        manifest = generate_cohort(
            out,
            patients,
            seed,
            size=chosen,
            signal=DEFAULT_SIGNAL if signal is None else signal,
            identifier_system=identifier_system or DEFAULT_IDENTIFIER_SYSTEM,
            survival_scale=DEFAULT_SURVIVAL_SCALE if survival_scale is None else survival_scale,
        )
    except FileExistsError as exc:
        raise typer.BadParameter(str(exc), param_hint="--out") from exc
    n_ct = sum(len(p.timepoints) for p in manifest.patients)
    n_seg = sum(1 for p in manifest.patients for t in p.timepoints if t.segmentation)
    typer.echo(
        f"wrote {len(manifest.patients)} patients, {n_ct} CT series, {n_seg} segmentations "
        f"to {out} (seed {seed}, size {size}, signal {manifest.signal:g})"
    )
