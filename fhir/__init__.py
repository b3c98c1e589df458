__path__ = __import__("pkgutil").extend_path(__path__, "fhir")  # keeps fhir.resources
"""FHIR R4 in and out: the patient's clinical timeline from the hospital FHIR server.

This folder is installed as ``icibenefit.fhir``.  The first line extends the
package path so that, when the repository root is on ``sys.path`` and this folder
shadows the top-level ``fhir`` package of ``fhir.resources``, ``import
fhir.resources`` still resolves to the installed library.
"""
