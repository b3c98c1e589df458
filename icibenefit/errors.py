"""The one exception family of icibenefit.

Every error the service raises on purpose derives from :class:`IciBenefitError`,
so the CLI and the job runner can tell "our" failures (reported cleanly, job
retried or dead-lettered) from programming errors (a traceback, a bug).
"""


class IciBenefitError(Exception):
    """Base class of every error icibenefit raises deliberately."""


class ConfigurationError(IciBenefitError):
    """Settings are missing or invalid; the message names the offending key."""


class DicomInputError(IciBenefitError):
    """A DICOM object cannot be accepted or interpreted (malformed, unsupported)."""


class GeometryError(DicomInputError):
    """Image and segmentation geometries do not agree, or slices are irregular."""


class FhirError(IciBenefitError):
    """The FHIR server answered wrongly or not at all, after retries."""


class FhirStatusError(FhirError):
    """The FHIR server answered with an error status; ``status_code`` says which."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class PatientResolutionError(FhirError):
    """A DICOM patient identifier matched no FHIR Patient, or several."""


class TimelineError(IciBenefitError):
    """The data cannot be arranged into the timepoints the method needs."""


class FeatureExtractionError(IciBenefitError):
    """Features could not be computed from the given image and mask."""


class ModelBundleError(IciBenefitError):
    """A model bundle is missing, malformed, or fails its integrity check."""


class TrainingError(IciBenefitError):
    """Training or evaluation cannot proceed with the given data."""


class DeliveryError(IciBenefitError):
    """An outgoing report could not be delivered to PACS or FHIR."""


class ReportError(IciBenefitError):
    """A report cannot be built: an input the prediction names is missing or inconsistent."""
