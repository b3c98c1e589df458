"""The status page's HTML: pure functions of :class:`StatusData`.

Kept apart from :mod:`.status_page` (which reads the index and speaks HTTP) so
the page can be rendered and checked in tests without a database or server.
No template engine: the page is small, and every dynamic value goes through
:func:`html.escape` (``esc``); jinja2 would add a dependency for autoescaping
we get from one helper.  No patient name ever reaches this module; patients
appear as the keyed hash the index stores and Study Instance UIDs are
shortened to their last digits next to the audit log's study reference.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def esc(value: object) -> str:
    """HTML-escape anything (quotes included, so it is safe in attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def mask_uid(uid: str | None, keep: int = 10) -> str:
    """The last ``keep`` characters of a UID after an ellipsis."""
    if not uid:
        return ""
    return uid if len(uid) <= keep else "\u2026" + uid[-keep:]


def when(epoch: float | None) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SSZ`` (UTC), empty for ``None``."""
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class PeerHealth:
    """What the page knows about one outgoing connection (PACS or FHIR)."""

    name: str
    target: str
    configured: bool
    reachable: bool | None = None
    detail: str = ""
    checked_at: float | None = None
    last_delivered_at: float | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class PredictionRow:
    """One archived report: which study, which model, what it said (no identifiers)."""

    created: str
    study_uid: str
    patient_hash: str
    model: str
    endpoints: tuple[tuple[str, float, str], ...]


@dataclass(frozen=True)
class StatusData:
    """Everything :func:`render` shows."""

    generated_at: float
    healthy: bool
    studies: Sequence[Mapping[str, Any]]
    jobs: Sequence[Mapping[str, Any]]
    job_counts: Mapping[str, int]
    outbox_counts: Mapping[str, int]
    dead_letters: Sequence[Mapping[str, Any]]
    predictions: Sequence[PredictionRow]
    peers: Sequence[PeerHealth]
    study_refs: Mapping[str, str] = field(default_factory=dict)


_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f2f2f2}
.ok{color:#060}.bad{color:#a00;font-weight:bold}.muted{color:#777}
.state-dead,.state-failed{color:#a00}.state-done{color:#060}
.flash{background:#eef6ee;border:1px solid #8b8;padding:.4em .8em;display:inline-block}
.err{max-width:40em;white-space:pre-wrap;font-size:.9em}code{font-size:.95em}
"""


def render(data: StatusData, *, csrf_token: str, flash: str | None = None) -> str:
    """The whole page as HTML (pure: same data, same page)."""

    def ref(uid: str | None) -> str:
        if not uid:
            return ""
        return (
            f'<code title="audit reference">{esc(data.study_refs.get(uid, ""))}</code>'
            f" <span class=muted>{esc(mask_uid(uid))}</span>"
        )

    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>icibenefit status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>icibenefit status</h1>",
        f'<p id=service-state class="{"ok" if data.healthy else "bad"}">Service '
        f"{'running' if data.healthy else 'stopping'}; page generated "
        f"{esc(when(data.generated_at))}.</p>",
    ]
    if flash:
        parts.append(f"<p class=flash id=flash role=status>{esc(flash)}</p>")
    parts += _connections(data.peers)
    counts = ", ".join(f"{esc(state)} {n}" for state, n in data.job_counts.items())
    parts.append(f"<h2>Jobs</h2><p id=job-counts>{counts}</p>")
    parts.append(
        "<table id=jobs><tr><th>job</th><th>study</th><th>version</th><th>state</th>"
        "<th>attempts</th><th>created</th><th>next attempt</th><th>last error</th><th></th></tr>"
    )
    for job in data.jobs:
        state = str(job["state"])
        button = ""
        if state in ("failed", "dead"):
            button = _retry_form(
                f"/jobs/{int(job['id'])}/retry", f"retry-{int(job['id'])}", "Retry", csrf_token
            )
        next_attempt = when(job["next_attempt_at"]) if state in ("queued", "failed") else ""
        parts.append(
            f'<tr data-job-id="{int(job["id"])}" data-state="{esc(state)}">'
            f"<td>{int(job['id'])}</td><td>{ref(job['study_uid'])}</td>"
            f"<td>{esc(job['version'])}</td><td class=state-{esc(state)}>{esc(state)}</td>"
            f"<td>{esc(job['attempts'])}</td><td>{esc(when(job['created_at']))}</td>"
            f"<td>{esc(next_attempt)}</td>"
            f"<td class=err>{esc((job['last_error'] or '')[:300])}</td><td>{button}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        "<h2>Recent studies</h2><table id=studies><tr><th>study</th><th>patient</th>"
        "<th>study date</th><th>instances</th><th>state</th><th>version</th>"
        "<th>last received</th></tr>"
    )
    for study in data.studies:
        parts.append(
            f'<tr data-study-ref="{esc(data.study_refs.get(study["study_uid"], ""))}">'
            f"<td>{ref(study['study_uid'])}</td><td><code>{esc(study['patient_id_hash'])}</code></td>"
            f"<td>{esc(study['study_date'])}</td><td>{esc(study['instances'])}</td>"
            f"<td class=state-{esc(study['state'])}>{esc(study['state'])}</td>"
            f"<td>{esc(study['version'])}</td><td>{esc(when(study['last_received_at']))}</td></tr>"
        )
    parts.append("</table>")
    parts += _outbox(data, ref, csrf_token)
    parts += _predictions(data.predictions, ref)
    parts.append(
        "<p class=muted>Patients appear as keyed hashes; studies as their audit reference and "
        "the last digits of the Study Instance UID. JSON: <a href=/studies>/studies</a>, "
        "<a href=/jobs>/jobs</a>, <a href=/metrics>/metrics</a>.</p></body></html>"
    )
    return "\n".join(parts)


