"""The files in deploy/ are what IT teams install from: keep them true to the code."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from icibenefit.settings import ENV_PREFIX, Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_example_settings_document_every_key() -> None:
    text = (DEPLOY / "icibenefit.example.toml").read_text()
    documented = set(re.findall(r"^#? ?([a-z_]+) = ", text, flags=re.MULTILINE))
    assert documented == set(Settings.model_fields)


def test_example_settings_load_with_every_key_uncommented(tmp_path: Path) -> None:
    """Uncommenting any example line must still give valid settings."""
    text = (DEPLOY / "icibenefit.example.toml").read_text()
    uncommented = re.sub(r"^# ([a-z_]+ = )", r"\1", text, flags=re.MULTILINE)
    config = tmp_path / "all.toml"
    config.write_text(uncommented)
    assert set(tomllib.loads(uncommented)) == set(Settings.model_fields)
    settings = load_settings(config)
    assert settings.scp_ae_title == "ICIBENEFIT"
    assert settings.allowed_calling_ae_titles == ["ORTHANC"]
    assert settings.pacs_configured


def test_compose_wires_the_three_services() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"orthanc", "fhir", "icibenefit"}
    icibenefit = services["icibenefit"]
    for name in icibenefit["environment"]:
        assert name.startswith(ENV_PREFIX)
        assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, name
    assert icibenefit["environment"]["ICIBENEFIT_PACS_HOST"] == "orthanc"
    assert "fhir:8080" in icibenefit["environment"]["ICIBENEFIT_FHIR_BASE_URL"]
    lua_mount = next(v for v in services["orthanc"]["volumes"] if v.endswith(".lua:ro"))
    assert (DEPLOY / lua_mount.split(":")[0]).is_file()
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), "publish on the host's loopback only"


def test_dockerfile_runs_as_non_root_with_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm AS build$", text, re.MULTILINE)
    assert text.count("\nFROM ") + text.startswith("FROM") >= 2, "multi-stage build"
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert "PYTHONSAFEPATH=1" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.MULTILINE)
    assert 'VOLUME ["/data"]' in text
    assert "pip wheel" in text
    assert "/wheels/icibenefit-" in text
