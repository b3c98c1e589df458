"""A folder of model bundles side by side, with an atomically switched active one.

Layout::

    <store>/bundles/<name>-<version>/   one verified bundle per version
    <store>/active.json                 {"active": id | null, "previous": [ids],
                                         "history": [{"action", "bundle", "at"}]}

``active.json`` is replaced with :func:`~icibenefit.durable.write_atomically`, so a
reader (the service loading its model) sees either the old or the new pointer,
never half a file; a bundle is copied into a hidden staging folder and moved into
place with :func:`~icibenefit.durable.replace_durably`.
``previous`` is the stack that :meth:`ModelStore.rollback` pops; ``history`` is
the audit trail of every promotion and rollback.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from icibenefit import audit
from icibenefit.durable import replace_durably, write_atomically
from icibenefit.errors import ModelBundleError
from icibenefit.model_store.bundle import ModelBundle, load_bundle, read_manifest, verify_bundle
from icibenefit.model_store.manifest import BundleManifest
from icibenefit.settings import Settings

BUNDLES_DIR = "bundles"
POINTER_FILE = "active.json"


class PointerEvent(BaseModel):
    """One promotion or rollback, kept for audit."""

    action: Literal["promote", "rollback"]
    bundle: str
    at: dt.datetime


class ActivePointer(BaseModel):
    """Contents of ``active.json``."""

    active: str | None = None
    previous: list[str] = Field(default_factory=list)
    history: list[PointerEvent] = Field(default_factory=list)


class ModelStore:
    """Versioned bundles in one folder; which one the service uses is ``active``.

    Parameters
    ----------
    root
        The store folder (``Settings.resolved_model_store_dir``); created on first write.
    verify
        Checks a stored bundle before :meth:`promote` or :meth:`rollback` makes it
        active, raising :class:`~icibenefit.errors.ModelBundleError` when it is
        unusable (:func:`~icibenefit.model_store.bundle.verify_bundle`, every
        checksum, by default).  Tests of the pointer bookkeeping pass a no-op.
        :meth:`add` always runs ``verify_bundle``: it needs the manifest.
    """

    def __init__(
        self, root: Path | str, *, verify: Callable[[Path], object] = verify_bundle
    ) -> None:
        self.root = Path(root)
        self.verify = verify

    @property
    def bundles_dir(self) -> Path:
        """Folder holding the bundles, one sub-folder per ``<name>-<version>``."""
        return self.root / BUNDLES_DIR

    def bundle_path(self, bundle_id: str) -> Path:
        """Folder of the bundle ``bundle_id``; raises if the store does not hold it."""
        path = self.bundles_dir / bundle_id
        if bundle_id in {"", ".", ".."} or "/" in bundle_id or not path.is_dir():
            known = ", ".join(self.ids()) or "none"
            raise ModelBundleError(f"no bundle {bundle_id!r} in store {self.root} (known: {known})")
        return path

    def ids(self) -> list[str]:
        """Identifiers of the stored bundles, sorted."""
        if not self.bundles_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.bundles_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def manifests(self) -> dict[str, BundleManifest | ModelBundleError]:
        """Each bundle's manifest, or the error that makes it unreadable (for listing)."""
        result: dict[str, BundleManifest | ModelBundleError] = {}
        for bundle_id in self.ids():
            try:
                result[bundle_id] = read_manifest(self.bundles_dir / bundle_id)
            except ModelBundleError as exc:
                result[bundle_id] = exc
        return result

    def pointer(self) -> ActivePointer:
        """The current ``active.json`` (empty when nothing was promoted yet)."""
        path = self.root / POINTER_FILE
        if not path.is_file():
            return ActivePointer()
        try:
            return ActivePointer.model_validate_json(path.read_bytes())
        except ValueError as exc:
            raise ModelBundleError(f"unreadable {POINTER_FILE} in {self.root}: {exc}") from None

    def active_id(self) -> str | None:
        """The identifier of the active bundle, if any."""
        return self.pointer().active

    def add(self, bundle_dir: Path | str, *, promote: bool = False) -> str:
        """Copy a verified bundle into the store and return its identifier.

        The copy goes through a hidden staging folder and is verified again after
        copying, so the store never holds a bundle that fails its checksums.
        """
        manifest = verify_bundle(bundle_dir)
        bundle_id = manifest.bundle_id
        target = self.bundles_dir / bundle_id
        if target.exists():
            raise ModelBundleError(f"store {self.root} already holds {bundle_id}")
        self.bundles_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{bundle_id}.", dir=self.bundles_dir))
        try:
            shutil.copytree(bundle_dir, staging, dirs_exist_ok=True)
            verify_bundle(staging)
            replace_durably(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if promote:
            self.promote(bundle_id)
        return bundle_id

    def promote(self, bundle_id: str) -> None:
        """Make ``bundle_id`` active after verifying it; the old one can be rolled back to."""
        self.verify(self.bundle_path(bundle_id))
        pointer = self.pointer()
        if pointer.active == bundle_id:
            return
        previous = [*pointer.previous, pointer.active] if pointer.active else pointer.previous
        self._write_pointer(
            ActivePointer(
                active=bundle_id,
                previous=previous,
                history=[*pointer.history, _event("promote", bundle_id)],
            )
        )
        audit.record(
            "model_promoted",
            component="model_store",
            actor=audit.process_user(),
            details={"bundle": bundle_id, "previous": pointer.active, "store": str(self.root)},
        )

    def rollback(self) -> str:
        """Re-activate the bundle that was active before the current one; return its id."""
        pointer = self.pointer()
        if not pointer.previous:
            raise ModelBundleError(f"nothing to roll back to in store {self.root}")
        target = pointer.previous[-1]
        self.verify(self.bundle_path(target))
        self._write_pointer(
            ActivePointer(
                active=target,
                previous=pointer.previous[:-1],
                history=[*pointer.history, _event("rollback", target)],
            )
        )
        audit.record(
            "model_rolled_back",
            component="model_store",
            actor=audit.process_user(),
            details={"bundle": target, "previous": pointer.active, "store": str(self.root)},
        )
        return target

    def active_path(self) -> Path:
        """Folder of the active bundle; raises when nothing was promoted."""
        active = self.active_id()
        if active is None:
            raise ModelBundleError(f"no active bundle in store {self.root} (promote one first)")
        return self.bundle_path(active)

    def load_active(self) -> ModelBundle:
        """Load (and verify) the active bundle."""
        return load_bundle(self.active_path())

    def _write_pointer(self, pointer: ActivePointer) -> None:
        payload: dict[str, Any] = pointer.model_dump(mode="json")
        write_atomically(self.root / POINTER_FILE, (json.dumps(payload, indent=2) + "\n").encode())


def _event(action: Literal["promote", "rollback"], bundle_id: str) -> PointerEvent:
    return PointerEvent(action=action, bundle=bundle_id, at=dt.datetime.now(dt.UTC))


def configured_bundle_path(settings: Settings) -> Path:
    """The bundle the service should use: ``model_bundle`` if set, else the store's active one."""
    if settings.model_bundle is not None:
        return settings.model_bundle
    return ModelStore(settings.resolved_model_store_dir).active_path()
