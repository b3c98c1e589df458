"""``icibenefit demo``: the whole loop on one machine, on embedded defaults.

What it does, reusing whatever an earlier run left in the data directory:

1. a small synthetic training cohort (``<data>/demo/cohort``) and a separate
   demo patient with a baseline and two follow-up CTs (``<data>/demo/patient``,
   a patient the model never saw);
2. a small demonstration bundle trained on the cohort and promoted in the
   model store (``<data>/models``), unless one is active already;
3. the service (SCP, workers, outbox) on the data directory, reading the demo
   patient's clinical data from its FHIR NDJSON when no FHIR server is set;
4. the patient's three studies sent by C-STORE to the service's own SCP;
5. a wait until every study's job has finished and the outbox is empty, then
   the SR summary, the RiskAssessment and where every report went (the SR, the
   PDF report, as the ``dicom_reports`` setting asks, and the FHIR
   transaction): a configured PACS (C-STORE or STOW-RS) and FHIR server, else
   ``<data>/outbox/dicom/*.dcm`` and ``<data>/outbox/fhir/*.json``; with the
   copy each report has in the archive (``<data>/reports/sr``,
   ``<data>/reports/pdf``, ``<data>/reports/fhir``).

Every step says what it did; a step whose code has not landed yet is reported
and skipped, so the demo shows what exists and exits 0 when it did its part.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE

from icibenefit.errors import IciBenefitError
from icibenefit.listener.jobs import RECORDING_FACTORY, resolve_processor_factory
from icibenefit.listener.service import ListenerService
from icibenefit.model_store.store import ModelStore
from icibenefit.persistence import index, queries
from icibenefit.persistence.archive import FhirArchive, PdfArchive, SrArchive
from icibenefit.pipeline.rules import PipelineRules
from icibenefit.reporting.sr import read_probabilities
from icibenefit.settings import Settings
from icibenefit.synth import generate_cohort, load_manifest
from icibenefit.training import trainer
from icibenefit.training.cohort_manifest import PatientEntry
from icibenefit.training.deep_features import CnnBudget
from icibenefit.training.recipes import Recipe, load_recipe

log = logging.getLogger(__name__)

COHORT_PATIENTS = 40
COHORT_SEED = 11
PATIENT_SEED = 1011
PATIENT_CANDIDATES = 4
TRAIN_TRIALS = 3
TRAIN_BOOTSTRAP = 50
TRAIN_ENDPOINTS = ("pfs6", "pfs9")
DEMO_VERSION = "demo-1"
CALLING_AE = "ICIDEMO"
WAIT_SECONDS = 300.0

Say = Callable[[str], None]


@dataclass
class DemoOutcome:
    """What the demo did, for the CLI to print and tests to check."""

    steps: list[str] = field(default_factory=list)
    patient_id: str | None = None
    study_uids: list[str] = field(default_factory=list)
    processor: str = ""
    jobs: list[dict[str, Any]] = field(default_factory=list)
    #: Outbox items of the patient's studies; ``_collect_reports`` adds ``report``
    #: (``SR``, ``PDF report`` or ``FHIR transaction``) and ``archived`` (path or None).
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    summary: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    risk_assessment: dict[str, Any] | None = None
    complete: bool = False


def demo_root(settings: Settings) -> Path:
    """Where the demo keeps its synthetic data."""
    return settings.data_dir / "demo"


def prepare_cohort(root: Path, say: Say) -> Path:
    """The training cohort: generated once, reused afterwards."""
    cohort = root / "cohort"
    if (cohort / "manifest.json").exists():
        say(f"cohort: reusing {cohort}")
        return cohort
    staging = root / "cohort.partial"
    shutil.rmtree(staging, ignore_errors=True)
    generate_cohort(staging, COHORT_PATIENTS, COHORT_SEED)
    staging.rename(cohort)
    say(f"cohort: generated {COHORT_PATIENTS} synthetic patients in {cohort}")
    return cohort


def prepare_patient(root: Path, say: Say) -> tuple[Path, PatientEntry]:
    """A demo patient (not in the training cohort) with baseline and two follow-ups."""
    folder = root / "patient"
    if not (folder / "manifest.json").exists():
        staging = root / "patient.partial"
        shutil.rmtree(staging, ignore_errors=True)
        generate_cohort(staging, PATIENT_CANDIDATES, PATIENT_SEED)
        staging.rename(folder)
        say(f"demo patient: generated in {folder}")
    else:
        say(f"demo patient: reusing {folder}")
    manifest = load_manifest(folder)
    for entry in manifest.patients:
        segmented = [tp for tp in entry.timepoints if tp.segmentation is not None]
        if len(entry.timepoints) == 3 and len(segmented) == 3:
            return folder, entry
    raise IciBenefitError(f"no patient with baseline and two follow-ups in {folder}")


def demo_recipe() -> Recipe:
    """The paper's recipe without the CNN (DF-imm, CNN-baseline): minutes, not hours.

    The CNN needs many patients per class to fine-tune and most of the training
    time; the demonstration bundle keeps the clinical and radiomics models and
    their ensembles, which exercise every report element.
    """
    spec = load_recipe("farina2023").model_dump(mode="json")
    spec["name"] = "demo"
    spec["sources"] = [s for s in spec["sources"] if s != "dfimm"]
    spec["cnn_baseline"] = False
    spec["ensemble_imaging_preference"] = ["radiomics"]
    spec["ensembles"] = [e for e in spec["ensembles"] if "dfimm" not in e["sources"]]
    return Recipe.model_validate(spec)


def prepare_bundle(settings: Settings, cohort: Callable[[], Path], say: Say) -> str:
    """The active bundle of the model store, training a small demonstration one if none.

    ``cohort`` provides the training cohort, only when training is needed.
    """
    if settings.model_bundle is not None:
        say(f"model: using the configured bundle {settings.model_bundle}")
        return str(settings.model_bundle)
    store = ModelStore(settings.resolved_model_store_dir)
    active = store.active_id()
    if active is not None:
        say(f"model: reusing active bundle {active} of {store.root}")
        return active
    build = demo_root(settings) / "bundle-build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    started = time.monotonic()
    bundle = trainer.train(
        cohort(),
        build / "bundle",
        recipe=demo_recipe(),
        trials=TRAIN_TRIALS,
        seed=0,
        endpoints=TRAIN_ENDPOINTS,
        workers=2,
        n_boot=TRAIN_BOOTSTRAP,
        version=DEMO_VERSION,
        cnn_budget=CnnBudget.quick(),
        rules=PipelineRules.from_settings(settings),
        lidc_image_dir=settings.lidc_image_dir,
    ).bundle
    bundle_id = store.add(bundle, promote=True)
    say(
        f"model: trained demonstration bundle {bundle_id} in {time.monotonic() - started:.0f} s "
        f"and promoted it in {store.root}"
    )
    return bundle_id


def patient_files(cohort: Path, entry: PatientEntry) -> list[list[Path]]:
    """The DICOM files of each timepoint of ``entry`` (CT slices, then its segmentation)."""
    studies = []
    for tp in entry.timepoints:
        files = sorted((cohort / tp.ct_dir).glob("*.dcm"))
        if tp.segmentation is not None:
            files.append(cohort / tp.segmentation.path)
        studies.append(files)
    return studies


def send_files(files: Sequence[Path], settings: Settings, calling_ae: str = CALLING_AE) -> int:
    """C-STORE ``files`` to the service's own SCP; return how many were accepted."""
    headers = [dcmread(path, stop_before_pixels=True) for path in files]
    ae = AE(ae_title=calling_ae)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in headers}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", settings.scp_port, ae_title=settings.scp_ae_title)
    if not assoc.is_established:
        raise IciBenefitError(f"the SCP on port {settings.scp_port} refused the association")
    accepted = 0
    try:
        for path in files:
            status = assoc.send_c_store(path)
            accepted += int(bool(status) and int(status.Status) == 0)
    finally:
        assoc.release()
    return accepted


