import pytest
from typer.testing import CliRunner

from icibenefit import __version__
from icibenefit.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


@pytest.mark.parametrize(
    "command",
    ["serve", "demo", "synth", "studies", "jobs", "predict", "train", "evaluate", "models"],
)
def test_every_subcommand_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
