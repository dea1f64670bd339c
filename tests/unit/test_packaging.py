"""What the package ships and what packaging/ describes: the console's static files are package data,
the Dockerfile and the systemd unit say what the README promises."""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_console_file_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["node.console"]
    static = ROOT / "node" / "console" / "static"
    files = [p.relative_to(static.parent).as_posix() for p in static.rglob("*") if p.is_file()]
    assert {"static/index.html", "static/app.js", "static/stream.js", "static/charts.js", "static/console.css"} \
        <= set(files)
    assert all(any(fnmatch.fnmatch(f, pattern) and "/" not in f[len("static/"):] for pattern in patterns)
               for f in files), "a file in a subdirectory of static/ would not be installed"


ALERT_RULES = ROOT / "packaging" / "prometheus" / "alerts.rules.yml"


def test_alert_rules_name_only_metrics_the_node_exports():
    import re

    names = set(re.findall(r"\bexchange_node_\w+", ALERT_RULES.read_text()))
    assert "exchange_node_chain_halted_seconds" in names
    sources = "".join(p.read_text() for p in (ROOT / "node").rglob("*.py"))
    assert {name for name in names if f'"{name}"' not in sources} == set()


def test_alert_rules_pass_promtool():
    import shutil
    import subprocess

    import pytest

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install -y prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(ALERT_RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 3 rules found" in done.stdout
