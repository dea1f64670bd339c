"""The installed package's version: the one place the rest of the code reads it from.

pyproject.toml is the only place the number is written; `importlib.metadata` reads what pip
installed, so the CLI, `/status`, the handshake and the metrics can never disagree.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _distribution_version

DISTRIBUTION = "exchange-node"


def _read() -> str:
    try:
        return _distribution_version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


VERSION: str = _read()