def _connections(peers: Sequence[PeerHealth]) -> list[str]:
    rows = [
        "<h2>Connections</h2><table id=connections><tr><th>peer</th><th>target</th>"
        "<th>check</th><th>last delivery</th><th>last error</th></tr>"
    ]
    for peer in peers:
        if peer.reachable is None:
            check = "<span class=muted>not checked</span>"
        else:
            css = "ok" if peer.reachable else "bad"
            label = "reachable" if peer.reachable else "UNREACHABLE"
            check = (
                f"<span class={css}>{label}</span> <span class=muted>{esc(peer.detail)} "
                f"at {esc(when(peer.checked_at))}</span>"
            )
        rows.append(
            f'<tr data-peer="{esc(peer.name)}"><td>{esc(peer.name)}</td><td>{esc(peer.target)}</td>'
            f"<td>{check}</td><td>{esc(when(peer.last_delivered_at)) or 'never'}</td>"
            f"<td class=err>{esc((peer.last_error or '')[:300])}</td></tr>"
        )
    rows.append("</table>")
    return rows


def _retry_form(action: str, button_id: str, label: str, csrf_token: str) -> str:
    return (
        f'<form method=post action="{esc(action)}">'
        f'<input type=hidden name=csrf_token value="{esc(csrf_token)}">'
        f'<button type=submit name=retry id="{esc(button_id)}">{esc(label)}</button></form>'
    )


def _outbox(data: StatusData, ref: Callable[[str | None], str], csrf_token: str) -> list[str]:
    counts = data.outbox_counts
    depth = counts.get("queued", 0) + counts.get("sending", 0)
    rows = [
        f"<h2>Outbox</h2><p id=outbox-depth>depth {depth} (queued {counts.get('queued', 0)}, "
        f"sending {counts.get('sending', 0)}); delivered {counts.get('done', 0)}; "
        f"dead letters {counts.get('dead', 0)}</p>"
    ]
    if data.dead_letters:
        rows.append(
            "<table id=dead-letters><tr><th>item</th><th>kind</th><th>study</th>"
            "<th>attempts</th><th>created</th><th>last error</th><th></th></tr>"
        )
        for item in data.dead_letters:
            item_id = int(item["id"])
            button = _retry_form(
                f"/outbox/{item_id}/retry", f"resend-{item_id}", "Re-send", csrf_token
            )
            rows.append(
                f'<tr data-outbox-id="{item_id}"><td>{item_id}</td><td>{esc(item["kind"])}</td>'
                f"<td>{ref(item['study_uid'])}</td><td>{esc(item['attempts'])}</td>"
                f"<td>{esc(when(item['created_at']))}</td>"
                f"<td class=err>{esc((item['last_error'] or '')[:300])}</td><td>{button}</td></tr>"
            )
        rows.append("</table>")
    return rows


def _predictions(
    predictions: Sequence[PredictionRow], ref: Callable[[str | None], str]
) -> list[str]:
    rows = [
        "<h2>Recent predictions</h2><table id=predictions><tr><th>when</th><th>study</th>"
        "<th>patient</th><th>model</th><th>probability of benefit (risk of no benefit)</th></tr>"
    ]
    for row in predictions:
        endpoints = "; ".join(
            f"{esc(name)} {probability:.2f} ({esc(risk)})"
            for name, probability, risk in row.endpoints
        )
        rows.append(
            f"<tr><td>{esc(row.created)}</td><td>{ref(row.study_uid)}</td>"
            f"<td><code>{esc(row.patient_hash)}</code></td><td>{esc(row.model)}</td>"
            f"<td>{endpoints}</td></tr>"
        )
    if not predictions:
        rows.append("<tr><td colspan=5 class=muted>none yet</td></tr>")
    rows.append("</table>")
    return rows
