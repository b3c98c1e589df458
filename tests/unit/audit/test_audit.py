"""The audit log: entry contents, no clear identifiers, rotation, several writers."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from icibenefit import audit
from icibenefit.audit import MAX_LINE_BYTES, AuditLog, settings_summary, study_reference
from icibenefit.privacy import pseudonymize

KEY = "audit-test-key"
PATIENT = "PAT-0042"
STUDY = "1.2.826.0.1.3680043.8.498.1234"


def _log(tmp_path: Path, **options: int) -> AuditLog:
    options.setdefault("max_bytes", 1_000_000)
    options.setdefault("backups", 3)
    return AuditLog(tmp_path / "audit", KEY, **options)


def test_entry_has_the_required_fields_and_only_hashed_identifiers(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.record(
        "received",
        component="listener.store",
        actor="ORTHANC",
        outcome="stored",
        patient_id=PATIENT,
        study_uid=STUDY,
        details={"note": f"instance of {PATIENT}", "date": "2024-12-01"},
    )
    text = log.path.read_text()
    assert PATIENT not in text
    assert STUDY not in text
    (entry,) = [json.loads(line) for line in text.splitlines()]
    stamp = dt.datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
    assert entry["event"] == "received"
    assert entry["component"] == "listener.store"
    assert entry["actor"] == "ORTHANC"
    assert entry["outcome"] == "stored"
    assert entry["patient"] == pseudonymize(PATIENT, KEY)
    assert entry["study"] == study_reference(STUDY, KEY)
    assert entry["study"].startswith("s-")
    assert entry["study"] != entry["patient"]
    assert entry["details"]["note"] == f"instance of {pseudonymize(PATIENT, KEY)}"
    assert entry["details"]["date"] == "2024-12-01"


def test_short_identifier_is_scrubbed_as_a_token_only(tmp_path: Path) -> None:
    entry = _log(tmp_path).entry(
        "fetched",
        component="fhir",
        patient_id="12",
        details={"text": "patient 12 on 2024-12-12", "ids": ["12", "a12"]},
    )
    hashed = pseudonymize("12", KEY)
    assert entry["details"] == {
        "text": f"patient {hashed} on 2024-12-12",
        "ids": [hashed, "a12"],
    }


def test_unknown_event_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        _log(tmp_path).record("looked_at", component="x")


def test_over_long_details_are_dropped_not_split(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.record("reported", component="reporting", details={"blob": "x" * 10_000})
    (line,) = log.path.read_bytes().splitlines(keepends=True)
    assert len(line) <= MAX_LINE_BYTES
    entry = json.loads(line)
    assert "details" not in entry
    assert "exceed" in entry["details_dropped"]


def test_rotation_keeps_every_line_whole_and_prunes_old_files(tmp_path: Path) -> None:
    log = _log(tmp_path, max_bytes=4096, backups=0)
    for number in range(200):
        log.record("sent", component="listener.outbox", details={"n": number})
    rotated = log.rotated_files()
    assert len(rotated) >= 3
    assert all(path.stat().st_size >= 4096 for path in rotated)
    assert [entry["details"]["n"] for entry in log.entries()] == list(range(200))

    pruned = _log(tmp_path, max_bytes=4096, backups=2)
    pruned.record("sent", component="listener.outbox", details={"n": 200})
    pruned.rotate(force=True)
    assert len(pruned.rotated_files()) == 2
    assert pruned.rotated_files() == sorted(pruned.rotated_files())


def test_rotate_does_nothing_when_another_process_already_did(tmp_path: Path) -> None:
    log = _log(tmp_path, max_bytes=4096)
    assert log.rotate() is None  # no file yet
    log.record("sent", component="listener.outbox")
    assert log.rotate() is None  # below the limit: a racing rotator re-checks and stops
    assert log.path.is_file()
    assert log.rotated_files() == []


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from icibenefit.audit import AuditLog

    log = AuditLog(Path(sys.argv[1]), "k", max_bytes=8192, backups=0)
    for number in range(int(sys.argv[3])):
        log.record("received", component="writer", actor=sys.argv[2],
                   details={"n": number, "pad": "y" * 200}, sync=False)
    """
)


def test_several_processes_append_and_rotate_without_losing_or_mixing_lines(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "audit"
    per_writer, writers = 150, 4
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), f"w{index}", str(per_writer)]
        )
        for index in range(writers)
    ]
    assert [process.wait(120) for process in processes] == [0] * writers
    log = AuditLog(directory, "k", max_bytes=8192, backups=0)
    assert len(log.rotated_files()) > 5
    seen: dict[str, list[int]] = {}
    for entry in log.entries():  # json.loads fails on any interleaved line
        seen.setdefault(entry["actor"], []).append(entry["details"]["n"])
    assert sorted(seen) == [f"w{index}" for index in range(writers)]
    for numbers in seen.values():
        assert numbers == list(range(per_writer)), "lost, duplicated or reordered lines"


def test_settings_summary_hides_secrets(make_settings) -> None:
    settings = make_settings(
        pseudonym_key="very-secret-site-key",
        fhir_token="bearer-secret",
        fhir_base_url="https://user:pw@fhir.example.org/R4",
    )
    digest, values = settings_summary(settings)
    text = json.dumps(values)
    for secret in ("very-secret-site-key", "bearer-secret", "pw@"):
        assert secret not in text
    assert values["pseudonym_key"] == "<set>"
    assert values["fhir_token"] == "<set>"
    assert values["fhir_base_url"] == "https://fhir.example.org/R4"
    assert values["scp_port"] == settings.scp_port
    assert len(digest) == 64
    assert (
        settings_summary(make_settings(scp_port=2000))[0]
        != settings_summary(make_settings(scp_port=2001))[0]
    )


def test_settings_loaded_says_whether_the_settings_changed(make_settings) -> None:
    first = make_settings(pseudonym_key="site-secret")
    log = AuditLog.from_settings(first)
    outcomes = [
        log.settings_loaded(first, "listener.service"),
        log.settings_loaded(first, "listener.service"),
        log.settings_loaded(make_settings(pseudonym_key="site-secret", workers=3), "x"),
    ]
    assert [entry["outcome"] for entry in outcomes if entry] == ["first", "unchanged", "changed"]
    assert "site-secret" not in log.path.read_text()
    assert outcomes[2] is not None
    assert outcomes[1] is not None
    assert outcomes[2]["details"]["previous_sha256"] == outcomes[1]["details"]["sha256"]


def test_process_log_records_only_once_configured(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    path = settings.data_dir / "audit" / "audit.jsonl"
    previous = audit.current()
    try:
        audit._process_log = None
        audit.record("fetched", component="fhir", patient_id=PATIENT)
        assert not path.exists()
        audit.configure(settings)
        audit.record("fetched", component="fhir", patient_id=PATIENT)
        (entry,) = [json.loads(line) for line in path.read_text().splitlines()]
        assert entry["event"] == "fetched"
        assert entry["patient"] == pseudonymize(PATIENT, settings.pseudonym_key.get_secret_value())
    finally:
        audit._process_log = previous


def test_write_failure_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    log = _log(tmp_path)
    log.path.mkdir(parents=True)  # a directory where the file should be: open() fails
    assert log.record("sent", component="listener.outbox") is None
    assert "audit log write failed" in caplog.text
