"""Reading a CodeableConcept: its codes of one system, and its text for text fallbacks."""

from __future__ import annotations

from fhir.resources.R4B.codeableconcept import CodeableConcept


def coded(concept: CodeableConcept | None, system: str) -> list[str]:
    """The codes of ``system`` in a CodeableConcept."""
    if concept is None:
        return []
    return [c.code for c in concept.coding or [] if c.system == system and c.code]


def concept_text(concept: CodeableConcept | None) -> str:
    """Text and displays of a CodeableConcept, lower-cased, for text fallbacks."""
    if concept is None:
        return ""
    parts = [concept.text or ""] + [c.display or "" for c in concept.coding or []]
    return " ".join(parts).lower()
