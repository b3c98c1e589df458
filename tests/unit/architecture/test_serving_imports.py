"""The running service stands apart from training (issue 14).

Each check runs in a fresh interpreter: the test process itself has imported
training and the generator long before.
"""

import importlib
import json
import subprocess
import sys
from pathlib import Path


def _modules_loaded_by(imports: str, prefix: tuple[str, ...]) -> list[str]:
    code = (
        f"import json, sys, {imports}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefix!r}))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_the_service_and_the_reporting_processor_import_no_training_module() -> None:
    imports = "icibenefit.listener.service, icibenefit.reporting.processor"
    assert _modules_loaded_by(imports, ("icibenefit.training", "icibenefit.synth")) == []


def test_inference_imports_no_training_module() -> None:
    imports = "icibenefit.pipeline.inference, icibenefit.pipeline.unet, icibenefit.pipeline.deep"
    assert _modules_loaded_by(imports, ("icibenefit.training",)) == []


def test_the_generator_maps_into_the_package() -> None:
    module = importlib.import_module("icibenefit.synth")
    assert module.__file__ is not None
    assert Path(module.__file__).parent.name == "synth"
