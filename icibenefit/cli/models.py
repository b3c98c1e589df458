"""Commands of the model store: ``models list|show|add|promote|rollback``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icibenefit import audit
from icibenefit.cli.common import settings_from
from icibenefit.errors import ModelBundleError
from icibenefit.model_store.bundle import verify_bundle
from icibenefit.model_store.store import ModelStore

models_app = typer.Typer(help="Manage versioned model bundles.", no_args_is_help=True)

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store", help="Model store folder (default: settings model_store_dir / data_dir/models)."
    ),
]


def _store(ctx: typer.Context, store: Path | None) -> ModelStore:
    if store is not None:
        return ModelStore(store)
    return ModelStore(settings_from(ctx).resolved_model_store_dir)


@models_app.command("list")
def models_list(ctx: typer.Context, store: StoreOption = None) -> None:
    """List the bundles of the model store; the active one is marked with '*'."""
    from rich.console import Console
    from rich.table import Table

    model_store = _store(ctx, store)
    active = model_store.active_id()
    table = Table(
        "", "bundle", "created", "endpoints", "use", title=f"models in {model_store.root}"
    )
    for bundle_id, manifest in model_store.manifests().items():
        marker = "*" if bundle_id == active else ""
        if isinstance(manifest, ModelBundleError):
            table.add_row(marker, bundle_id, "", "", f"BROKEN: {manifest}")
            continue
        use = "demonstration" if manifest.intended_use.demonstration else "clinical"
        table.add_row(
            marker,
            bundle_id,
            manifest.created.isoformat(timespec="seconds"),
            ",".join(manifest.endpoints),
            use,
        )
    Console(width=200).print(table)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    bundle_id: Annotated[
        str | None, typer.Argument(help="Bundle id (default: the active one).")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Verify a bundle's checksums and print its manifest as JSON."""
    model_store = _store(ctx, store)
    path = model_store.active_path() if bundle_id is None else model_store.bundle_path(bundle_id)
    typer.echo(verify_bundle(path).model_dump_json(indent=2))


@models_app.command("add")
def models_add(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Argument(help="Bundle folder written by 'icibenefit train'.")],
    promote: Annotated[bool, typer.Option("--promote", help="Make it active too.")] = False,
    store: StoreOption = None,
) -> None:
    """Copy a verified bundle into the store."""
    with audit.configured(settings_from(ctx)):  # a promotion is audited
        bundle_id = _store(ctx, store).add(bundle, promote=promote)
    typer.echo(f"added {bundle_id}" + (" (active)" if promote else ""))


@models_app.command("promote")
def models_promote(
    ctx: typer.Context,
    bundle_id: Annotated[str, typer.Argument(help="Bundle id as shown by 'models list'.")],
    store: StoreOption = None,
) -> None:
    """Make a stored bundle the active one (after verifying its checksums)."""
    with audit.configured(settings_from(ctx)):
        _store(ctx, store).promote(bundle_id)
    typer.echo(f"active: {bundle_id}")


@models_app.command("rollback")
def models_rollback(ctx: typer.Context, store: StoreOption = None) -> None:
    """Re-activate the bundle that was active before the current one."""
    with audit.configured(settings_from(ctx)):
        typer.echo(f"active: {_store(ctx, store).rollback()}")
