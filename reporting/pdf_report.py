"""The human-readable report: a DICOM Encapsulated PDF for every viewer and PACS.

Not every viewer renders TID 1500 content (OHIF shows measurements, not risk
groups or explanations), so the same prediction is also written as a PDF that
any PACS stores and most viewers display: probabilities and risk groups, the
timeline of the CTs and lab results used, a key image of the tumour with its
outline at each timepoint, the strongest explaining factors, the model and its
version, and the demonstration notice when the bundle is a demonstration model.

It is a pure builder: :func:`build_pdf_report` takes the prediction and the
datasets the SR uses and returns the DICOM dataset; sending it (outbox,
retries) is the caller's job.  The PDF is rendered with matplotlib (already a
dependency; its PDF backend embeds the fonts it uses) without creation dates,
so the same inputs give the same bytes, and the UIDs come from
:mod:`icibenefit.reporting.identity` like the SR's: a retry reproduces the
instance, a rerun with other inputs makes a new one in the same series.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from icibenefit import __version__
from icibenefit.domain import ENDPOINTS, ClinicalRecord, ImagingTimepoint, Prediction
from icibenefit.errors import ReportError
from icibenefit.reporting import identity
from icibenefit.reporting.key_images import TumourGeometry, tumour_geometry
from icibenefit.reporting.sr import top_features_text

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
PDF_SERIES_NUMBER = 7002
DOCUMENT_TITLE = "icibenefit ICI benefit prediction report"
#: A4 portrait, in inches.
PAGE_SIZE = (8.27, 11.69)
#: Lung window (level -600 HU, width 1500 HU): NSCLC tumours sit in the lung.
WINDOW = (-600.0, 1500.0)
#: Patient and study attributes copied from the latest CT, as the SR does.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def build_pdf_report(
    prediction: Prediction,
    images: Sequence[Dataset],
    segmentations: Sequence[Dataset] = (),
    *,
    record: ClinicalRecord | None = None,
    institution_name: str | None = None,
) -> Dataset:
    """Build the Encapsulated PDF report of ``prediction``.

    Parameters
    ----------
    prediction
        What the model said and from which inputs.
    images
        CT datasets of the timepoints in ``prediction.imaging`` (the same the
        SR takes).  The key slice of each timepoint is drawn when its dataset
        carries pixel data; headers alone give a report whose key image panels
        say the image was not available.
    segmentations
        SEG datasets named by the timepoints.  With pixel data the tumour is
        outlined and its volume given; headers alone only locate the slices.
    record
        The clinical record the prediction used, when the caller has it: the
        lab timeline then lists each panel's date and values; without it the
        report lists the ids of the lab Observations used.
    institution_name
        Written to the dataset when given.

    Returns
    -------
    pydicom.Dataset
        An Encapsulated PDF Storage instance (with file meta) in the study of
        the latest CT used.

    Raises
    ------
    ReportError
        When the prediction has no imaging (the report belongs to a CT study)
        or an image it names is missing.
    """
    panels = _panels(prediction, images, segmentations)
    pdf = render_pdf(prediction, panels, record)
    latest = panels[-1][1].key_image
    return _encapsulate(prediction, pdf, latest, panels, institution_name)


def key_image_uids(
    prediction: Prediction, images: Sequence[Dataset], segmentations: Sequence[Dataset] = ()
) -> list[str]:
    """SOP Instance UIDs of the CT slices the report draws, one per timepoint, oldest first.

    The key slices are chosen from headers and SEG pixel data alone, so a
    caller can read every CT header without pixels (cheap) and then read with
    pixel data only these slices before calling :func:`build_pdf_report`:
    the report shows the same slices either way.

    Raises
    ------
    ReportError
        As :func:`build_pdf_report`.
    """
    return [
        str(geometry.key_image.SOPInstanceUID)
        for _, geometry in _panels(prediction, images, segmentations)
    ]


def _panels(
    prediction: Prediction, images: Sequence[Dataset], segmentations: Sequence[Dataset]
) -> list[tuple[ImagingTimepoint, TumourGeometry]]:
    """The tumour geometry of each timepoint, oldest first."""
    if not prediction.imaging:
        raise ReportError("a prediction without imaging has no study for a PDF report")
    timepoints = sorted(prediction.imaging, key=lambda t: (t.study_date, t.label))
    seg_by_uid = {str(ds.SOPInstanceUID): ds for ds in segmentations}
    panels = []
    for tp in timepoints:
        tp_images = [ds for ds in images if str(ds.SeriesInstanceUID) == tp.series_uid]
        if not tp_images:
            raise ReportError(f"CT images of timepoint {tp.label} missing")
        seg = seg_by_uid.get(tp.segmentation_sop_uid or "")
        panels.append((tp, tumour_geometry(tp_images, seg, tp.segment_number or 1)))
    return panels


def render_pdf(
    prediction: Prediction,
    panels: Sequence[tuple[ImagingTimepoint, TumourGeometry]],
    record: ClinicalRecord | None = None,
) -> bytes:
    """The report's PDF bytes: a summary page and a key image page."""
    buffer = io.BytesIO()
    metadata = {
        "Title": DOCUMENT_TITLE,
        "Creator": f"{identity.PLUGIN_NAME} {__version__}",
        "CreationDate": None,
    }
    with (
        matplotlib.rc_context({"pdf.fonttype": 42}),
        PdfPages(buffer, metadata=metadata) as pages,
    ):
        pages.savefig(_summary_page(prediction, panels, record))
        pages.savefig(_key_image_page(prediction, panels))
    return buffer.getvalue()


