"""One version source: what pip installed (pyproject.toml), read through importlib.metadata."""
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from click.testing import CliRunner

from config.version import VERSION

ROOT = Path(__file__).resolve().parents[3]


def test_version_is_the_installed_distribution_and_pyproject():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert VERSION == version("exchange-node") == declared


def test_cli_version_reads_the_same_source():
    from node.cli.main import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"exchange-node, version {VERSION}"


def test_no_other_module_writes_the_version_number():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    number = re.compile(rf"(?<![\d.]){re.escape(declared)}(?![\d.])")
    offenders = [str(path.relative_to(ROOT)) for folder in ("config", "node", "exchange", "p2p", "storage", "bench")
                 for path in (ROOT / folder).rglob("*.py") if number.search(path.read_text())]
    assert offenders == []


def test_the_handshake_says_the_installed_version():
    from config import load_settings
    from node.configs import peer_config

    assert peer_config(load_settings(env={}, cli={})).software == f"exchange-node/{VERSION}"
