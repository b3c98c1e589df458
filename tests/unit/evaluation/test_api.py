from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from icibenefit.cli import app
from icibenefit.errors import TrainingError
from icibenefit.training.evaluation import (
    ModelLabel,
    discrimination_table,
    evaluate_models,
    survival_table,
    write_report,
)

MODEL_KEYS = {
    "auc", "auc_ci", "acc", "acc_ci", "sens", "sens_ci", "spec", "spec_ci",
    "prec", "prec_ci", "bacc", "bacc_ci", "survival",
}  # fmt: skip
SURVIVAL_KEYS = {"logrank_chi2", "logrank_p", "hr", "hr_ci", "cox_p", "c_index"}


def _cohort(seed: int = 0, n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "y": y,
            "score:clinical": np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1),
            "score:ensemble": np.clip(0.5 + 0.5 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1),
            "pfs_months": rng.exponential(6 + 6 * y),
            "pfs_event": rng.integers(0, 2, n),
            "os_months": rng.exponential(12 + 6 * y),
            "os_event": rng.integers(0, 2, n),
        }
    )


def test_metrics_json_has_exactly_the_issue_schema() -> None:
    cohort = _cohort()
    result = evaluate_models(
        cohort["y"],
        {"clinical": cohort["score:clinical"], "ensemble": cohort["score:ensemble"]},
        endpoint="pfs6",
        survival={"pfs": (cohort["pfs_months"], cohort["pfs_event"])},
        n_boot=50,
        seed=1,
    )
    document = result.metrics_json()
    assert set(document) == {"endpoint", "n", "models", "delong"}
    assert document["n"] == 60
    assert set(document["models"]) == {"clinical", "ensemble"}
    for entry in document["models"].values():
        assert set(entry) == MODEL_KEYS
        assert set(entry["survival"]) == {"pfs"}
        assert set(entry["survival"]["pfs"]) == SURVIVAL_KEYS
        assert len(entry["auc_ci"]) == 2
    assert document["delong"] == [
        {
            "a": "clinical",
            "b": "ensemble",
            "auc_a": pytest.approx(document["models"]["clinical"]["auc"]),
            "auc_b": pytest.approx(document["models"]["ensemble"]["auc"]),
            "z": pytest.approx(result.comparison("ensemble", "clinical").result.z),
            "p": pytest.approx(result.delong[0].result.p),
        }
    ]
    json.dumps(document, allow_nan=False)  # strict JSON


def test_undefined_statistics_become_null() -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    result = evaluate_models(
        y,
        {"all-high": [0.6, 0.7, 0.8, 0.9, 0.65, 0.95]},
        endpoint="pfs6",
        survival={"os": ([1, 2, 3, 4, 5, 6], [1, 0, 1, 0, 1, 1])},
        n_boot=20,
    )
    survival = result.metrics_json()["models"]["all-high"]["survival"]["os"]
    assert survival["hr"] is None
    assert survival["logrank_p"] is None
    assert survival["c_index"] is not None


def test_missing_survival_rows_are_left_out_of_that_outcome_only() -> None:
    cohort = _cohort(2)
    times = cohort["os_months"].to_numpy().copy()
    times[:10] = np.nan
    result = evaluate_models(
        cohort["y"],
        {"m": cohort["score:clinical"]},
        endpoint="os12",
        survival={"os": (times, cohort["os_event"])},
        n_boot=20,
    )
    assert result.n == 60
    assert result.models["m"].survival["os"].n == 50


def test_input_errors() -> None:
    with pytest.raises(TrainingError, match="no model scores"):
        evaluate_models([0, 1], {}, endpoint="pfs6")
    with pytest.raises(TrainingError, match="unknown model"):
        evaluate_models([0, 1, 0], {"a": [0.1, 0.2, 0.3]}, endpoint="x", delong_pairs=[("a", "b")])
    with pytest.raises(TrainingError, match="one value per patient"):
        evaluate_models(
            [0, 1, 0], {"a": [0.1, 0.2, 0.3]}, endpoint="x", survival={"pfs": ([1, 2], [1, 1])}
        )


def test_tables_follow_the_paper_layout() -> None:
    cohort = _cohort(3)
    result = evaluate_models(
        cohort["y"],
        {"a": cohort["score:clinical"]},
        endpoint="pfs9",
        survival={"pfs": (cohort["pfs_months"], cohort["pfs_event"])},
        labels={"a": ModelLabel("RF-longitudinal", "Clinical data")},
        n_boot=30,
    )
    table = discrimination_table([result, result])
    assert list(table.columns[:4]) == ["Endpoint", "Model", "Features", "N test"]
    assert table.loc[0, "Model"] == "RF-longitudinal"
    auc = result.models["a"].discrimination.auc
    assert table.loc[0, "AUC [95% CI]"] == f"{auc.value:.3f} [{auc.ci[0]:.3f},{auc.ci[1]:.3f}]"
    assert len(table) == 2
    surv = survival_table([result])
    assert {"PFS HR [95% CI]", "PFS p-value", "PFS C-index"} <= set(surv.columns)


