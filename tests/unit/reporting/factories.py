"""Small CT series, SEG objects and Predictions for the reporting tests.

Built by hand with pydicom/highdicom so the reporting tests do not depend on
the synthetic cohort generator; a few 16x16 slices keep them fast.
"""

from __future__ import annotations

import datetime as dt

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from icibenefit.domain import (
    EndpointPrediction,
    FeatureContribution,
    ImagingTimepoint,
    Prediction,
)

PATIENT_ID = "SYN-0001"
TREATMENT_START = dt.date(2024, 3, 1)


def make_ct_series(
    study_uid: str,
    series_uid: str,
    study_date: dt.date,
    n_slices: int = 3,
    size: int = 16,
    patient_id: str = PATIENT_ID,
) -> list[Dataset]:
    """A tiny axial CT series with the attributes the CT Image IOD requires."""
    frame_uid = generate_uid(entropy_srcs=[series_uid, "frame"])
    rng = np.random.default_rng(7)
    slices = []
    for index in range(n_slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop_uid = generate_uid(entropy_srcs=[series_uid, str(index)])
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = "Synthetic^Patient"
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "F"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyDate = study_date.strftime("%Y%m%d")
        ds.StudyTime = "100000"
        ds.ContentDate = ds.StudyDate
        ds.ContentTime = "100000"
        ds.AccessionNumber = "ACC" + study_date.strftime("%y%m%d")
        ds.StudyID = "1"
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.Manufacturer = "Synthetic"
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0.0, 0.0, float(index) * 2.0]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.0
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.PatientPosition = "HFS"
        pixels = rng.integers(-1000, 400, size=(size, size)).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        slices.append(ds)
    return slices


def make_seg(ct: list[Dataset], label: str = "tumour") -> hd.seg.Segmentation:
    """A one-segment binary SEG of a small cube in the middle of the series."""
    size = int(ct[0].Rows)
    mask = np.zeros((len(ct), size, size), dtype=bool)
    mask[:, size // 4 : size // 2, size // 4 : size // 2] = True
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    series_uid = str(ct[0].SeriesInstanceUID)
    return hd.seg.Segmentation(
        source_images=ct,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(entropy_srcs=[series_uid, "seg-series"]),
        series_number=300,
        sop_instance_uid=generate_uid(entropy_srcs=[series_uid, "seg"]),
        instance_number=1,
        manufacturer="Synthetic",
        manufacturer_model_name="factory",
        software_versions="1",
        device_serial_number="1",
    )


class Case:
    """One synthetic patient: CT series + SEG per timepoint and a matching Prediction."""

    def __init__(self, n_followups: int = 2, patient_id: str = PATIENT_ID) -> None:
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
