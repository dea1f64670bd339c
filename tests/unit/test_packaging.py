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



def test_the_image_copies_every_package_the_project_ships():
    """The Dockerfile copies the source tree package by package: one left out (storage, once) builds an image
    whose `--version` passes and whose node fails to start."""
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in shipped}
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    assert packages <= copied, f"the Dockerfile does not copy {sorted(packages - copied)}"
    # the rest are the developer's: tests, benchmarks, client examples, the docs' generators
    on_disk = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench", "clients", "scripts"}
    assert on_disk <= packages, f"packages pyproject.toml does not ship: {sorted(on_disk - packages)}"
