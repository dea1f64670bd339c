"""NodeIdentity: the node's Ed25519 key, kept in DATA_DIR/node_key, and the node id derived from it.

The key file is an unencrypted PKCS#8 PEM (`openssl pkey -in node_key -noout -text` shows it), mode 0600,
created once. The node id is the hex of the first 20 bytes of sha256(raw 32-byte public key): 40 hex chars.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.crypto import verify as crypto_verify
from node.keyfile import create_key_file, load_key_file

KEY_FILE_NAME = "node_key"
NODE_ID_BYTES = 20
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class IdentityError(Exception):
    """The key file cannot be used; the message names the path and the fix."""


class NodeIdentity:
    """A private key plus the public values peers see. Signing reuses one key object."""

    __slots__ = ("_private_key", "public_key_bytes", "node_id", "path")

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._private_key = private_key
        self.public_key_bytes: bytes = private_key.public_key().public_bytes(*_RAW)
        self.node_id: str = self.node_id_for(self.public_key_bytes)
        self.path = path

    def __repr__(self) -> str:
        return f"NodeIdentity(node_id={self.node_id!r}, path={self.path!r})"

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A fresh identity held only in memory (tests, throwaway nodes)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NodeIdentity:
        """Load `data_dir/node_key`, creating the directory (0700) and the key (0600) the first time."""
        data_dir = Path(data_dir)
        path = data_dir / KEY_FILE_NAME
        if not path.exists():
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            create_key_file(path)  # if another process won the race, its key is the one loaded below
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> NodeIdentity:
        """Load an existing key file; raises IdentityError on a loose mode or bad content."""
        path = Path(path)
        return cls(load_key_file(path, "node key", _REMEDY, IdentityError), path)

    def sign(self, data: bytes) -> bytes:
        """64-byte Ed25519 signature of `data`."""
        return self._private_key.sign(data)

    @staticmethod
    def verify(public_key_bytes: bytes | bytearray | memoryview, signature: bytes | bytearray | memoryview,
               data: bytes | bytearray | memoryview) -> bool:
        """True only if `signature` is a valid signature of `data` by that key; never raises (libsodium, as
        every signature in the chain: exchange/crypto.py)."""
        try:
            return crypto_verify(bytes(public_key_bytes), bytes(signature), bytes(data))
        except (ValueError, TypeError):
            return False

    @staticmethod
    def node_id_for(public_key_bytes: bytes) -> str:
        """The node id a raw 32-byte public key stands for."""
        return hashlib.sha256(public_key_bytes).digest()[:NODE_ID_BYTES].hex()


_REMEDY = "restore it from a backup, or delete it to generate a new identity (the node id will change)"
