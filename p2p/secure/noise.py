"""Noise_XX_25519_ChaChaPoly_SHA256: the handshake state machine of the Noise Protocol Framework
(revision 34, sections 5 and 7), sans I/O, over `cryptography`'s X25519, ChaCha20-Poly1305 and
HKDF-SHA256.

    XX:
      -> e
      <- e, ee, s, es
      -> s, se

`HandshakeState.write_message` / `read_message` follow section 5.3 token by token; after the third
message both sides `split()` into a pair of `CipherState`s (initiator sends with the first). Any
failure raises `NoiseError` and leaves the handshake unusable (section 5: an error aborts it).
"""
from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
DHLEN = 32
HASHLEN = 32
TAGLEN = 16
MAX_MESSAGE = 65535
MAX_NONCE = (1 << 64) - 1  # reserved: reaching it ends the cipher (section 5.1)
XX = (("e",), ("e", "ee", "s", "es"), ("s", "se"))

nonce_bytes = struct.Struct("<4xQ").pack  # ChaChaPoly: 32 zero bits, then n as 64-bit little-endian


class NoiseError(Exception):
    """The handshake or a transport message failed; the session must be dropped."""


def _hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> list[bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=HASHLEN * outputs, salt=chaining_key,
               info=b"").derive(input_key_material)
    return [okm[i * HASHLEN:(i + 1) * HASHLEN] for i in range(outputs)]


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _dh(key: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # a low-order point gives an all-zero secret: refuse it
        raise NoiseError("invalid public key") from None


class CipherState:
    """A key and a nonce counter (section 5.1); without a key it passes plaintext through."""

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self.n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        ciphertext = self._aead.encrypt(nonce_bytes(self.n), plaintext, ad)
        self.n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        try:
            plaintext = self._aead.decrypt(nonce_bytes(self.n), ciphertext, ad)
        except InvalidTag:
            raise NoiseError("decryption failed") from None
        self.n += 1  # only after success: a failed message consumes no nonce
        return plaintext

    @property
    def aead(self) -> ChaCha20Poly1305:
        """The AEAD itself, for the transport hot path (which keeps its own counter)."""
        assert self._aead is not None
        return self._aead


class SymmetricState:
    """Chaining key, handshake hash and the current CipherState (section 5.2)."""

    __slots__ = ("ck", "h", "cipher")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = hashlib.sha256(protocol_name).digest()
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, input_key_material, 2)
        self.cipher = CipherState(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = _hkdf(self.ck, b"", 2)
        return CipherState(temp_k1), CipherState(temp_k2)


class HandshakeState:
    """One side of an XX handshake (section 5.3). `ephemeral` is for test vectors only: a real
    handshake generates a fresh ephemeral key for every connection."""

    def __init__(self, initiator: bool, static: X25519PrivateKey, prologue: bytes = b"", *,
                 ephemeral: X25519PrivateKey | None = None) -> None:
        self.initiator = initiator
        self.s = static
        self.e = ephemeral
        self.re: bytes | None = None
        self.rs: bytes | None = None
        self.symmetric = SymmetricState(PROTOCOL_NAME)
        self.symmetric.mix_hash(prologue)
        self._step = 0
        self._failed = False
        self.handshake_hash: bytes | None = None
        self.ciphers: tuple[CipherState, CipherState] | None = None  # (send, receive) once complete

    @property
    def complete(self) -> bool:
        return self.ciphers is not None

    def my_turn(self) -> bool:
        return (self._step % 2 == 0) == self.initiator

    def write_message(self, payload: bytes = b"") -> bytes:
        self._check(writing=True)
        sym = self.symmetric
        out = bytearray()
        try:
            for token in XX[self._step]:
                if token == "e":
                    if self.e is None:
                        self.e = X25519PrivateKey.generate()
                    e_pub = public_bytes(self.e)
                    out += e_pub
                    sym.mix_hash(e_pub)
                elif token == "s":
                    out += sym.encrypt_and_hash(public_bytes(self.s))
                else:
                    self._mix_dh(token)
            out += sym.encrypt_and_hash(payload)
        except BaseException:
            self._failed = True
            raise
        if len(out) > MAX_MESSAGE:
            self._failed = True
            raise NoiseError("handshake message too long")
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        self._check(writing=False)
        if len(message) > MAX_MESSAGE:
            self._failed = True
            raise NoiseError("handshake message too long")
        sym = self.symmetric
        view = memoryview(message)
        pos = 0
        try:
            for token in XX[self._step]:
                if token == "e":
                    if len(message) - pos < DHLEN:
                        raise NoiseError("handshake message truncated")
                    self.re = bytes(view[pos:pos + DHLEN])
                    pos += DHLEN
                    sym.mix_hash(self.re)
                elif token == "s":
                    size = DHLEN + (TAGLEN if sym.cipher.has_key() else 0)
                    if len(message) - pos < size:
                        raise NoiseError("handshake message truncated")
                    self.rs = sym.decrypt_and_hash(bytes(view[pos:pos + size]))
                    pos += size
                else:
                    self._mix_dh(token)
            if sym.cipher.has_key() and len(message) - pos < TAGLEN:
                raise NoiseError("handshake message truncated")
            payload = sym.decrypt_and_hash(bytes(view[pos:]))
        except BaseException:
            self._failed = True
            raise
        self._advance()
        return payload

    def _mix_dh(self, token: str) -> None:
        """ee, es, se: which key pairs meet depends on the role (section 5.3)."""
        assert self.e is not None
        if token == "ee":
            secret = _dh(self.e, self._need(self.re))
        elif token == "es":
            secret = _dh(self.e, self._need(self.rs)) if self.initiator else _dh(self.s, self._need(self.re))
        else:  # "se"
            secret = _dh(self.s, self._need(self.re)) if self.initiator else _dh(self.e, self._need(self.rs))
        self.symmetric.mix_key(secret)

    @staticmethod
    def _need(key: bytes | None) -> bytes:
        if key is None:
            raise NoiseError("handshake out of order")
        return key

    def _check(self, writing: bool) -> None:
        if self._failed:
            raise NoiseError("handshake has failed")
        if self.complete:
            raise NoiseError("handshake already complete")
        if self.my_turn() != writing:
            raise NoiseError("not this side's turn")

    def _advance(self) -> None:
        self._step += 1
        if self._step == len(XX):
            self.handshake_hash = self.symmetric.h
            first, second = self.symmetric.split()
            self.ciphers = (first, second) if self.initiator else (second, first)
