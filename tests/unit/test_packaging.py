"""What the package ships and what packaging/ describes: the console's static files are package data,
the Dockerfile and the systemd unit say what docs/operations.md promises."""
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