def report_lines(
    prediction: Prediction,
    panels: Sequence[tuple[ImagingTimepoint, TumourGeometry]],
    record: ClinicalRecord | None = None,
) -> list[tuple[str, str]]:
    """The text of the summary page as (style, line) pairs; style is a heading level.

    Kept apart from the drawing so that tests can read what the report says.
    """
    lines: list[tuple[str, str]] = [("title", DOCUMENT_TITLE)]
    if prediction.demonstration:
        lines.append(("warning", identity.DEMONSTRATION_NOTICE))
    lines += [
        (
            "text",
            f"Model: {prediction.bundle_name} version {prediction.bundle_version} "
            f"({prediction.ensemble_kind} ensemble); {identity.PLUGIN_NAME} {__version__}.",
        ),
        ("text", f"Report created: {prediction.created:%Y-%m-%d %H:%M}."),
        ("heading", "Predicted durable clinical benefit"),
    ]
    for ep in prediction.endpoints:
        lines.append(
            (
                "result",
                f"{ep.endpoint.upper()}: probability of being {ENDPOINTS[ep.endpoint].outcome_text}"
                f" {ep.probability:.2f}  ->  {ep.risk.upper()} RISK of no durable benefit"
                f" (threshold {ep.threshold:.2f})",
            )
        )
    lines.append(("heading", "Top explaining factors"))
    for ep in prediction.endpoints:
        text = top_features_text(ep) if ep.top_features else "none reported"
        lines.append(("text", f"{ep.endpoint.upper()} ({ep.model}): {text}"))
    lines.append(("heading", "Timeline of the inputs used"))
    lines.append(("text", f"Treatment start: {prediction.treatment_start.isoformat()}"))
    for tp, geometry in panels:
        volume = (
            f"; tumour volume {geometry.volume_mm3 / 1000:.2f} cm3"
            if geometry.volume_mm3 is not None
            else ""
        )
        lines.append(
            (
                "text",
                f"CT {tp.label}: {tp.study_date.isoformat()} "
                f"(day {tp.days_from_treatment_start:+d}), {len(tp.image_sop_uids)} images{volume}",
            )
        )
    lines += _lab_lines(prediction, record)
    if prediction.decisions:
        lines.append(("heading", "Input decisions"))
        lines += [("text", decision) for decision in prediction.decisions]
    return lines


def _lab_lines(prediction: Prediction, record: ClinicalRecord | None) -> list[tuple[str, str]]:
    used = set(prediction.lab_observation_ids)
    if record is None:
        ids = ", ".join(sorted(used)) or "none"
        return [("text", f"Laboratory observations used ({len(used)}): {ids}")]
    lines = []
    for timepoint, panel in sorted(record.labs.items(), key=lambda item: item[0].value):
        values = [lab for lab in panel.values.values() if lab.observation_id in used or not used]
        if not values:
            continue
        date = min(lab.effective for lab in values).date().isoformat()
        text = ", ".join(f"{lab.analyte.value} {lab.value:g} {lab.unit}" for lab in values)
        lines.append(("text", f"Labs {timepoint.value} ({date}): {text}"))
    return lines or [("text", "Laboratory observations used: none")]


#: Font size, weight and colour of each line style of the summary page.
STYLES: dict[str, tuple[float, str, str]] = {
    "title": (15, "bold", "black"),
    "warning": (11, "bold", "#b00000"),
    "heading": (12, "bold", "#1f3b73"),
    "result": (10.5, "bold", "black"),
    "text": (9, "normal", "black"),
}


def _write(figure: Figure, x: float, y: float, text: str, style: str) -> None:
    size, weight, color = STYLES[style]
    figure.text(x, y, text, va="top", fontsize=size, weight=weight, color=color)


