"""The control API's cookie file, DATA_DIR/.cookie, as bitcoind keeps one: a fresh random bearer token
written at every start (mode 0600) and removed at stop, so whoever can read DATA_DIR can use the API
and nobody has to configure a password.

Kept apart from node/api/auth.py so the CLI can read the cookie without importing aiohttp.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

COOKIE_FILE_NAME = ".cookie"
COOKIE_BYTES = 32


def cookie_path(data_dir: Path) -> Path:
    return Path(data_dir) / COOKIE_FILE_NAME


def write_cookie(data_dir: Path) -> str:
    """Create a new cookie (readable by the owner only) and return it; replaces one a crashed run left."""
    token = secrets.token_hex(COOKIE_BYTES)
    path = cookie_path(data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover temp file
        os.write(fd, token.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


def read_cookie(data_dir: Path) -> str | None:
    """The cookie of the node using `data_dir`, or None when there is none (or it cannot be read)."""
    try:
        token = cookie_path(data_dir).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def remove_cookie(data_dir: Path, token: str) -> None:
    """Delete the cookie at stop, unless another process has replaced it since (then it is not ours)."""
    if read_cookie(data_dir) == token:
        cookie_path(data_dir).unlink(missing_ok=True)
