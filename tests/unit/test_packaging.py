import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_fhir_resources_importable_from_repo_root(tmp_path: Path) -> None:
    """The root folder ``fhir/`` must not hide the fhir.resources library.

    In the development install the check runs from the repository root, where the
    clash happens.  When the tests run against an installed wheel (``make
    wheel-check``) the root would shadow the wheel itself, so it runs elsewhere.
    """
    import icibenefit

    from_repo = Path(icibenefit.__file__).resolve().parent == REPO_ROOT / "icibenefit"
    result = subprocess.run(
        [sys.executable, "-c", "import fhir.resources.patient, icibenefit.fhir; print('ok')"],
        cwd=REPO_ROOT if from_repo else tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_code_folder_maps_into_the_package() -> None:
    import importlib

    for name in ("listener", "pipeline", "fhir", "reporting", "model_store", "training"):
        module = importlib.import_module(f"icibenefit.{name}")
        assert module.__file__ is not None
        assert Path(module.__file__).parent.name == name