def _summary_page(
    prediction: Prediction,
    panels: Sequence[tuple[ImagingTimepoint, TumourGeometry]],
    record: ClinicalRecord | None,
) -> Figure:
    figure = Figure(figsize=PAGE_SIZE)
    y = 0.95
    for style, text in report_lines(prediction, panels, record):
        if style == "heading":
            y -= 0.015
        for chunk in _wrap(text, 100 if style == "text" else 90):
            _write(figure, 0.07, y, chunk, style)
            y -= 0.022 if style != "title" else 0.035
    _footer(figure, prediction)
    return figure


def _key_image_page(
    prediction: Prediction, panels: Sequence[tuple[ImagingTimepoint, TumourGeometry]]
) -> Figure:
    figure = Figure(figsize=PAGE_SIZE)
    _write(figure, 0.07, 0.95, "Key images: tumour used at each timepoint", "heading")
    columns = 2
    rows = max(1, -(-len(panels) // columns))
    grid = figure.add_gridspec(rows, columns, top=0.9, bottom=0.08, hspace=0.25, wspace=0.1)
    for index, (tp, geometry) in enumerate(panels):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        axes.set_axis_off()
        caption = f"{tp.label} {tp.study_date.isoformat()} (day {tp.days_from_treatment_start:+d})"
        image = _hounsfield(geometry.key_image)
        if image is None:
            axes.text(0.5, 0.5, "CT image not available", ha="center", va="center")
        else:
            level, width = WINDOW
            axes.imshow(
                image, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, origin="upper"
            )
            if geometry.traced:
                outline = geometry.outline - 0.5  # DICOM image coordinates -> pixel centres
                axes.plot(outline[:, 0], outline[:, 1], color="#ff3030", linewidth=1.2)
            else:
                caption += "\n(tumour outline not available)"
        axes.set_title(caption, fontsize=9)
    _footer(figure, prediction)
    return figure


def _footer(figure: Figure, prediction: Prediction) -> None:
    text = f"{prediction.bundle_name} {prediction.bundle_version}"
    if prediction.demonstration:
        text = f"{identity.DEMONSTRATION_NOTICE}  {text}"
    figure.text(0.07, 0.03, text, fontsize=7, color="#b00000" if prediction.demonstration else "k")


def _wrap(text: str, width: int) -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = "  " + word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current] if current else lines or [""]


def _hounsfield(image: Dataset) -> np.ndarray | None:
    if "PixelData" not in image:
        return None
    stored = np.asarray(image.pixel_array, dtype=np.float32)
    slope = float(image.get("RescaleSlope", 1) or 1)
    intercept = float(image.get("RescaleIntercept", 0) or 0)
    return stored * slope + intercept


def _encapsulate(
    prediction: Prediction,
    pdf: bytes,
    latest: Dataset,
    panels: Sequence[tuple[ImagingTimepoint, TumourGeometry]],
    institution_name: str | None,
) -> Dataset:
    """Wrap the PDF in an Encapsulated PDF IOD (PS3.3 A.45.1)."""
    sop_uid = identity.pdf_instance_uid(prediction)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(ENCAPSULATED_PDF_STORAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in latest:
            setattr(ds, keyword, latest.data_element(keyword).value)  # type: ignore[union-attr]
        elif keyword not in ("IssuerOfPatientID",):
            setattr(ds, keyword, "")
    created = prediction.created
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = identity.pdf_series_uid(prediction)
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.SeriesDate = ds.ContentDate = created.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = created.strftime("%H%M%S")
    ds.SeriesDescription = "icibenefit report" + (
        " (DEMO - not for clinical use)" if prediction.demonstration else ""
    )
    ds.Manufacturer = identity.MANUFACTURER
    ds.ManufacturerModelName = prediction.bundle_name[:64]
    ds.SoftwareVersions = identity.software_version(prediction)[:64]
    if institution_name:
        ds.InstitutionName = institution_name
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.AcquisitionDateTime = _datetime(created)
    ds.BurnedInAnnotation = "YES"
    ds.RecognizableVisualFeatures = "NO"
    ds.DocumentTitle = DOCUMENT_TITLE + (
        " - NOT FOR CLINICAL USE" if prediction.demonstration else ""
    )
    ds.ConceptNameCodeSequence = DicomSequence([])
    ds.SourceInstanceSequence = DicomSequence(
        [_reference(geometry.key_image) for _, geometry in panels]
    )
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    # The value is padded to an even length; the length attribute keeps the true size.
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    return ds


def _reference(image: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def _datetime(value: dt.datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S")


def read_pdf(report: Dataset) -> bytes:
    """The PDF bytes of an Encapsulated PDF dataset (without the padding byte)."""
    data = bytes(report.EncapsulatedDocument)
    length = int(report.get("EncapsulatedDocumentLength", len(data)))
    return data[:length]
