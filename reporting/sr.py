"""The DICOM report: a Comprehensive 3D SR following TID 1500, built with highdicom.

Layout of the content tree (PS3.16 TID 1500; highdicom's templates build every
row; only rows 12-14, which highdicom's ``MeasurementReport`` does not offer,
are appended with highdicom content items):

- language, observer context with the plugin as device observer (TID 1004),
  procedure reported (CID 100 "CT unspecified body region": CID 100 has no
  chest CT code, and TID 1500 row 4 takes its codes from CID 100);
- image library (TID 1600) of every CT image that fed the model;
- imaging measurements:

  * one TID 1411 group per imaging timepoint whose SEG is given with pixel
    data: the tumour segment it used, its TID 1502 time point context (so the
    SR says which timepoints fed the model) and the tumour volume;
  * one group per endpoint carrying the probability of durable clinical
    benefit (numeric), the high/low risk (qualitative), the algorithm
    (TID 4019, version = bundle version) and the reference to the tumour
    segment of the latest timepoint;

- qualitative evaluations (row 12) holding a TEXT "Finding" a radiologist can
  read, and the "not for clinical use" notice of a demonstration model.

Tracking (TID 1500's Tracking Identifier / Tracking Unique Identifier): a
tracked finding is *the tumour as segmented on one CT series* or *one
endpoint's prediction*; each gets its own Tracking Unique Identifier, derived
from the patient, the bundle name and the CT series (or endpoint), so that the
same finding keeps its UID in every report about it (reruns after late
instances, later bundle versions, later studies whose model reuses that CT).
The timepoints of the one lesion are linked by their Tracking Identifier text
("Tumour (baseline)", "Tumour (followup1)", ...) and their TID 1502 context:
Time Point (label), Time Point Type (baseline/posttreatment) and the Subject
Time Point Identifier ``T<order>-<label>-<date>``, which carries the order.
Viewers that merge groups by Tracking UID (OHIF) therefore show one
measurement per timepoint instead of one merged, ambiguous one.

Viewer safety (OHIF 3.13, extension cornerstone-dicom-sr): OHIF places a
measurement group on an image only through an SCOORD/SCOORD3D, either at group
level or as a child of a NUM, and fails ("Cannot read properties of undefined
(reading 'ReferencedSOPSequence')") on a group that has neither.  Every group
here has exactly one NUM (probability or volume) INFERRED FROM an SCOORD
(TID 320) on the key CT slice: the tumour's outline where the SEG's pixel data
is given, else the border of the middle tumour slice named by the SEG header
(:mod:`icibenefit.reporting.key_images`).  Without SEG pixel data there is no
volume to report, so the per-timepoint tumour groups are left out and the
endpoint groups remain; callers that want them pass SEGs read with pixel data.
Time Point Order (an optional NUM row of TID 1502) is not written: see
:func:`_time_point_context`.

A timepoint segmented by RTSTRUCT has no segment to reference (TID 1411 only
references SEG segments or spatial coordinates); its endpoint group is a TID
1501 group pointing at the CT images instead.

Probability unit: UCUM ``{probability}`` (an annotation: dimensionless, equal to
"1" in UCUM arithmetic, as CID 7181 does with ``{ratio}``) so that a reader sees
it is a probability in [0, 1], not a percentage.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import SegmentationStorage

from icibenefit.domain import ENDPOINTS, EndpointPrediction, ImagingTimepoint, Prediction
from icibenefit.errors import ReportError
from icibenefit.reporting import identity
from icibenefit.reporting.key_images import TumourGeometry, tumour_geometry

PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")
#: CID 100 (Quantitative Diagnostic Imaging Procedures) has no chest CT code;
#: "CT unspecified body region" is its CT entry (TID 1500 row 4 requires CID 100).
PROCEDURE_CT = codes.cid100.CTUnspecifiedBodyRegion
TUMOUR_VOLUME = codes.SCT.Volume
VOLUME_UNIT = codes.UCUM.CubicMillimeter
#: TID 1502 row order (PS3.16): identifiers, time point, its type.
TIME_POINT_ROW_ORDER = ("126070", "126071", "C2348792", "126072")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
TUMOUR = codes.SCT.Neoplasm
RISK_VALUE = {"high": codes.SCT.HighRisk, "low": codes.SCT.LowRisk}
SR_SERIES_NUMBER = 7001


def probability_concept(endpoint: str) -> Code:
    """Concept name of the probability measurement of ``endpoint`` (private scheme)."""
    return Code(
        f"{endpoint.upper()}-P",
        identity.CODING_SCHEME,
        f"Probability of being {ENDPOINTS[endpoint].outcome_text}",
    )


def risk_concept(endpoint: str) -> Code:
    """Concept name of the high/low risk evaluation of ``endpoint`` (private scheme)."""
    return Code(
        f"{endpoint.upper()}-R",
        identity.CODING_SCHEME,
        f"Risk of not being {ENDPOINTS[endpoint].outcome_text}",
    )


def summary_text(prediction: Prediction) -> str:
    """A plain-text summary for the radiologist (also the FHIR note's backbone)."""
    lines = [
        "Predicted durable clinical benefit of anti-PD-1/PD-L1 therapy "
        f"({prediction.ensemble_kind} ensemble; model {prediction.bundle_name} "
        f"version {prediction.bundle_version}).",
    ]
    for ep in prediction.endpoints:
        lines.append(
            f"{ep.endpoint.upper()}: probability of being "
            f"{ENDPOINTS[ep.endpoint].outcome_text} {ep.probability:.2f} -> {ep.risk} risk "
            f"(threshold {ep.threshold:.2f}; {ep.model})."
        )
        if ep.top_features:
            lines.append("  Top contributing features: " + top_features_text(ep) + ".")
    lines.append(f"Treatment start: {prediction.treatment_start.isoformat()}.")
    for tp in sorted(prediction.imaging, key=lambda t: t.study_date):
        lines.append(
            f"CT {tp.label}: {tp.study_date.isoformat()} "
            f"(day {tp.days_from_treatment_start:+d} from treatment start)."
        )
    lines.append(f"Laboratory observations used: {len(prediction.lab_observation_ids)}.")
    lines.extend(f"Note: {decision}" for decision in prediction.decisions)
    if prediction.demonstration:
        lines.append(identity.DEMONSTRATION_NOTICE)
    return "\n".join(lines)


def endpoint_comment(prediction: Prediction, endpoint: EndpointPrediction) -> str:
    """One line a viewer can show beside the probability (OHIF lists group comments).

    The probability and risk group are coded items of the group too; the
    comment repeats them with the model version and, for a demonstration
    model, the notice, because OHIF's SR viewport shows only NUM values and
    comments, not CODE items or algorithm identification.
    """
    text = (
        f"{endpoint.endpoint.upper()}: {endpoint.risk} risk, P(benefit) {endpoint.probability:.2f};"
        f" model {prediction.bundle_name} {prediction.bundle_version}"
    )
    if prediction.demonstration:
        text += "; demonstration model, not for clinical use"
    return text


def top_features_text(endpoint: EndpointPrediction, limit: int = 5) -> str:
    """The strongest contributions, largest absolute first, e.g. ``"nlr_baseline (-0.12)"``."""
    ranked = sorted(endpoint.top_features, key=lambda f: abs(f.contribution), reverse=True)
    return ", ".join(f"{f.name} ({f.contribution:+.3f})" for f in ranked[:limit])


def build_sr(
    prediction: Prediction,
    images: Sequence[Dataset],
    segmentations: Sequence[Dataset] = (),
    *,
    predecessor: Dataset | None = None,
    institution_name: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 SR of ``prediction``.

    Parameters
    ----------
    prediction
        What the model said and from which inputs.
    images
        The CT datasets (headers suffice) of every timepoint in
        ``prediction.imaging``; others are ignored.
    segmentations
        The SEG datasets (headers suffice) named by the timepoints.
    predecessor
        The SR of the previous run for the same study and model, when this is
        a rerun after late instances; it goes into the Predecessor Documents
        Sequence and fixes the instance number.
    institution_name
        Written to the SR when given.

    Raises
    ------
    ReportError
        When an input named by the prediction is missing from the datasets.
    """
    if not prediction.imaging:
        raise ReportError("a prediction without imaging cannot be reported in a DICOM SR")
    timepoints = sorted(prediction.imaging, key=lambda t: (t.study_date, t.label))
    images_by_tp = {tp.label: _images_of(tp, images) for tp in timepoints}
    seg_by_uid = {str(ds.SOPInstanceUID): ds for ds in segmentations}
    order = {tp.label: index + 1 for index, tp in enumerate(timepoints)}

    algorithm = hd.sr.AlgorithmIdentification(
        name=prediction.bundle_name,
        version=prediction.bundle_version,
        parameters=[f"ensemble={prediction.ensemble_kind}"],
        manufacturer=identity.MANUFACTURER,
    )
    geometry = {
        tp.label: tumour_geometry(
            images_by_tp[tp.label],
            seg_by_uid.get(tp.segmentation_sop_uid or "") if _is_seg(tp) else None,
            tp.segment_number or 1,
        )
        for tp in timepoints
    }
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    # The prediction belongs to the latest timepoint with a segmentation: that
    # is the tumour the endpoint groups reference.  Endpoint groups come first:
    # OHIF opens an SR at its first measurement, and this one lies on the CT
    # of the SR's own study (the baseline may not be loaded in the viewer).
    segmented = [tp for tp in timepoints if tp.segmentation_sop_uid] or timepoints
    anchor = segmented[-1]
    for ep in prediction.endpoints:
        groups.append(
            _group(
                anchor,
                images_by_tp[anchor.label],
                seg_by_uid,
                order[anchor.label],
                geometry[anchor.label],
                tracking=hd.sr.TrackingIdentifier(
                    uid=identity.tracking_uid(prediction, ep.endpoint),
                    identifier=f"{ep.endpoint.upper()} benefit prediction",
                ),
                algorithm=algorithm,
                endpoint=ep,
                comment=endpoint_comment(prediction, ep),
            )
        )

    for tp in timepoints:
        if geometry[tp.label].volume_mm3 is None:
            continue  # no SEG pixel data: nothing to measure, see the module docstring
        groups.append(
            _group(
                tp,
                images_by_tp[tp.label],
                seg_by_uid,
                order[tp.label],
                geometry[tp.label],
                tracking=hd.sr.TrackingIdentifier(
                    uid=identity.tracking_uid(prediction, f"tumour:{tp.series_uid}"),
                    identifier=f"Tumour ({tp.label})",
                ),
            )
        )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=identity.device_uid(prediction),
        name=identity.PLUGIN_NAME,
        manufacturer_name=identity.MANUFACTURER,
        model_name=prediction.bundle_name,
        serial_number=prediction.bundle_version,
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=PROCEDURE_CT,
        imaging_measurements=groups,
        referenced_images=[ds for tp in timepoints for ds in images_by_tp[tp.label]],
    )
    report[0].ContentSequence.append(_qualitative_evaluations(prediction))

    latest_images = images_by_tp[timepoints[-1].label]
    evidence = [
        *latest_images,
        *[ds for tp in timepoints[:-1] for ds in images_by_tp[tp.label]],
        *[seg_by_uid[uid] for uid in _referenced_segmentation_uids(timepoints, seg_by_uid)],
    ]
    description = "icibenefit ICI benefit prediction"
    if prediction.demonstration:
        description += " (DEMO - not for clinical use)"
    equipment = hd.ContributingEquipment(
        manufacturer=identity.MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=prediction.bundle_name,
        software_versions=identity.software_version(prediction),
        device_serial_number=prediction.bundle_version,
        contribution_datetime=prediction.created,
        contribution_description=(
            "AI processing algorithm: durable clinical benefit prediction"
            + (f". {identity.DEMONSTRATION_NOTICE}" if prediction.demonstration else "")
        )[:64],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=identity.sr_series_uid(prediction),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=identity.sr_instance_uid(prediction),
        instance_number=int(predecessor.InstanceNumber) + 1 if predecessor is not None else 1,
        manufacturer=identity.MANUFACTURER,
        manufacturer_model_name=prediction.bundle_name,
        software_versions=identity.software_version(prediction)[:64],
        institution_name=institution_name,
        is_complete=True,
        is_final=True,
        previous_versions=[predecessor] if predecessor is not None else None,
        contributing_equipment=[equipment],
        series_description=description,
        content_date=prediction.created.date(),
        content_time=prediction.created.time(),
        series_date=prediction.created.date(),
        series_time=prediction.created.time(),
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                designator=identity.CODING_SCHEME,
                name=identity.CODING_SCHEME_NAME,
                responsible_organization=identity.MANUFACTURER,
            )
        ],
    )


def _images_of(tp: ImagingTimepoint, images: Sequence[Dataset]) -> list[Dataset]:
    """The CT datasets of one timepoint, in slice order, exactly those the model used."""
    wanted = set(tp.image_sop_uids)
    found = [
        ds
        for ds in images
        if str(ds.SeriesInstanceUID) == tp.series_uid
        and (not wanted or str(ds.SOPInstanceUID) in wanted)
    ]
    if not found or (wanted and len(found) != len(wanted)):
        raise ReportError(
            f"CT images of timepoint {tp.label} missing: "
            f"{len(found)} of {len(wanted) or 'any'} found in series {tp.series_uid}"
        )
    return sorted(found, key=lambda ds: int(ds.get("InstanceNumber", 0) or 0))


def _referenced_segmentation_uids(
    timepoints: Sequence[ImagingTimepoint], seg_by_uid: dict[str, Dataset]
) -> list[str]:
    uids = [tp.segmentation_sop_uid for tp in timepoints if tp.segmentation_sop_uid and _is_seg(tp)]
    missing = [uid for uid in uids if uid not in seg_by_uid]
    if missing:
        raise ReportError(f"segmentation datasets missing: {', '.join(missing)}")
    return list(dict.fromkeys(uids))


def _is_seg(tp: ImagingTimepoint) -> bool:
    return (tp.segmentation_sop_class_uid or SegmentationStorage) == SegmentationStorage


def _group(
    tp: ImagingTimepoint,
    tp_images: Sequence[Dataset],
    seg_by_uid: dict[str, Dataset],
    order: int,
    geometry: TumourGeometry,
    *,
    tracking: hd.sr.TrackingIdentifier,
    algorithm: hd.sr.AlgorithmIdentification | None = None,
    endpoint: EndpointPrediction | None = None,
    comment: str | None = None,
) -> (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
):
    """One measurement group at timepoint ``tp``, referencing its tumour.

    Its measurement (the endpoint's probability, or the tumour volume) is
    INFERRED FROM the tumour outline on the key slice (TID 300/320), which is
    what lets OHIF place the group on the CT.
    """
    time_point = _time_point_context(tp, order)
    where = hd.sr.CoordinatesForMeasurement(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=geometry.outline,
        source_image=hd.sr.SourceImageForRegion(
            str(geometry.key_image.SOPClassUID), str(geometry.key_image.SOPInstanceUID)
        ),
    )
    evaluations = None
    if endpoint is not None:
        measurement = hd.sr.Measurement(
            name=probability_concept(endpoint.endpoint),
            value=round(endpoint.probability, 6),
            unit=PROBABILITY_UNIT,
            algorithm_id=algorithm,
        )
        evaluations = [
            hd.sr.QualitativeEvaluation(
                name=risk_concept(endpoint.endpoint), value=RISK_VALUE[endpoint.risk]
            )
        ]
    else:
        if geometry.volume_mm3 is None:
            raise ReportError(f"tumour of timepoint {tp.label} has no volume to report")
        measurement = hd.sr.Measurement(
            name=TUMOUR_VOLUME,
            value=round(geometry.volume_mm3, 1),
            unit=VOLUME_UNIT,
        )
    common = {
        "tracking_identifier": tracking,
        "time_point_context": time_point,
        "finding_type": TUMOUR,
        "algorithm_id": algorithm,
        "measurements": [measurement],
        "qualitative_evaluations": evaluations,
    }
    if tp.segmentation_sop_uid and _is_seg(tp):
        seg = seg_by_uid.get(tp.segmentation_sop_uid)
        if seg is None:
            raise ReportError(f"segmentation of timepoint {tp.label} missing")
        # highdicom 0.28's ReferencedSegment.from_segmentation fails on a
        # one-segment SEG with shared functional groups (ENVIRONMENT.md).
        segment = hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=tp.segment_number or 1,
            source_series=hd.sr.SourceSeriesForSegmentation(tp.series_uid),
        )
        group: (
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
            | hd.sr.MeasurementsAndQualitativeEvaluations
        ) = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=segment, **common
        )
    else:
        sources = [
            hd.sr.SourceImageForMeasurementGroup(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
            for ds in tp_images
        ]
        group = hd.sr.MeasurementsAndQualitativeEvaluations(source_images=sources, **common)
    # highdicom refuses coordinates under a TID 1411 measurement (its ROI is
    # the segment); the tumour outline is added after construction so that
    # the NUM is INFERRED FROM the region a viewer can draw.
    concept = measurement[0].ConceptNameCodeSequence[0]
    num = next(
        item
        for item in group[0].ContentSequence
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0] == concept
    )
    if "ContentSequence" not in num:
        num.ContentSequence = hd.sr.ContentSequence([])
    num.ContentSequence.append(where)
    if comment is not None:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=comment,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def _time_point_context(tp: ImagingTimepoint, order: int) -> hd.sr.TimePointContext:
    """TID 1502 of one timepoint, its rows in template order.

    The order of the timepoint is carried by the Subject Time Point Identifier
    (``T1-baseline-20240220``), not by the optional Time Point Order row: that
    row is a NUM, and in a TID 1411 group template validators (pixelmed's
    DicomSRValidator) take every NUM for a TID 1419 measurement, which must be
    CONTAINS, not HAS OBS CONTEXT.  highdicom 0.28 writes Time Point before the
    identifiers; the rows are put back in PS3.16 order.
    """
    context = hd.sr.TimePointContext(
        time_point=tp.label,
        time_point_type=codes.cid6146.Baseline
        if tp.label == "baseline"
        else codes.DCM.Posttreatment,
        subject_time_point_identifier=f"T{order}-{tp.label}-{tp.study_date:%Y%m%d}",
        protocol_time_point_identifier=tp.label,
    )
    rank = {code: index for index, code in enumerate(TIME_POINT_ROW_ORDER)}
    items: list[hd.sr.ContentItem] = list(context)  # type: ignore[arg-type]
    items.sort(
        key=lambda item: rank.get(
            str(item.ConceptNameCodeSequence[0].CodeValue), len(TIME_POINT_ROW_ORDER)
        )
    )
    context[:] = items
    return context


def _qualitative_evaluations(prediction: Prediction) -> hd.sr.ContainerContentItem:
    """TID 1500 rows 12-14: the readable finding and the demonstration notice."""
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=codes.DCM.Finding,
                value=summary_text(prediction),
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        ]
    )
    if prediction.demonstration:
        container.ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=identity.DEMONSTRATION_NOTICE,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return container


def read_probabilities(sr: Dataset) -> dict[str, float]:
    """Probabilities per endpoint, read back from an SR with highdicom's parser.

    Used by the demo and the tests to show that what a PACS stores is what the
    model said; it understands the SRs :func:`build_sr` writes.
    """
    document = hd.sr.Comprehensive3DSR.from_dataset(sr, copy=False)
    found: dict[str, float] = {}
    content = document.content
    if not isinstance(content, hd.sr.MeasurementReport):
        raise ReportError("not a TID 1500 measurement report")
    groups = [
        *content.get_volumetric_roi_measurement_groups(),
        *content.get_image_measurement_groups(),
    ]
    for group in groups:
        for measurement in group.get_measurements():
            if measurement.name.scheme_designator == identity.CODING_SCHEME:
                endpoint = measurement.name.value.removesuffix("-P").lower()
                found[endpoint] = float(measurement.value)
    return found
