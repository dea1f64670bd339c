"""Ed25519 private keys kept as unencrypted PKCS#8 PEM files, mode 0600: the node key and account keys.

A key file is created atomically (temp file, fsync, hard link into place) so no reader ever sees a
partial key and two racing creators cannot both win, and is refused when group or others can read it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def load_key_file(path: Path, what: str, remedy: str, error: type[Exception]) -> Ed25519PrivateKey:
    """The key in `path`, or `error` with a message naming `what` (e.g. "node key"), the path and the fix;
    `remedy` says what to do with a file whose content is unusable."""
    try:
        mode = path.stat().st_mode
        if os.name == "posix" and mode & 0o077:
            raise error(f"{what} {path} is accessible by group/others (mode {stat.S_IMODE(mode):04o}); "
                        f"fix with: chmod 600 {path}")
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise error(f"{what} {path} is unusable: not an unencrypted PEM private key ({exc}); {remedy}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise error(f"{what} {path} is unusable: holds a {type(key).__name__}, not an Ed25519 key; {remedy}")
    return key


def create_key_file(path: Path) -> bool:
    """Write a new key to `path` (0600). False if `path` already exists (possibly created meanwhile)."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def raw_seed(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte seed libsodium signs with (exchange.crypto.SigningKey)."""
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
