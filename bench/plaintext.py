"""The plaintext link of protocol 1, for benchmarks that compare against "today's" link in the same
run: its p2p/, config/ and node/identity.py checked out of git at PLAINTEXT_COMMIT into a temporary
directory, imported by child processes in place of this tree."""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PLAINTEXT_COMMIT = "9c1dd151c8a87d399209f584c6d7699704861f02"  # the last commit of the plaintext protocol 1
ROOT = Path(__file__).resolve().parent.parent


def plaintext_tree() -> str | None:
    """A directory holding p2p/, config/ and node/identity.py as of PLAINTEXT_COMMIT (None without git)."""
    try:
        archive = subprocess.run(["git", "archive", PLAINTEXT_COMMIT, "p2p", "config", "node/__init__.py",
                                  "node/identity.py"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    target = tempfile.mkdtemp(prefix="plaintext-link-")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def use_code(code_dir: str | None) -> None:
    """In a child process: import p2p, config and node from `code_dir` instead of this tree."""
    if not code_dir:
        return
    for name in list(sys.modules):
        if name.split(".")[0] in ("p2p", "config", "node"):
            del sys.modules[name]
    sys.path.insert(0, code_dir)
