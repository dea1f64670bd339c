"""packaging/exchange-node.service checked by systemd's own tools: `systemd-analyze verify` (syntax,
directives, dependencies) and `systemd-analyze security` (the sandbox), where systemd is installed."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT

UNIT = ROOT / "packaging" / "exchange-node.service"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)")


def installed_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's exchange-node (verify insists the binary
    exists; /opt/exchange-node is where docs/operations.md installs it)."""
    text = UNIT.read_text() if text is None else text
    binary = Path(sys.executable).with_name("exchange-node")
    unit = tmp_path / "exchange-node.service"
    unit.write_text(text.replace("ExecStart=/opt/exchange-node/bin/exchange-node", f"ExecStart={binary}"))
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess:
    assert ANALYZE is not None          # the module is skipped without it
    return subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=unit.parent)


def test_the_unit_verifies_cleanly(tmp_path):
    result = verify(installed_copy(tmp_path))
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_would_catch_a_broken_unit(tmp_path):
    broken = UNIT.read_text().replace("Type=notify", "Type=notifyy")
    result = verify(installed_copy(tmp_path, broken))
    assert "notifyy" in result.stdout + result.stderr


def test_the_unit_uses_notify_readiness_and_its_sandbox_rates_ok(tmp_path):
    text = UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "RestartPreventExitStatus=2",
                 "Environment=DATA_DIR=/var/lib/exchange-node", "StateDirectory=exchange-node", "User=exchange-node"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert ANALYZE is not None          # the module is skipped without it
    result = subprocess.run([ANALYZE, "security", "--offline=yes", str(installed_copy(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    exposure = re.search(r"Overall exposure level for exchange-node.service: ([0-9.]+)", result.stdout)
    assert exposure is not None, result.stdout[-500:] + result.stderr
    assert float(exposure.group(1)) <= 4.0
