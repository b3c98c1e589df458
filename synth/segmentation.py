"""The tumour as a DICOM Segmentation (highdicom), one BINARY segment per timepoint."""

from __future__ import annotations

import datetime as dt

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, TM

from icibenefit.synth.ct import MANUFACTURER, SOFTWARE_VERSION, derive_uid

#: The label every synthetic tumour segment (and RTSTRUCT ROI) carries.
SEGMENT_LABEL = "Tumour"


def build_seg(
    ct_slices: list[Dataset],
    mask: np.ndarray,
    series_uid: str,
    sop_instance_uid: str,
    when: dt.datetime,
    seed_key: str,
) -> hd.seg.Segmentation:
    """Build a BINARY SEG of ``mask`` referencing every CT slice it was drawn on.

    ``mask`` is (slices, rows, columns) in the order of ``ct_slices``.  Empty
    frames are omitted (highdicom's default), so the SEG references only the
    slices that contain tumour, as annotation tools do.  Clock-derived
    attributes (content, instance creation and contribution date/time) and the random
    Dimension Organization UID highdicom draws are replaced by fixed values so
    that regeneration is byte-identical.
    """
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        tracking_uid=derive_uid(seed_key, "tumour-tracking"),
        tracking_id="primary tumour",
        anatomic_regions=[codes.SCT.Lung],
    )
    seg = hd.seg.Segmentation(
        source_images=ct_slices,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=series_uid,
        series_number=300,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="Synthetic ground truth",
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0001",
        content_description="Primary tumour (synthetic ground truth)",
        content_label="TUMOUR",
        content_date=when.date(),
        content_time=when.time(),
        series_description="Tumour segmentation",
    )
    seg.InstanceCreationDate = DA(when.date())
    seg.InstanceCreationTime = TM(when.time())
    # highdicom stamps its own "Processing Equipment" entry with now().
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")
    _fix_dimension_organization_uid(seg, derive_uid(seed_key, sop_instance_uid, "dim-org"))
    return seg


def _fix_dimension_organization_uid(seg: Dataset, uid: str) -> None:
    """Replace highdicom's random Dimension Organization UID everywhere it is used."""
    for item in seg.DimensionOrganizationSequence:
        item.DimensionOrganizationUID = uid
    for item in seg.DimensionIndexSequence:
        item.DimensionOrganizationUID = uid
