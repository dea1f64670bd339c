"""What binds a browser's session to the node key.

A page dials with one certificate hash at a time, so when the session opens it knows which certificate the
endpoint served. It sends a fresh nonce; the node signs, with its Ed25519 node key, the domain, the SHA-256 of
the certificate it served on that connection and the nonce. The page checks that the key hashes to the node id
it expected and that the signed hash is the one it dialled with: a man in the middle serving a certificate of
its own either relays the node's proof (signed over the node's certificate, not the one the page met) or signs
with a key that is not the node's; both are refused.
"""
from __future__ import annotations

DOMAIN = b"exchange-node/browser-session/1\n"
NONCE_BYTES = 32
HASH_BYTES = 32


def proof_message(cert_sha256: bytes, nonce: bytes) -> bytes:
    """The bytes the node signs for one session (the page builds the same ones)."""
    if len(cert_sha256) != HASH_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("a proof covers a 32-byte certificate hash and a 32-byte nonce")
    return DOMAIN + cert_sha256 + nonce