def test_write_report_outputs(tmp_path: Path) -> None:
    cohort = _cohort(4)
    result = evaluate_models(
        cohort["y"],
        {"a": cohort["score:clinical"], "b": cohort["score:ensemble"]},
        endpoint="pfs6",
        survival={
            "pfs": (cohort["pfs_months"], cohort["pfs_event"]),
            "os": (cohort["os_months"], cohort["os_event"]),
        },
        n_boot=30,
    )
    written = write_report(result, tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        "metrics.json", "details.json", "discrimination.md", "discrimination.csv",
        "survival.md", "survival.csv", "delong.csv", "calibration.csv", "report.md",
        "roc.png", "km_pfs.png", "km_os.png", "calibration.png",
    } <= names  # fmt: skip
    for key in ("roc", "km_pfs", "km_os", "calibration_plot"):
        assert written[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == result.metrics_json()
    markdown = (tmp_path / "out" / "discrimination.md").read_text()
    assert "**" in markdown  # best value per metric is bold
    details = json.loads((tmp_path / "out" / "details.json").read_text())
    assert details["n_boot"] == 30
    assert details["models"]["a"]["calibration"]["hosmer_lemeshow"]["df"] == 8  # 10 groups


def test_cli_writes_metrics(tmp_path: Path) -> None:
    predictions = tmp_path / "predictions.csv"
    cohort = _cohort(5)
    cohort.to_csv(predictions, index=False)
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "evaluate", "--predictions", str(predictions), "--endpoint", "pfs6",
            "--out", str(out), "--n-boot", "40", "--seed", "3",
            "--label", "ensemble=Ensemble RF-longitudinal|DF-imm + Clinical data",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "metrics.json").read_text())
    assert set(document["models"]) == {"clinical", "ensemble"}
    assert set(document["models"]["ensemble"]["survival"]) == {"pfs", "os"}
    expected = evaluate_models(
        cohort["y"],
        {"clinical": cohort["score:clinical"], "ensemble": cohort["score:ensemble"]},
        endpoint="pfs6",
        survival={
            "pfs": (cohort["pfs_months"], cohort["pfs_event"]),
            "os": (cohort["os_months"], cohort["os_event"]),
        },
        n_boot=40,
        seed=3,
    )
    assert document == json.loads(json.dumps(expected.metrics_json()))
    assert "Ensemble RF-longitudinal" in (out / "discrimination.csv").read_text()


def test_cli_rejects_bad_csv(tmp_path: Path) -> None:
    predictions = tmp_path / "p.csv"
    pd.DataFrame({"patient_id": ["a", "b"], "y": [0, 1]}).to_csv(predictions, index=False)
    result = CliRunner().invoke(
        app, ["evaluate", "--predictions", str(predictions), "--endpoint", "pfs6", "--out", "x"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, TrainingError)
    assert "score:" in str(result.exception)


def test_cli_rejects_duplicate_patients(tmp_path: Path) -> None:
    predictions = tmp_path / "p.csv"
    frame = _cohort(6, n=10)
    pd.concat([frame, frame.iloc[:1]]).to_csv(predictions, index=False)
    result = CliRunner().invoke(
        app, ["evaluate", "--predictions", str(predictions), "--endpoint", "pfs6", "--out", "x"]
    )
    assert isinstance(result.exception, TrainingError)
    assert "more than once" in str(result.exception)


def test_report_without_survival_data(tmp_path: Path) -> None:
    cohort = _cohort(7, n=30)
    result = evaluate_models(
        cohort["y"], {"a": cohort["score:clinical"]}, endpoint="os12", n_boot=20
    )
    write_report(result, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "metrics.json" in names
    assert "roc.png" in names
    assert not any(n.startswith(("km_", "survival")) for n in names)
    assert result.metrics_json()["models"]["a"]["survival"] == {}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_undefined_or_unbounded_statistics_are_null_in_json(value: float) -> None:
    """An infinite Cox HR bound (tiny, separated groups) must not break metrics.json."""
    from icibenefit.training.evaluation.api import _pair

    document = {"hr_ci": _pair((0.5, value))}
    assert json.loads(json.dumps(document, allow_nan=False)) == {"hr_ci": [0.5, None]}
