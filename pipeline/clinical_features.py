"""Clinical feature vectors from a :class:`~icibenefit.domain.ClinicalRecord`.

The same functions build the clinical features at training time (from the
cohort's records) and at inference time (from the record the FHIR client
assembled): one feature path.  Vectors are ``dict[str, float]`` with stable
names; a value that the record does not have is ``nan`` and is left to the
model's :class:`KMeansImputer`, fitted on training data only (METHOD.md,
"Clinical features").

Names
-----
``static.<name>``
    Demographics and history, one value per patient: ``static.age``,
    ``static.bmi``, ``static.pdl1_tps``, ``static.previous_surgery`` (0/1),
    and one-hot blocks ``static.sex=<v>``, ``static.histology=<v>``,
    ``static.smoking=<v>``, ``static.agent=<v>``, ``static.metastasis=<site>``.
    One-hot vocabularies are fixed here, not learned, so that a bundle's
    feature schema never depends on which categories a cohort happened to
    contain; an unknown category sets the ``other`` column, a missing one leaves
    the whole block at ``nan`` (to be imputed) rather than pretending to know.
``<timepoint>.<analyte>``
    The hemogram of a clinical timepoint (``baseline``, ``cycle2``, ``cycle3``)
    plus the derived ratios ``nlr``, ``sii``, ``plr``, ``dnlr``.

Kinds (seed 1, "Model design")
------------------------------
baseline
    Static block + baseline hemogram.
delta
    Relative net change of every hemogram value between the baseline panel and
    the first follow-up panel (cycle 2, else cycle 3), computed with
    :func:`icibenefit.pipeline.delta.relative_change` like imaging deltas.
    The static block does not change over time, so it has no delta and is not
    part of the delta vector (as for imaging deltas).
longitudinal
    Static block + the hemogram of every clinical timepoint concatenated; a
    missing panel is replaced by the closest available panel in time
    (METHOD.md).  Cycle dates are not in the record, so "closest" uses the
    nominal schedule (baseline 0, cycle 2 ~3 weeks, cycle 3 ~6 weeks); the
    baseline/cycle 3 tie for a missing cycle 2 goes to the earlier panel,
    i.e. no information from later in time leaks backwards.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.utils import Tags
from sklearn.utils.validation import check_array, check_is_fitted

from icibenefit.domain import Analyte, ClinicalRecord, LabPanel, LabTimepoint
from icibenefit.pipeline.delta import relative_change

FeatureKind = Literal["baseline", "delta", "longitudinal"]

SEX_VALUES = ("male", "female")
HISTOLOGY_VALUES = ("adenocarcinoma", "squamous", "other")
SMOKING_VALUES = ("never", "former", "current")
AGENT_VALUES = (
    "pembrolizumab",
    "nivolumab",
    "atezolizumab",
    "durvalumab",
    "cemiplimab",
    "avelumab",
    "other",
)
METASTASIS_SITES = ("liver", "brain", "bone", "adrenal", "lung", "pleura", "lymph_node", "other")
DERIVED = ("nlr", "sii", "plr", "dnlr")
LAB_TIMEPOINTS = (LabTimepoint.BASELINE, LabTimepoint.CYCLE2, LabTimepoint.CYCLE3)
#: Nominal days after T0 of each clinical timepoint, used only to order them in time.
NOMINAL_DAYS = {LabTimepoint.BASELINE: 0, LabTimepoint.CYCLE2: 21, LabTimepoint.CYCLE3: 42}

_SITE_ALIASES = {"lymph node": "lymph_node", "lymphnode": "lymph_node", "nodal": "lymph_node"}
_HISTOLOGY_ALIASES = {"epidermoid": "squamous", "squamous cell carcinoma": "squamous"}


def panel_names() -> list[str]:
    """Names (without timepoint prefix) of one hemogram panel, analytes then ratios."""
    return [analyte.value for analyte in Analyte] + list(DERIVED)


def static_names() -> list[str]:
    """Names of the time-independent block, in vector order."""
    names = ["static.age", "static.bmi", "static.pdl1_tps", "static.previous_surgery"]
    names += [f"static.sex={v}" for v in SEX_VALUES]
    names += [f"static.histology={v}" for v in HISTOLOGY_VALUES]
    names += [f"static.smoking={v}" for v in SMOKING_VALUES]
    names += [f"static.agent={v}" for v in AGENT_VALUES]
    names += [f"static.metastasis={v}" for v in METASTASIS_SITES]
    return names


def feature_names(kind: FeatureKind) -> list[str]:
    """The stable, ordered feature names of the clinical vector of ``kind``."""
    if kind == "baseline":
        return static_names() + [f"baseline.{n}" for n in panel_names()]
    if kind == "delta":
        return [f"delta.{n}" for n in panel_names()]
    return static_names() + [f"{tp.value}.{n}" for tp in LAB_TIMEPOINTS for n in panel_names()]


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _one_hot(value: str | None, vocabulary: Sequence[str], prefix: str) -> dict[str, float]:
    if value is None:
        return {f"{prefix}={v}": math.nan for v in vocabulary}
    chosen = value if value in vocabulary else "other"
    return {f"{prefix}={v}": float(v == chosen) for v in vocabulary}


def static_features(record: ClinicalRecord) -> dict[str, float]:
    """Demographics and history of ``record`` (see the module docstring for names)."""
    features = {
        "static.age": _nan(record.age_at_treatment_start),
        "static.bmi": _nan(record.bmi),
        "static.pdl1_tps": _nan(record.pdl1_tps),
        "static.previous_surgery": _nan(
            None if record.previous_surgery is None else float(record.previous_surgery)
        ),
    }
    sex = record.sex if record.sex in SEX_VALUES else None
    # "other"/"unknown" sex carries no usable category: the block is imputed.
    features |= {
        f"static.sex={v}": math.nan if sex is None else float(v == sex) for v in SEX_VALUES
    }
    histology = None if record.histology is None else record.histology.strip().lower()
    histology = _HISTOLOGY_ALIASES.get(histology or "", histology)
    features |= _one_hot(histology, HISTOLOGY_VALUES, "static.histology")
    # The smoking block has no "other": every accepted value is in the vocabulary.
    features |= {
        f"static.smoking={v}": math.nan
        if record.smoking_status is None
        else float(v == record.smoking_status)
        for v in SMOKING_VALUES
    }
    agent = None if record.treatment_agent is None else record.treatment_agent.strip().lower()
    features |= _one_hot(agent, AGENT_VALUES, "static.agent")
    sites = {
        _SITE_ALIASES.get(s.strip().lower(), s.strip().lower()) for s in record.metastasis_sites
    }
    sites = {s if s in METASTASIS_SITES else "other" for s in sites}
    # An empty tuple means "no metastasis recorded", which the record cannot tell
    # apart from "not documented"; it is read as absence (the usual EHR reading).
    features |= {f"static.metastasis={v}": float(v in sites) for v in METASTASIS_SITES}
    return features


def panel_features(panel: LabPanel) -> dict[str, float]:
    """The hemogram values of one panel and its derived ratios, ``nan`` when missing."""
    values = {analyte.value: _nan(panel.get(analyte)) for analyte in Analyte}
    values |= {
        "nlr": _nan(panel.nlr),
        "sii": _nan(panel.sii),
        "plr": _nan(panel.plr),
        "dnlr": _nan(panel.dnlr),
    }
    return values


def available_timepoints(record: ClinicalRecord) -> list[LabTimepoint]:
    """Clinical timepoints with at least one measured analyte, in time order."""
    return [tp for tp in LAB_TIMEPOINTS if record.panel(tp).values]


def has_followup(record: ClinicalRecord) -> bool:
    """Whether the record has a hemogram after treatment start (needed for delta/longitudinal)."""
    return any(tp != LabTimepoint.BASELINE for tp in available_timepoints(record))


def _closest_available(target: LabTimepoint, available: Sequence[LabTimepoint]) -> LabTimepoint:
    # Ties go to the earlier panel (min over (distance, day)).
    return min(
        available,
        key=lambda tp: (abs(NOMINAL_DAYS[tp] - NOMINAL_DAYS[target]), NOMINAL_DAYS[tp]),
    )


def clinical_vector(
    record: ClinicalRecord, kind: FeatureKind, *, require_followup: bool = True
) -> dict[str, float] | None:
    """The clinical feature vector of ``kind`` for ``record``.

    Returns
    -------
    dict or None
        Values keyed by :func:`feature_names` (same order), or ``None`` when the
        record cannot feed that kind: no baseline panel and no static data is
        still a baseline vector (all imputed), but delta needs a baseline and a
        follow-up panel and longitudinal needs at least one follow-up panel, as
        patients without follow-up were excluded from those analyses in seed 1.
        With ``require_followup=False`` a longitudinal vector is still built
        from whatever panels exist (inference for a patient whose CT has
        follow-ups but whose labs do not); with no panel at all its hemogram
        blocks are ``nan``.
    """
    available = available_timepoints(record)
    if kind == "baseline":
        return static_features(record) | {
            f"baseline.{k}": v
            for k, v in panel_features(record.panel(LabTimepoint.BASELINE)).items()
        }
    followups = [tp for tp in available if tp != LabTimepoint.BASELINE]
    if not followups and (require_followup or kind == "delta"):
        return None
    if kind == "delta":
        if LabTimepoint.BASELINE not in available:
            return None
        before = panel_features(record.panel(LabTimepoint.BASELINE))
        after = panel_features(record.panel(followups[0]))
        return {f"delta.{k}": relative_change(before[k], after[k]) for k in before}
    vector = static_features(record)
    for tp in LAB_TIMEPOINTS:
        source = tp if tp in available or not available else _closest_available(tp, available)
        vector |= {f"{tp.value}.{k}": v for k, v in panel_features(record.panel(source)).items()}
    return vector


def imputation_decisions(record: ClinicalRecord) -> list[str]:
    """Human-readable notes on which panels the longitudinal vector had to borrow."""
    available = available_timepoints(record)
    if not available:
        return ["no hemogram available: every lab value imputed by the model"]
    return [
        f"hemogram {tp.value} missing: replaced by {_closest_available(tp, available).value}"
        for tp in LAB_TIMEPOINTS
        if tp not in available
    ]


def lab_observation_ids(record: ClinicalRecord) -> list[str]:
    """Every Observation id the clinical vectors were built from, sorted."""
    return sorted({oid for tp in LAB_TIMEPOINTS for oid in record.panel(tp).source_observation_ids})


def as_row(vector: Mapping[str, float], names: Sequence[str]) -> NDArray[np.float64]:
    """Order ``vector`` by ``names`` into a float row (missing names become ``nan``)."""
    return np.array([vector.get(name, math.nan) for name in names], dtype=np.float64)


class KMeansImputer(TransformerMixin, BaseEstimator):
    """Impute missing values from the nearest k-means centroid (seed 1: "k-means algorithm").

    Neither scikit-learn (``SimpleImputer``, ``KNNImputer``, ``IterativeImputer``)
    nor imbalanced-learn ships a k-means imputer, so this is the classic
    k-means imputation written on top of :class:`sklearn.cluster.KMeans`:

    ``fit``
        Columns are standardised with the nan-aware training mean and standard
        deviation (so that no unit dominates the distances).  Missing entries
        start at the column mean (0 after standardising); then, ``n_iter``
        times, k-means is fitted on the filled matrix and every missing entry is
        replaced by its row's centroid value.  The final centroids are kept.
    ``transform``
        Each row is assigned to the centroid nearest on its *observed*
        standardised coordinates only, and its missing entries take that
        centroid's values (mapped back to the original units).  Observed values
        are never changed.  A column that was entirely missing in training is
        filled with 0.

    Parameters
    ----------
    n_clusters
        Number of clusters; reduced to the number of training rows when larger.
    n_iter
        Fill-and-refit rounds during ``fit`` (the fills barely move after three).
    random_state
        Seed of k-means' initialisation.
    """

    def __init__(self, n_clusters: int = 5, n_iter: int = 3, random_state: int = 0) -> None:
        # scikit-learn's contract: store only; ``fit`` validates (so ``set_params`` is checked too).
        self.n_clusters = n_clusters
        self.n_iter = n_iter
        self.random_state = random_state

    def __sklearn_tags__(self) -> Tags:
        """Missing values (``nan``) are what this estimator exists for."""
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X: NDArray[np.float64], y: object = None) -> KMeansImputer:
        """Learn the standardisation and the centroids from training data.

        Raises
        ------
        ValueError
            When ``n_clusters`` or ``n_iter`` is below 1.
        """
        if self.n_clusters < 1:
            raise ValueError("n_clusters must be >= 1")
        if self.n_iter < 1:
            raise ValueError("n_iter must be >= 1")
        data = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
        self.n_features_in_ = data.shape[1]
        with warnings.catch_warnings():
            # An all-missing column has no mean: it is filled with 0 below.
            warnings.simplefilter("ignore", category=RuntimeWarning)
            mean = np.nanmean(data, axis=0)
            scale = np.nanstd(data, axis=0)
        self.mean_ = np.where(np.isnan(mean), 0.0, mean)
        self.scale_ = np.where(np.isnan(scale) | (scale == 0), 1.0, scale)
        standard = (data - self.mean_) / self.scale_
        missing = np.isnan(standard)
        filled = np.where(missing, 0.0, standard)
        k = min(self.n_clusters, data.shape[0])
        for _ in range(self.n_iter):
            kmeans = KMeans(n_clusters=k, n_init=1, random_state=self.random_state).fit(filled)
            filled = np.where(missing, kmeans.cluster_centers_[kmeans.labels_], standard)
            if not missing.any():
                break
        self.cluster_centers_ = kmeans.cluster_centers_
        return self

    def transform(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Fill the missing entries of ``X`` from each row's nearest centroid."""
        check_is_fitted(self, "cluster_centers_")
        # check_array is untyped; it returns a float64 array (a copy only when needed).
        data: NDArray[np.float64] = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
        if data.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {data.shape[1]} features, but KMeansImputer is expecting "
                f"{self.n_features_in_} features as input"
            )
        standard = (data - self.mean_) / self.scale_
        missing = np.isnan(standard)
        if not missing.any():
            return data
        observed = np.where(missing, 0.0, standard)
        # Squared distance over observed coordinates only, for every (row, centroid).
        diff = observed[:, None, :] - self.cluster_centers_[None, :, :]
        distance = np.einsum("rck,rk->rc", diff**2, (~missing).astype(np.float64))
        nearest = self.cluster_centers_[np.argmin(distance, axis=1)]
        imputed = nearest * self.scale_ + self.mean_
        return np.where(missing, imputed, data)
