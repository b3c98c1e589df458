"""The ``train`` command: fit a recipe's models on a cohort and write a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icibenefit.cli.common import configure_logging, settings_from


def train(
    ctx: typer.Context,
    cohort: Annotated[
        Path, typer.Option("--cohort", help="Cohort folder in the synthetic-cohort layout.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to create.")],
    endpoints: Annotated[
        str | None,
        typer.Option("--endpoints", help="Comma-separated endpoints (default: the recipe's)."),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", min=1, help="Optuna trials per model (default: the recipe's)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of split, CV, tuning and forests.")] = 0,
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe",
            help="Training recipe: farina2023 (seed 1), song2025 (seed 2) or a recipe YAML file.",
        ),
    ] = "farina2023",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 2,
    report: Annotated[
        Path | None, typer.Option("--report", help="Report folder (default: <out>.report).")
    ] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", min=10, help="Bootstrap resamples.")] = 1000,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="Feature cache folder (default: .icibenefit-cache beside --out)."
        ),
    ] = None,
    quick_cnn: Annotated[
        bool,
        typer.Option("--quick-cnn", help="Minimal CNN pretraining/fine-tuning (demos, tests)."),
    ] = False,
) -> None:
    """Train the models of a recipe on a cohort and write a model bundle."""
    # Function-local: training imports torch, scikit-learn and pyradiomics (seconds).
    from icibenefit.pipeline.rules import PipelineRules
    from icibenefit.training.deep_features import CnnBudget
    from icibenefit.training.trainer import train as run_training

    settings = settings_from(ctx)
    configure_logging(settings)
    chosen = tuple(e.strip() for e in endpoints.split(",") if e.strip()) if endpoints else None
    result = run_training(
        cohort,
        out,
        recipe,
        trials,
        seed,
        endpoints=chosen,
        workers=workers,
        report_dir=report,
        cache_dir=cache,
        n_boot=n_boot,
        progress=True,
        cnn_budget=CnnBudget.quick() if quick_cnn else None,
        rules=PipelineRules.from_settings(settings),
        lidc_image_dir=settings.lidc_image_dir,
    )
    typer.echo(f"bundle: {result.bundle}")
    typer.echo(f"report: {result.report_dir / 'report.md'}")
