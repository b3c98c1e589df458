"""Small CT series, SEG objects and Predictions for the reporting tests.

Built with the shared factory (``tests.peers.dicom_objects``) so the reporting
tests do not depend on the synthetic cohort generator; a few 16x16 slices keep
them fast, and UIDs follow from the series UID so objects are reproducible.
"""

from __future__ import annotations

import datetime as dt

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from icibenefit.domain import (
    EndpointPrediction,
    FeatureContribution,
    ImagingTimepoint,
    Prediction,
)
from tests.peers.dicom_objects import CtHeader, ct_series, seg_from_mask, sphere_hu

PATIENT_ID = "SYN-0001"
TREATMENT_START = dt.date(2024, 3, 1)


def make_ct_series(
    study_uid: str,
    series_uid: str,
    study_date: dt.date,
    n_slices: int = 3,
    size: int = 16,
    patient_id: str = PATIENT_ID,
    hu: np.ndarray | None = None,
) -> list[Dataset]:
    """An axial CT series whose UIDs follow from its series UID (tiny noise unless ``hu``)."""
    header = CtHeader(
        study_uid=study_uid,
        series_uid=series_uid,
        frame_of_reference_uid=generate_uid(entropy_srcs=[series_uid, "frame"]),
        patient_id=patient_id,
        patient_name="Synthetic^Patient",
        study_date=study_date,
        study_time="100000",
        accession_number="ACC" + study_date.strftime("%y%m%d"),
    )
    if hu is None:
        hu = np.random.default_rng(7).integers(-1000, 400, size=(n_slices, size, size))
    return ct_series(
        hu,
        header=header,
        spacing=(1.0, 1.0, 2.0),
        origin=(0.0, 0.0, 0.0),
        intercept=0.0,
        stable_uids=True,
        shuffle_seed=None,
    )


def make_seg(ct: list[Dataset], label: str = "tumour") -> hd.seg.Segmentation:
    """A one-segment binary SEG of a small cube in the middle of the series."""
    size = int(ct[0].Rows)
    mask = np.zeros((len(ct), size, size), dtype=bool)
    mask[:, size // 4 : size // 2, size // 4 : size // 2] = True
    return seg_from_mask(ct, {label: mask}, stable_uids=True)


def tumour_ct(
    radius_vox: float, size: int = 128, n_slices: int = 24
) -> tuple[np.ndarray, np.ndarray]:
    """A chest-like volume (air-filled lung in soft tissue) with a spherical tumour.

    For viewer tests, where a 16x16 noise image would show nothing a radiologist
    could recognise; returns (HU (z, y, x), tumour mask).
    """
    hu, tumour = sphere_hu(
        (n_slices, size, size),
        (n_slices / 2, size * 0.45, size * 0.6),
        radius_vox,
        spacing=(1.0, 1.0, 2.0),
        inside=35.0,
        outside=-850.0,
        noise=25.0,
        seed=int(radius_vox * 10),
    )
    _, yy, xx = np.indices(hu.shape)
    body = ((yy - size / 2) / (size * 0.47)) ** 2 + ((xx - size / 2) / (size * 0.49)) ** 2 <= 1
    lung = ((yy - size / 2) / (size * 0.38)) ** 2 + ((xx - size / 2) / (size * 0.42)) ** 2 <= 1
    hu = np.where(body & ~lung & ~tumour, 40.0, hu)
    hu = np.where(~body, -1000.0, hu)
    return hu, tumour


class Case:
    """One synthetic patient: CT series + SEG per timepoint and a matching Prediction.

    ``anatomy`` builds 128x128x24 chest-like CTs with a tumour that shrinks over
    the timepoints (for the viewer tests) instead of tiny noise images.
    """

    def __init__(
        self, n_followups: int = 2, patient_id: str = PATIENT_ID, *, anatomy: bool = False
    ) -> None:
        self.patient_id = patient_id
        self.images: list[Dataset] = []
        self.segmentations: list[Dataset] = []
        self.timepoints: list[ImagingTimepoint] = []
        offsets = [-10, 40, 85][: n_followups + 1]
        labels = ["baseline", "followup1", "followup2"]
        for label, offset in zip(labels, offsets, strict=False):
            study_uid = generate_uid(entropy_srcs=[patient_id, label, "study"])
            series_uid = generate_uid(entropy_srcs=[patient_id, label, "series"])
            date = TREATMENT_START + dt.timedelta(days=offset)
            if anatomy:
                hu, tumour = tumour_ct(radius_vox=9.0 - 2.5 * len(self.segmentations))
                ct = make_ct_series(study_uid, series_uid, date, patient_id=patient_id, hu=hu)
                seg = seg_from_mask(ct, {"tumour": tumour}, stable_uids=True)
            else:
                ct = make_ct_series(study_uid, series_uid, date, patient_id=patient_id)
                seg = make_seg(ct)
            self.images.extend(ct)
            self.segmentations.append(seg)
            self.timepoints.append(
                ImagingTimepoint(
                    label=label,  # type: ignore[arg-type]
                    study_uid=study_uid,
                    series_uid=series_uid,
                    study_date=date,
                    days_from_treatment_start=offset,
                    image_sop_uids=tuple(str(ds.SOPInstanceUID) for ds in ct),
                    segmentation_sop_uid=str(seg.SOPInstanceUID),
                    segmentation_sop_class_uid=str(seg.SOPClassUID),
                    segment_number=1,
                )
            )

    def prediction(
        self,
        probabilities: dict[str, float] | None = None,
        *,
        demonstration: bool = True,
        timepoints: list[ImagingTimepoint] | None = None,
        labs: tuple[str, ...] = ("obs-wbc-1", "obs-neu-1", "obs-lym-1"),
    ) -> Prediction:
        probabilities = probabilities or {"pfs6": 0.73, "pfs9": 0.41}
        endpoints = tuple(
            EndpointPrediction(
                endpoint=name,
                probability=p,
                risk="high" if p < 0.5 else "low",
                model="longitudinal ensemble (clinical + radiomics)",
                top_features=(
                    FeatureContribution(name="nlr_baseline", value=4.2, contribution=-0.08),
                    FeatureContribution(name="delta_volume", value=-0.3, contribution=0.11),
                ),
            )
            for name, p in probabilities.items()
        )
        return Prediction(
            patient_id=self.patient_id,
            bundle_name="icibenefit-demo",
            bundle_version="2024.1.0",
            demonstration=demonstration,
            ensemble_kind="longitudinal",
            treatment_start=TREATMENT_START,
            imaging=tuple(timepoints if timepoints is not None else self.timepoints),
            lab_observation_ids=labs,
            endpoints=endpoints,
            decisions=("followup2 chosen: latest CT within 4 months",),
            created=dt.datetime(2024, 6, 1, 12, 0, 0),
        )
