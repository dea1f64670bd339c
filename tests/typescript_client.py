"""Running the TypeScript client library (clients/typescript) from the Python tests: built by `make test`
(npm install + tsc); tests that need it skip with the reason when Node.js or the build is missing."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "typescript"
E2E = PACKAGE / "test" / "e2e.mjs"
NODE = shutil.which("node")

needs_build = pytest.mark.skipif(NODE is None or not (PACKAGE / "dist" / "index.js").exists()
                                 or not (PACKAGE / "node_modules" / "ws").exists(),
                                 reason="needs Node.js and the built TypeScript client (make test-deps builds it)")


def run(*args: str, timeout: float = 60) -> Any:
    done = subprocess.run([NODE or "node", str(E2E), *args], cwd=PACKAGE, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([NODE or "node", str(E2E), *args], cwd=PACKAGE, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
