"""The paper's evaluation: AUC with bootstrap CIs, DeLong, threshold metrics, survival, calibration.

Typical use (the training report and ``icibenefit evaluate`` both do this)::

    from icibenefit.training.evaluation import evaluate_models, write_report

    result = evaluate_models(
        y_test,
        {"rf-longitudinal-clinical": p1, "ensemble-longitudinal": p2},
        endpoint="pfs6",
        survival={"pfs": (pfs_months, pfs_event), "os": (os_months, os_event)},
        n_boot=1000,
        seed=0,
    )
    result.comparison("rf-longitudinal-clinical", "ensemble-longitudinal").result.p
    write_report(result, out_dir)

Every statistic is checked against R (pROC, survival) or the reference Python
library in ``tests/integration/evaluation``.
"""

from icibenefit.training.evaluation.api import (
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    EvaluationResult,
    ModelEvaluation,
    ModelLabel,
    PairedComparison,
    SurvivalData,
    evaluate_models,
)
from icibenefit.training.evaluation.calibration import (
    CalibrationMetrics,
    HosmerLemeshow,
    calibration_metrics,
    hosmer_lemeshow,
)
from icibenefit.training.evaluation.classification import (
    DiscriminationMetrics,
    Estimate,
    discrimination_metrics,
)
from icibenefit.training.evaluation.report import write_report
from icibenefit.training.evaluation.roc import DelongResult, auc, delong_test
from icibenefit.training.evaluation.survival import SurvivalMetrics, survival_metrics
from icibenefit.training.evaluation.tables import (
    calibration_table,
    delong_table,
    discrimination_table,
    survival_table,
    to_markdown,
)

__all__ = [
    "DEFAULT_N_BOOT",
    "DEFAULT_SEED",
    "CalibrationMetrics",
    "DelongResult",
    "DiscriminationMetrics",
    "Estimate",
    "EvaluationResult",
    "HosmerLemeshow",
    "ModelEvaluation",
    "ModelLabel",
    "PairedComparison",
    "SurvivalData",
    "SurvivalMetrics",
    "auc",
    "calibration_metrics",
    "calibration_table",
    "delong_table",
    "delong_test",
    "discrimination_metrics",
    "discrimination_table",
    "evaluate_models",
    "hosmer_lemeshow",
    "survival_metrics",
    "survival_table",
    "to_markdown",
    "write_report",
]
