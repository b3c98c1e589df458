"""Hand-made labs in unusual units (mmol/L, %, ukat/L, /uL) through the real server."""

import pytest
from unit.fhir.fhir_samples import sample_patient, write_ndjson

from icibenefit.domain import Analyte, LabTimepoint
from icibenefit.fhir import FhirClient, NdjsonReader, ReaderClinicalSource, ServerReader

pytestmark = pytest.mark.integration


def test_unusual_units_normalise_identically_on_server_and_ndjson(fhir_server, tmp_path):
    resources = sample_patient(fhir_id="units-pat", patient_id="PID-UNITS")
    fhir_server.load_resources(resources)
    client = FhirClient(fhir_server.base_url, page_size=2)
    record = ReaderClinicalSource(ServerReader(client), pseudonym_key="k").clinical_record(
        "PID-UNITS"
    )
    write_ndjson(tmp_path, resources)
    offline = ReaderClinicalSource(NdjsonReader(tmp_path), pseudonym_key="k").clinical_record(
        "PID-UNITS"
    )
    assert record == offline
    baseline, cycle2 = record.panel(LabTimepoint.BASELINE), record.panel(LabTimepoint.CYCLE2)
    assert baseline.get(Analyte.WBC) == 6.5  # 6500 /uL
    assert baseline.get(Analyte.HEMOGLOBIN) == pytest.approx(7.8 * 1.611)  # mmol/L
    assert baseline.get(Analyte.ALBUMIN) == 3.8  # g/L
    assert baseline.get(Analyte.LDH) == pytest.approx(210.0)  # ukat/L
    assert cycle2.get(Analyte.NEUTROPHILS) == 5.6  # 70 % of WBC 8.0
    assert cycle2.nlr == pytest.approx(5.6 / 1.6)
    assert cycle2.get(Analyte.PLATELETS) is None  # missing stays missing
    assert cycle2.sii is None
    assert LabTimepoint.CYCLE3 not in record.labs
