"""A throwaway PostgreSQL server for tests, from Debian's `postgresql` package: initdb into a temporary directory as
the `postgres` user (the server refuses to run as root), listening only on a Unix socket there, trust auth."""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True) if (p / "initdb").exists()),
           None) if Path("/usr/lib/postgresql").exists() else None

needs_postgres = pytest.mark.skipif(BIN is None or shutil.which("runuser") is None
                                    or importlib.util.find_spec("psycopg") is None,
                                    reason="needs Debian's postgresql package (apt-get install -y postgresql) and "
                                           "psycopg (make test-deps)")


def _as_postgres(*args: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server in a new temporary directory (one the `postgres` user can reach, unlike pytest's) and yield
    its URL (`postgresql://postgres@/postgres?host=SOCKET_DIR`); stopped and removed after."""
    assert BIN is not None
    root = Path(tempfile.mkdtemp(prefix="exchange-node-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    user = pwd.getpwnam("postgres")
    for path in (root, sockets):
        os.chown(path, user.pw_uid, user.pw_gid)
    try:
        _as_postgres(str(BIN / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync")
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "server.log"), "-o",
                     f"-k {sockets} -c listen_addresses='' -c fsync=off", "start")
        try:
            yield f"postgresql://postgres@/postgres?host={sockets}"
        finally:
            _as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-w", "-m", "immediate", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
