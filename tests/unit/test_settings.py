from pathlib import Path

import pytest

from icibenefit.errors import ConfigurationError
from icibenefit.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ICIBENEFIT_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.scp_ae_title == "ICIBENEFIT"
    assert settings.scp_port == 11112
    assert settings.scp_bind == "127.0.0.1"
    assert settings.study_quiet_seconds == 60
    assert settings.allowed_calling_ae_titles == []
    assert settings.fhir_base_url is None
    assert not settings.pacs_configured


def test_priority_cli_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "icibenefit.toml"
    config.write_text('scp_port = 2000\nscp_ae_title = "FROMFILE"\nstudy_quiet_seconds = 5\n')
    monkeypatch.setenv("ICIBENEFIT_SCP_PORT", "3000")
    monkeypatch.setenv("ICIBENEFIT_STUDY_QUIET_SECONDS", "7.5")
    settings = load_settings(config, study_quiet_seconds=1.0)
    assert settings.scp_ae_title == "FROMFILE"
    assert settings.scp_port == 3000
    assert settings.study_quiet_seconds == 1.0


def test_stable_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "ICIBENEFIT_DATA_DIR": str(tmp_path),
        "ICIBENEFIT_SCP_AE_TITLE": "SITEAE",
        "ICIBENEFIT_SCP_BIND": "0.0.0.0",
        "ICIBENEFIT_SCP_PORT": "104",
        "ICIBENEFIT_ALLOWED_CALLING_AE_TITLES": "ORTHANC, PACS1,,",
        "ICIBENEFIT_STUDY_QUIET_SECONDS": "2",
        "ICIBENEFIT_STATUS_PORT": "9000",
        "ICIBENEFIT_FHIR_BASE_URL": "http://127.0.0.1:8103/fhir/R4",
        "ICIBENEFIT_PACS_AE_TITLE": "ORTHANC",
        "ICIBENEFIT_PACS_HOST": "127.0.0.1",
        "ICIBENEFIT_PACS_PORT": "4242",
        "ICIBENEFIT_MODEL_BUNDLE": str(tmp_path / "bundle"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.data_dir == tmp_path
    assert settings.scp_ae_title == "SITEAE"
    assert settings.scp_bind == "0.0.0.0"
    assert settings.scp_port == 104
    assert settings.allowed_calling_ae_titles == ["ORTHANC", "PACS1"]
    assert settings.study_quiet_seconds == 2
    assert settings.status_port == 9000
    assert settings.fhir_base_url == "http://127.0.0.1:8103/fhir/R4"
    assert settings.pacs_configured
    assert settings.pacs_port == 4242
    assert settings.model_bundle == tmp_path / "bundle"


def test_invalid_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICIBENEFIT_SCP_PORT", "seventy")
    with pytest.raises(ConfigurationError, match=r"scp_port \(ICIBENEFIT_SCP_PORT\)"):
        load_settings()


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("scp_prot = 104\n")
    with pytest.raises(ConfigurationError, match="scp_prot"):
        load_settings(config)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_ae_title_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="scp_ae_title"):
        load_settings(scp_ae_title="THIS-TITLE-IS-FAR-TOO-LONG")


def test_dicom_reports_default_to_sr_and_pdf() -> None:
    settings = load_settings()
    assert settings.dicom_reports == "both"
    assert settings.sr_reports
    assert settings.pdf_reports
    only_sr = load_settings(dicom_reports="sr")
    assert only_sr.sr_reports
    assert not only_sr.pdf_reports
    only_pdf = load_settings(dicom_reports="pdf")
    assert only_pdf.pdf_reports
    assert not only_pdf.sr_reports
    with pytest.raises(ConfigurationError, match="ICIBENEFIT_DICOM_REPORTS"):
        load_settings(dicom_reports="html")


def test_stowrs_destination_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICIBENEFIT_PACS_DESTINATION", "stowrs")
    monkeypatch.setenv("ICIBENEFIT_PACS_STOW_URL", "https://pacs.example/dicom-web")
    monkeypatch.setenv("ICIBENEFIT_PACS_STOW_USERNAME", "icibenefit")
    monkeypatch.setenv("ICIBENEFIT_PACS_STOW_PASSWORD", "s3cret")
    settings = load_settings()
    assert settings.pacs_configured
    assert settings.pacs_stow_auth == ("icibenefit", "s3cret")
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pacs_destination": "stowrs"}, "needs pacs_stow_url"),
        ({"pacs_stow_url": "pacs:8042"}, "http"),
        ({"pacs_stow_url": "http://pacs/dicom-web", "pacs_stow_username": "u"}, "both"),
    ],
)
def test_incomplete_stowrs_settings_are_refused(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(**overrides)
