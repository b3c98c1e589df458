"""The offline ``predict`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pydicom
import typer

from icibenefit import audit
from icibenefit.cli.common import configure_logging, settings_from
from icibenefit.domain import ClinicalRecord
from icibenefit.errors import DicomInputError, PatientResolutionError
from icibenefit.privacy import pseudonymize
from icibenefit.settings import Settings


def _patient_files(folder: Path, patient_id: str) -> list[str]:
    """The patient's DICOM files.

    ``folder/<ID>/`` when it exists (the cohort layout), else every file of
    ``folder`` whose PatientID matches (headers only).
    """
    own = folder / patient_id
    if own.is_dir():
        return sorted(str(p) for p in own.rglob("*") if p.is_file())
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        except Exception:  # not DICOM: pydicom raises several types; skip the file
            continue
        if str(ds.get("PatientID", "")) == patient_id:
            files.append(str(path))
    if not files:
        raise DicomInputError(f"no DICOM file of the patient in {folder}")
    return files


def _clinical_record(path: Path, patient_id: str, settings: Settings) -> ClinicalRecord:
    """The record from a cohort manifest (what training used) or an NDJSON folder (no network)."""
    # Function-local: these read the FHIR resources models and the synthetic
    # cohort format (seconds of imports) that other commands do not need.
    if (path / "manifest.json").is_file():
        from icibenefit.training.cohort_manifest import load_manifest

        for entry in load_manifest(path).patients:
            if entry.patient_id == patient_id:
                return entry.clinical_record
        raise PatientResolutionError("the patient is not in the cohort manifest")
    from icibenefit.fhir.readers import NdjsonReader
    from icibenefit.fhir.sources import ReaderClinicalSource, load_treatment_starts

    starts = (
        load_treatment_starts(settings.treatment_start_file)
        if settings.treatment_start_file is not None
        else {}
    )
    source = ReaderClinicalSource(
        NdjsonReader(path),
        identifier_system=settings.fhir_patient_identifier_system,
        pseudonym_key=settings.pseudonym_key.get_secret_value(),
        treatment_starts=starts,
    )
    return source.clinical_record(patient_id)


def predict(
    ctx: typer.Context,
    dicom: Annotated[
        Path,
        typer.Option(
            "--dicom",
            help="DICOM folder of the patient, or a folder holding <ID>/ or many patients.",
        ),
    ],
    clinical: Annotated[
        Path,
        typer.Option(
            "--clinical",
            help="FHIR NDJSON folder, or a synthetic cohort folder (its manifest's record).",
        ),
    ],
    patient: Annotated[str, typer.Option("--patient", help="DICOM PatientID.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Model bundle folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the Prediction JSON.")],
    explain: Annotated[
        bool, typer.Option("--explain/--no-explain", help="SHAP top features (slower).")
    ] = True,
) -> None:
    """Predict for one patient from a DICOM folder and clinical data, without network."""
    # Function-local: inference imports torch, the rules highdicom (seconds each).
    from icibenefit.pipeline.inference import open_bundle
    from icibenefit.pipeline.rules import PipelineRules

    settings = settings_from(ctx)
    configure_logging(settings)
    predictor = open_bundle(bundle, explain=explain, rules=PipelineRules.from_settings(settings))
    record = _clinical_record(clinical, patient, settings)
    prediction = predictor.predict(_patient_files(dicom, patient), record)
    out.mkdir(parents=True, exist_ok=True)
    name = pseudonymize(patient, settings.pseudonym_key.get_secret_value())
    target = out / f"prediction-{name}.json"
    target.write_text(prediction.model_dump_json(indent=2) + "\n", encoding="utf-8")
    with audit.configured(settings):
        audit.record(
            "predicted",
            component="pipeline.cli",
            actor=audit.process_user(),
            patient_id=patient,
            details={"model": f"{prediction.bundle_name} {prediction.bundle_version}"},
        )
    typer.echo(str(target))