def wait_for_reports(
    settings: Settings, study_uids: Sequence[str], timeout: float = WAIT_SECONDS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """Poll the index until every study has a finished job and the outbox is empty."""
    deadline = time.monotonic() + timeout
    jobs: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with closing(index.connect(settings.data_dir)) as conn:
            jobs = queries.jobs_of_studies(conn, study_uids)
            deliveries = queries.deliveries_of_studies(conn, study_uids)
        finished = {j["study_uid"] for j in jobs if j["state"] in ("done", "dead")}
        busy = any(j["state"] in ("queued", "running", "failed") for j in jobs)
        sending = any(d["state"] in ("queued", "sending") for d in deliveries)
        if finished >= set(study_uids) and not busy and not sending:
            return jobs, deliveries, True
        time.sleep(0.5)
    return jobs, deliveries, False


def run_demo(settings: Settings, say: Say, timeout: float = WAIT_SECONDS) -> DemoOutcome:
    """Run every step of the module docstring.

    ``settings`` are the service's, except that the demo patient's FHIR NDJSON
    stands in for the EHR when no FHIR server is configured.
    """
    outcome = DemoOutcome()

    def step(message: str) -> None:
        outcome.steps.append(message)
        say(message)

    root = demo_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    patient_dir, entry = prepare_patient(root, step)
    if settings.fhir_base_url is None and settings.fhir_ndjson_dir is None:
        settings = settings.model_copy(update={"fhir_ndjson_dir": patient_dir / "fhir"})
        step(f"clinical data: FHIR NDJSON of the demo patient ({patient_dir / 'fhir'})")
    outcome.patient_id = entry.patient_id
    outcome.study_uids = [tp.study_uid for tp in entry.timepoints]
    outcome.processor = resolve_processor_factory(settings)
    if outcome.processor == RECORDING_FACTORY:
        step(
            "model: skipped - the prediction pipeline is not available in this build, "
            "so the service only records the studies it processes"
        )
    else:
        prepare_bundle(settings, lambda: prepare_cohort(root, step), step)
    service = ListenerService(settings, outcome.processor)
    service.start()
    try:
        step(f"service: listening as {settings.scp_ae_title} on port {settings.scp_port}")
        for tp, files in zip(entry.timepoints, patient_files(patient_dir, entry), strict=True):
            accepted = send_files(files, settings)
            step(f"C-STORE: {tp.label} study {tp.study_date}: {accepted}/{len(files)} instances")
        outcome.jobs, outcome.deliveries, outcome.complete = wait_for_reports(
            settings, outcome.study_uids, timeout
        )
    finally:
        service.shutdown()
    step(
        "jobs: "
        + ", ".join(f"{j['version']}:{j['state']}" for j in outcome.jobs)
        + ("" if outcome.complete else " (timed out waiting)")
    )
    _collect_reports(settings, outcome)
    return outcome


def _collect_reports(settings: Settings, outcome: DemoOutcome) -> None:
    """The demo patient's latest SR (summary, probabilities) and its RiskAssessment.

    Each delivery is labelled with the report it carried and that report's
    archived copy, so the CLI can say where each went.
    """
    _label_deliveries(settings, outcome)
    srs = [
        ds for ds in SrArchive.of(settings.data_dir).headers() if ds.PatientID == outcome.patient_id
    ]
    report_studies = list(outcome.study_uids)
    if srs:
        latest = max(srs, key=lambda ds: (str(ds.StudyDate), int(ds.InstanceNumber)))
        outcome.summary = str(latest.ContentSequence[-1].ContentSequence[0].TextValue)
        outcome.probabilities = read_probabilities(latest)
        report_studies = [str(latest.StudyInstanceUID)]
    archive = FhirArchive.of(settings.data_dir)
    bundles = sorted(
        (path for study in report_studies for path in archive.of_study(study)),
        key=lambda p: p.stat().st_mtime,
    )
    for path in reversed(bundles):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") == "RiskAssessment":
                outcome.risk_assessment = resource
                return


def _label_deliveries(settings: Settings, outcome: DemoOutcome) -> None:
    """Add ``report`` and ``archived`` to each of ``outcome.deliveries``."""
    archived: dict[str, tuple[str, Path]] = {}
    for label, archive in (
        ("SR", SrArchive.of(settings.data_dir)),
        ("PDF report", PdfArchive.of(settings.data_dir)),
    ):
        for ds in archive.headers():
            archived[f"dicom:{ds.SOPInstanceUID}"] = (label, archive.path_of(ds))
    fhir = FhirArchive.of(settings.data_dir)
    for delivery in outcome.deliveries:
        if delivery["kind"] == "fhir":
            # The key ends with the report's UID, the archived transaction's name.
            name = str(delivery.get("dedup_key", "")).rsplit(":", 1)[-1]
            paths = sorted(fhir.root.glob(f"*/{name}.json")) if name else []
            delivery["report"] = "FHIR transaction"
            delivery["archived"] = str(paths[0]) if paths else None
            continue
        label, path = archived.get(str(delivery.get("dedup_key")), ("DICOM report", None))
        delivery["report"] = label
        delivery["archived"] = str(path) if path else None
