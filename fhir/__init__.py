__path__ = __import__("pkgutil").extend_path(__path__, "fhir")  # keeps fhir.resources
"""FHIR R4 in and out: the patient's clinical timeline from the hospital FHIR server.

This folder is installed as ``icibenefit.fhir``.  The first line extends the
package path so that, when the repository root is on ``sys.path`` and this folder
shadows the top-level ``fhir`` package of ``fhir.resources``, ``import
fhir.resources`` still resolves to the installed library.  For the same reason
the public names below are imported lazily (PEP 562): importing submodules here
would re-enter this file as ``fhir`` while ``fhir.resources`` is being imported.

Public API
----------
- :class:`ClinicalSource` (protocol) and :func:`clinical_source_from_settings`;
  implementations :class:`ReaderClinicalSource` over :class:`ServerReader`
  (FHIR server through :class:`FhirClient`) or :class:`NdjsonReader` (folder).
- :func:`create_or_get` and :func:`update_conditional` for idempotent writes.
- :class:`BearerAuth`, :class:`SmartBackendAuth`, :func:`auth_from_settings`.
"""

_EXPORTS = {
    "BearerAuth": "auth",
    "SmartBackendAuth": "auth",
    "auth_from_settings": "auth",
    "FhirClient": "client",
    "NdjsonReader": "readers",
    "ResourceReader": "readers",
    "ServerReader": "readers",
    "ClinicalSource": "sources",
    "ReaderClinicalSource": "sources",
    "clinical_source_from_settings": "sources",
    "load_treatment_starts": "sources",
    "LAB_WINDOWS": "timeline",
    "build_clinical_record": "timeline",
    "WriteResult": "writes",
    "create_or_get": "writes",
    "update_conditional": "writes",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    from importlib import import_module

    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"icibenefit.fhir.{_EXPORTS[name]}"), name)
