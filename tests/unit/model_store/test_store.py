from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icibenefit.cli import app
from icibenefit.errors import ModelBundleError
from icibenefit.model_store import ModelStore, configured_bundle_path


def test_promote_and_rollback(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    store = ModelStore(tmp_path / "store")
    assert store.ids() == []
    with pytest.raises(ModelBundleError, match="no active bundle"):
        store.active_path()

    first = store.add(make_bundle("1"), promote=True)
    second = store.add(make_bundle("2"))
    assert (first, second) == ("demo-1", "demo-2")
    assert store.ids() == ["demo-1", "demo-2"]
    assert store.active_id() == "demo-1"

    store.promote("demo-2")
    assert store.load_active().manifest.version == "2"
    assert store.rollback() == "demo-1"
    assert store.active_id() == "demo-1"
    with pytest.raises(ModelBundleError, match="nothing to roll back"):
        store.rollback()

    pointer = json.loads((store.root / "active.json").read_text())
    assert [e["action"] for e in pointer["history"]] == ["promote", "promote", "rollback"]
    assert not list(store.root.glob(".active.json.*"))  # no temp files left


def test_promote_refuses_tampered_or_unknown_bundle(
    tmp_path: Path, make_bundle: Callable[..., Path]
) -> None:
    store = ModelStore(tmp_path / "store")
    store.add(make_bundle("1"), promote=True)
    store.add(make_bundle("2"))
    (store.bundle_path("demo-2") / "json" / "thresholds.json").write_text("{}")
    with pytest.raises(ModelBundleError, match=r"thresholds\.json"):
        store.promote("demo-2")
    assert store.active_id() == "demo-1"
    with pytest.raises(ModelBundleError, match="no bundle 'demo-9'"):
        store.promote("demo-9")
    with pytest.raises(ModelBundleError, match="already holds demo-1"):
        store.add(make_bundle("1", directory=tmp_path / "again"))


def test_configured_bundle_path_prefers_explicit_bundle(
    tmp_path: Path, make_bundle: Callable[..., Path], make_settings: Callable[..., object]
) -> None:
    store_dir = tmp_path / "store"
    ModelStore(store_dir).add(make_bundle("1"), promote=True)
    settings = make_settings(model_store_dir=store_dir)
    assert configured_bundle_path(settings) == store_dir / "bundles" / "demo-1"  # type: ignore[arg-type]
    explicit = make_settings(model_store_dir=store_dir, model_bundle=tmp_path / "x")
    assert configured_bundle_path(explicit) == tmp_path / "x"  # type: ignore[arg-type]


def test_cli_list_show_promote_rollback(
    tmp_path: Path, make_bundle: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ICIBENEFIT_CONFIG", raising=False)
    monkeypatch.setenv("ICIBENEFIT_DATA_DIR", str(tmp_path / "data"))  # the audit log goes there
    runner = CliRunner()
    store = str(tmp_path / "store")

    result = runner.invoke(
        app, ["models", "add", str(make_bundle("1")), "--promote", "--store", store]
    )
    assert result.exit_code == 0, result.output
    assert (
        runner.invoke(app, ["models", "add", str(make_bundle("2")), "--store", store]).exit_code
        == 0
    )

    listing = runner.invoke(app, ["models", "list", "--store", store])
    assert listing.exit_code == 0, listing.output
    active_line = next(line for line in listing.output.splitlines() if "*" in line)
    assert "demo-1" in active_line
    assert "demonstration" in active_line

    shown = runner.invoke(app, ["models", "show", "demo-2", "--store", store])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["version"] == "2"

    assert runner.invoke(app, ["models", "promote", "demo-2", "--store", store]).exit_code == 0
    assert ModelStore(store).active_id() == "demo-2"
    result = runner.invoke(app, ["models", "rollback", "--store", store])
    assert result.exit_code == 0
    assert "demo-1" in result.output
    assert ModelStore(store).active_id() == "demo-1"
    events = (tmp_path / "data" / "audit" / "audit.jsonl").read_text()
    assert [json.loads(line)["event"] for line in events.splitlines()] == [
        "model_promoted",
        "model_promoted",
        "model_rolled_back",
    ]


def test_cli_uses_store_from_settings(
    tmp_path: Path, make_bundle: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ICIBENEFIT_CONFIG", raising=False)
    monkeypatch.setenv("ICIBENEFIT_MODEL_STORE_DIR", str(tmp_path / "s"))
    ModelStore(tmp_path / "s").add(make_bundle("3"), promote=True)
    result = CliRunner().invoke(app, ["models", "show"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["version"] == "3"


def test_cli_error_is_a_clean_failure(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "promote", "nope", "--store", str(tmp_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ModelBundleError)
