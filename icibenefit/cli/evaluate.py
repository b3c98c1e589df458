"""The ``evaluate`` command: the paper's evaluation of a predictions table.

The CSV has ``patient_id``, ``y`` (0/1), one ``score:<model>`` column per model
and optionally ``pfs_months``, ``pfs_event``, ``os_months``, ``os_event``. All
statistics come from :func:`icibenefit.training.evaluation.evaluate_models`, the
same code the training report uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from icibenefit.cli.common import configure_logging, settings_from
from icibenefit.errors import TrainingError

# icibenefit.training.evaluation (lifelines, scikit-learn: seconds) is imported
# inside the functions, so other commands do not pay for it.
if TYPE_CHECKING:
    import pandas as pd

    from icibenefit.training.evaluation import ModelLabel, SurvivalData

SCORE_PREFIX = "score:"


def _read_predictions(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot read predictions {path}: {exc}") from None
    missing = {"patient_id", "y"} - set(table.columns)
    if missing:
        raise TrainingError(f"predictions CSV lacks column(s): {', '.join(sorted(missing))}")
    if table["patient_id"].duplicated().any():
        raise TrainingError("predictions CSV lists a patient more than once")
    if table["y"].isna().any():
        raise TrainingError("predictions CSV has rows without a label y")
    if not any(column.startswith(SCORE_PREFIX) for column in table.columns):
        raise TrainingError(f"predictions CSV has no '{SCORE_PREFIX}<model>' column")
    return table


def _survival_columns(table: pd.DataFrame) -> dict[str, SurvivalData]:
    from icibenefit.training.evaluation import SurvivalData

    outcomes = {}
    for outcome in ("pfs", "os"):
        time_column, event_column = f"{outcome}_months", f"{outcome}_event"
        present = {time_column, event_column} & set(table.columns)
        if len(present) == 1:
            raise TrainingError(f"{outcome}: give both {time_column} and {event_column}")
        if present:
            outcomes[outcome] = SurvivalData.of(table[time_column], table[event_column])
    return outcomes


def _labels(specs: list[str]) -> dict[str, ModelLabel]:
    from icibenefit.training.evaluation import ModelLabel

    labels = {}
    for spec in specs:
        name, separator, text = spec.partition("=")
        if not separator or not name:
            raise TrainingError(f"--label wants MODEL=Model name|Features, got {spec!r}")
        model, _, features = text.partition("|")
        labels[name] = ModelLabel(model or name, features)
    return labels


def evaluate(
    ctx: typer.Context,
    predictions: Annotated[
        Path, typer.Option("--predictions", help="CSV: patient_id, y, score:<model>..., outcomes.")
    ],
    endpoint: Annotated[str, typer.Option("--endpoint", help="Endpoint name, e.g. pfs6.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    n_boot: Annotated[int, typer.Option("--n-boot", min=1, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int | None, typer.Option("--seed", help="Bootstrap seed.")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            help="Table names of a model: MODEL='RF-longitudinal|Clinical data' (repeatable).",
        ),
    ] = None,
) -> None:
    """Evaluate predictions against outcomes as the paper does (metrics.json, tables, plots)."""
    from icibenefit.training.evaluation import DEFAULT_SEED, evaluate_models, write_report

    configure_logging(settings_from(ctx))
    if not endpoint.strip():
        raise TrainingError("--endpoint must not be empty")
    table = _read_predictions(predictions)
    scores = {
        column.removeprefix(SCORE_PREFIX): table[column].to_numpy(dtype=float)
        for column in table.columns
        if column.startswith(SCORE_PREFIX)
    }
    labels = _labels(label or [])
    unknown = set(labels) - set(scores)
    if unknown:
        raise TrainingError(f"--label names unknown model(s): {', '.join(sorted(unknown))}")
    result = evaluate_models(
        table["y"].to_numpy(),
        scores,
        endpoint=endpoint,
        survival=_survival_columns(table),
        labels=labels,
        n_boot=n_boot,
        seed=DEFAULT_SEED if seed is None else seed,
    )
    written = write_report(result, out)
    typer.echo(f"wrote {len(written)} outputs to {out} (metrics: {written['metrics']})")
