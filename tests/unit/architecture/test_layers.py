"""The layering of issue 14, checked from outside the code it constrains.

``make lint`` runs import-linter with the contracts in ``pyproject.toml``.
These tests show the contracts hold on the package as installed, that they
would fail if a layer were crossed (a contract that cannot fail proves
nothing).  ``test_serving_imports.py`` checks what the service
loads at run time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FOLDERS = {
    "listener": "listener",
    "pipeline": "pipeline",
    "fhir": "fhir",
    "reporting": "reporting",
    "model_store": "model_store",
    "training": "training",
    "synth": "synth",
}


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with the project's contracts on a package ``tree``.

    import-linter walks the package's folder, so it needs the source laid out as
    installed (see :func:`_package_tree`), as ``make lint`` does for mypy.
    """
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command;"
            " sys.exit(lint_imports_command())",
            "--config",
            str(ROOT / "pyproject.toml"),
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        timeout=300,
    )


def _package_tree(target: Path) -> Path:
    """A copy of the source laid out as the installed package (folders mapped into icibenefit)."""
    package = target / "icibenefit"
    package.mkdir(parents=True)
    for item in (ROOT / "icibenefit").iterdir():
        (package / item.name).symlink_to(item)
    for name, folder in FOLDERS.items():
        (package / name).symlink_to(ROOT / folder)
    return target


def test_contracts_hold(tmp_path: Path) -> None:
    result = _lint_imports(_package_tree(tmp_path / "src"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_crossed_layer_breaks_a_contract(tmp_path: Path) -> None:
    tree = _package_tree(tmp_path / "src")
    pipeline = tree / "icibenefit" / "pipeline"
    pipeline.unlink()
    pipeline.mkdir()
    for item in (ROOT / "pipeline").iterdir():
        (pipeline / item.name).symlink_to(item)
    leak = pipeline / "leak.py"
    leak.write_text("import icibenefit.training.trainer\n", encoding="utf-8")
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert "icibenefit.pipeline.leak -> icibenefit.training.trainer" in result.stdout
