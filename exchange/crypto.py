"""Ed25519 signing and verification for everything the chain orders (accounts, validators, nodes).

libsodium (through PyNaCl) verifies in about 60 us here against 117 us for OpenSSL through
`cryptography`; every validator verifies every account signature, so that halves the largest
per-order cost. Signatures are the same bytes either way (Ed25519 is deterministic), so keys
kept as PEM by `cryptography` sign interchangeably. All verification in the chain goes through
`verify`, so every node judges a signature with the same rules (libsodium's: canonical S,
no small-order keys).
"""
from __future__ import annotations

import hashlib

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError, CryptoError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32
NODE_ID_BYTES = 20


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True only for a valid Ed25519 signature of `data` by `public_key`; never raises."""
    if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(signature + data, public_key)
        return True
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False


class SigningKey:
    """An Ed25519 private key held as its 32-byte seed; signs with libsodium."""

    __slots__ = ("_secret", "public_key")

    def __init__(self, seed: bytes) -> None:
        if type(seed) is not bytes or len(seed) != SEED_BYTES:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self.public_key, self._secret = crypto_sign_seed_keypair(seed)

    def sign(self, data: bytes) -> bytes:
        return crypto_sign(data, self._secret)[:SIGNATURE_BYTES]

    def __repr__(self) -> str:
        return f"SigningKey(public_key={self.public_key.hex()})"


def node_id_for(public_key: bytes) -> str:
    """The node id a raw 32-byte public key stands for: hex of the first 20 bytes of its sha256."""
    return hashlib.sha256(public_key).digest()[:NODE_ID_BYTES].hex()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
