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
