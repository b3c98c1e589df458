"""Write and load model bundles: a folder of files plus a checksummed manifest.

Layout of a bundle directory::

    manifest.json            BundleManifest (files map: relative path -> sha256)
    manifest.sha256          sha256 of manifest.json's bytes
    estimators/<name>.skops  fitted scikit-learn / imbalanced-learn objects (skops)
    tensors/<name>.safetensors   torch state dicts (safetensors)
    json/<name>.json         small JSON documents (e.g. thresholds, calibration)

Fitted estimators are stored with skops and torch weights with safetensors
because neither format executes code on load, unlike pickle. Every file,
the manifest included, is checked against its sha256 before anything is read,
so a bundle changed by a single byte refuses to load.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from icibenefit.durable import replace_durably
from icibenefit.errors import ModelBundleError
from icibenefit.model_store.manifest import MEMBER_NAME, BundleManifest
from icibenefit.model_store.trusted import TRUSTED_TYPES

if TYPE_CHECKING:
    import torch

MANIFEST_FILE = "manifest.json"
MANIFEST_DIGEST_FILE = "manifest.sha256"
ESTIMATOR_DIR = "estimators"
TENSOR_DIR = "tensors"
JSON_DIR = "json"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large weight files stay out of memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_member_name(name: str) -> str:
    if not MEMBER_NAME.match(name):
        raise ModelBundleError(f"invalid bundle member name {name!r}: use letters, digits, _.+-")
    return name


def _untrusted(types: Iterable[str], extra_trusted: Iterable[str]) -> list[str]:
    allowed = TRUSTED_TYPES | set(extra_trusted)
    return sorted(set(types) - allowed)


class BundleWriter:
    """Collect fitted objects and metadata, then write a bundle atomically.

    Parameters
    ----------
    out_dir
        Folder to create; it must not exist yet (a bundle is never modified in place).
    extra_trusted
        Types beyond :data:`~icibenefit.model_store.trusted.TRUSTED_TYPES` that the
        estimators may contain. Every loader must pass the same names, so prefer
        adding project types to the allow-list module.
    **manifest_fields
        Fields of :class:`~icibenefit.model_store.manifest.BundleManifest` except
        ``files`` (name, version, training_data_fingerprint, intended_use, ...).
        They are validated now, so a wrong field fails before training output is lost.

    Examples
    --------
    >>> writer = BundleWriter(out, name="demo", version="1", training_data_fingerprint="x",
    ...                       intended_use={"demonstration": True})   # doctest: +SKIP
    >>> writer.add_estimator("pfs6-clinical-baseline", pipeline)       # doctest: +SKIP
    >>> writer.write()                                                 # doctest: +SKIP
    """

    def __init__(
        self, out_dir: Path | str, *, extra_trusted: Iterable[str] = (), **manifest_fields: Any
    ) -> None:
        if "files" in manifest_fields:
            raise ModelBundleError("'files' is computed by the writer, do not pass it")
        self.out_dir = Path(out_dir)
        self.extra_trusted = tuple(extra_trusted)
        try:
            self.manifest = BundleManifest(**manifest_fields)
        except ValidationError as exc:
            raise ModelBundleError(f"invalid bundle manifest: {exc}") from None
        self._members: dict[str, bytes] = {}

    def _add(self, relative_path: str, data: bytes) -> None:
        if relative_path in self._members:
            raise ModelBundleError(f"bundle member {relative_path} added twice")
        self._members[relative_path] = data

    def add_estimator(self, name: str, estimator: Any) -> None:
        """Serialise a fitted estimator with skops, refusing types loaders would not trust."""
        import skops.io as sio

        data = sio.dumps(estimator)
        untrusted = _untrusted(sio.get_untrusted_types(data=data), self.extra_trusted)
        if untrusted:
            raise ModelBundleError(
                f"estimator {name!r} contains types outside the allow-list "
                f"(icibenefit/model_store/trusted.py): {', '.join(untrusted)}"
            )
        self._add(f"{ESTIMATOR_DIR}/{_check_member_name(name)}.skops", data)

    def add_tensors(self, name: str, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Store a torch state dict with safetensors (tensors are made contiguous on CPU)."""
        from safetensors.torch import save

        tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
        self._add(f"{TENSOR_DIR}/{_check_member_name(name)}.safetensors", save(tensors))

    def add_json(self, name: str, obj: Any) -> None:
        """Store a JSON-serialisable object (sorted keys, so bundles are reproducible)."""
        try:
            text = json.dumps(obj, sort_keys=True, indent=2, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ModelBundleError(f"bundle JSON {name!r} is not serialisable: {exc}") from None
        self._add(f"{JSON_DIR}/{_check_member_name(name)}.json", text.encode())

    def write(self) -> Path:
        """Write every file, then the manifest, into a temporary folder renamed at the end.

        The rename makes the bundle appear complete or not at all, so a crash
        mid-write never leaves a half bundle that a store could promote.
        """
        if self.out_dir.exists():
            raise ModelBundleError(f"bundle directory already exists: {self.out_dir}")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", dir=self.out_dir.parent))
        try:
            files: dict[str, str] = {}
            for relative_path, data in sorted(self._members.items()):
                target = staging / relative_path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                files[relative_path] = hashlib.sha256(data).hexdigest()
            manifest = self.manifest.model_copy(update={"files": files})
            manifest_bytes = (manifest.model_dump_json(indent=2) + "\n").encode()
            (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
            (staging / MANIFEST_DIGEST_FILE).write_text(
                hashlib.sha256(manifest_bytes).hexdigest() + "\n", encoding="utf-8"
            )
            replace_durably(staging, self.out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.out_dir


def read_manifest(path: Path | str) -> BundleManifest:
    """Read and verify a bundle's manifest (its own checksum) without checking the files."""
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    digest_path = root / MANIFEST_DIGEST_FILE
    if not manifest_path.is_file() or not digest_path.is_file():
        raise ModelBundleError(
            f"not a model bundle (no {MANIFEST_FILE}/{MANIFEST_DIGEST_FILE}): {root}"
        )
    manifest_bytes = manifest_path.read_bytes()
    # Compared byte for byte (no strip()): any change to the digest file counts as tampering.
    expected = (hashlib.sha256(manifest_bytes).hexdigest() + "\n").encode()
    if digest_path.read_bytes() != expected:
        raise ModelBundleError(f"integrity check failed for {MANIFEST_FILE} in {root}")
    try:
        return BundleManifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        raise ModelBundleError(f"invalid {MANIFEST_FILE} in {root}: {exc}") from None


class ModelBundle:
    """A verified bundle on disk; members are deserialised on first use and cached.

    Construct it with :func:`load_bundle`, which checks every checksum first.
    """

    def __init__(
        self, root: Path, manifest: BundleManifest, extra_trusted: Iterable[str] = ()
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.extra_trusted = tuple(extra_trusted)
        self._cache: dict[str, Any] = {}

    def _member_path(self, relative_path: str) -> Path:
        if relative_path not in self.manifest.files:
            members = ", ".join(sorted(self.manifest.files)) or "none"
            raise ModelBundleError(f"bundle has no member {relative_path} (members: {members})")
        return self.root / relative_path

    def _verified_bytes(self, relative_path: str) -> bytes:
        # Re-check at read time: the file may have changed since load_bundle ran.
        data = self._member_path(relative_path).read_bytes()
        if hashlib.sha256(data).hexdigest() != self.manifest.files[relative_path]:
            raise ModelBundleError(f"integrity check failed for {relative_path} in {self.root}")
        return data

    def names(self, kind: str) -> list[str]:
        """Names of the members of one kind: ``"estimators"``, ``"tensors"`` or ``"json"``."""
        prefix = f"{kind}/"
        return sorted(Path(rel).stem for rel in self.manifest.files if rel.startswith(prefix))

    def estimator(self, name: str) -> Any:
        """The fitted estimator ``name``, built by skops from allow-listed types only.

        Typed ``Any``: the store holds whatever was added; inference reads it
        through :class:`icibenefit.pipeline.predictor.Classifier` (a layer above).
        """
        relative_path = f"{ESTIMATOR_DIR}/{_check_member_name(name)}.skops"
        if relative_path not in self._cache:
            import skops.io as sio

            data = self._verified_bytes(relative_path)
            found = sio.get_untrusted_types(data=data)
            untrusted = _untrusted(found, self.extra_trusted)
            if untrusted:
                raise ModelBundleError(
                    f"{relative_path} contains types outside the allow-list: {', '.join(untrusted)}"
                )
            self._cache[relative_path] = sio.loads(data, trusted=found)
        return self._cache[relative_path]

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The torch state dict ``name`` (a fresh dict; tensors are on CPU)."""
        from safetensors.torch import load

        relative_path = f"{TENSOR_DIR}/{_check_member_name(name)}.safetensors"
        return dict(load(self._verified_bytes(relative_path)))

    def json(self, name: str) -> Any:
        """The JSON document ``name`` (parsed JSON, hence ``Any``)."""
        relative_path = f"{JSON_DIR}/{_check_member_name(name)}.json"
        return json.loads(self._verified_bytes(relative_path))


def verify_bundle(path: Path | str) -> BundleManifest:
    """Check the manifest and the sha256 of every listed file; return the manifest.

    Raises
    ------
    ModelBundleError
        Naming the first file that is missing or whose checksum differs.
    """
    root = Path(path)
    manifest = read_manifest(root)
    for relative_path, expected in sorted(manifest.files.items()):
        member = (root / relative_path).resolve()
        if root.resolve() not in member.parents:
            raise ModelBundleError(f"bundle member {relative_path} points outside the bundle")
        if not member.is_file():
            raise ModelBundleError(f"bundle file missing: {relative_path} in {root}")
        if sha256_file(member) != expected:
            raise ModelBundleError(f"integrity check failed for {relative_path} in {root}")
    return manifest


def load_bundle(path: Path | str, *, extra_trusted: Iterable[str] = ()) -> ModelBundle:
    """Verify every checksum of the bundle at ``path`` and return it ready to use.

    Parameters
    ----------
    path
        The bundle directory.
    extra_trusted
        Types to trust beyond the project allow-list (must match the writer's).

    Raises
    ------
    ModelBundleError
        When the bundle is missing, malformed or any file fails its checksum.
    """
    root = Path(path)
    return ModelBundle(root, verify_bundle(root), extra_trusted)
