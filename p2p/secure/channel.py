"""The encrypted channel under every peer link: Noise XX as libp2p runs it.

- Handshake messages and transport messages travel as a 2-byte big-endian length, then that many
  bytes (at most 65535), as in the libp2p noise spec.
- Each node has one X25519 static key per process. Its Noise handshake payload (sent encrypted in
  messages 2 and 3) is a msgpack map `{"pk": Ed25519 public key, "sig": signature of
  IDENTITY_DOMAIN + the X25519 static public key}`, so the static key the peer proved it holds
  in the handshake is bound to the node id (sha256 of `pk`). Nothing else proves identity: no
  claimed id is trusted before this check.
- After the handshake, `SecureTransport.seal` turns any amount of plaintext (the link's joined
  frames of one event-loop pass) into as few AEAD messages as fit (65519 plaintext bytes each), and
  `open` turns received bytes back into plaintext, one AEAD message at a time. A message that fails
  authentication (tampered, replayed, reordered, injected: each breaks the nonce sequence or the
  tag) raises `ChannelError(CloseReason.DECRYPT_FAILED)`.
- Before the handshake a responder that will not take the connection (full, or too many from one
  address) writes `REFUSAL` + reason and closes. It is unauthenticated, so the dialler only uses
  it to explain the close and back off, never to forget the address.
"""
from __future__ import annotations

import struct
from typing import Callable, cast

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from p2p.close_reason import CloseReason, LinkReason, remote_reason
from p2p.secure.noise import MAX_MESSAGE, MAX_NONCE, TAGLEN, HandshakeState, NoiseError, nonce_bytes, public_bytes

IDENTITY_DOMAIN = b"exchange-node-noise-static-key:"
PROLOGUE = b"exchange-node/noise/1"
MAX_PLAINTEXT = MAX_MESSAGE - TAGLEN
LENGTH = struct.Struct(">H")
_pack_length = LENGTH.pack
_unpack_length = LENGTH.unpack_from
REFUSAL = b"\x00\x00\xff"  # a zero-length handshake message never occurs in XX
MSG1_LEN = 32  # `-> e` with an empty payload
REFUSAL_REASONS = frozenset({CloseReason.TOO_MANY_PEERS, CloseReason.TOO_MANY_FROM_IP, CloseReason.TOO_MANY_FROM_SUBNET,
                             CloseReason.TOO_MANY_HANDSHAKES})

Verify = Callable[[bytes, bytes, bytes], bool]
NodeIdFor = Callable[[bytes], str]


class ChannelError(Exception):
    """The channel cannot go on; `reason` is the link's close reason."""

    def __init__(self, reason: LinkReason, detail: str = "", *, reply: bytes = b"") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.reply = reply  # plaintext bytes worth writing before closing (a refusal, a v1 goodbye)


class StaticIdentity:
    """This process's Noise static key and the signed payload that binds it to the node's Ed25519 key."""

    __slots__ = ("key", "public", "payload")

    def __init__(self, sign: Callable[[bytes], bytes], ed25519_public: bytes,
                 key: X25519PrivateKey | None = None) -> None:
        self.key = key or X25519PrivateKey.generate()
        self.public = public_bytes(self.key)
        self.payload = msgpack.packb({"pk": ed25519_public, "sig": sign(IDENTITY_DOMAIN + self.public)},
                                     use_bin_type=True)


def verify_identity(payload: bytes, remote_static: bytes, verify: Verify, node_id_for: NodeIdFor) -> tuple[bytes, str]:
    """(Ed25519 public key, node id) proven by a handshake payload, or ChannelError(CloseReason.BAD_IDENTITY)."""
    try:
        fields = msgpack.unpackb(payload, raw=False, max_str_len=64, max_bin_len=64, max_array_len=4,
                                 max_map_len=8, max_ext_len=0)
    except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
        raise ChannelError(CloseReason.BAD_IDENTITY, "undecodable handshake payload") from None
    if type(fields) is not dict:
        raise ChannelError(CloseReason.BAD_IDENTITY, "handshake payload is not a map")
    pk, sig = fields.get("pk"), fields.get("sig")
    if type(pk) is not bytes or len(pk) != 32 or type(sig) is not bytes or len(sig) != 64:
        raise ChannelError(CloseReason.BAD_IDENTITY, "handshake payload needs pk (32 bytes) and sig (64 bytes)")
    if not verify(pk, sig, IDENTITY_DOMAIN + remote_static):
        raise ChannelError(CloseReason.BAD_IDENTITY, "static key not signed by the claimed identity key")
    return pk, node_id_for(pk)


def refusal(reason: CloseReason) -> bytes:
    """What a responder writes, instead of a handshake, when it refuses a connection at accept."""
    text = reason.encode("ascii", "replace")[:64]
    return REFUSAL + bytes((len(text),)) + text


def _v1_goodbye(reason: str, detail: str) -> bytes:
    """A frame of the plaintext protocol 1, so a node not yet upgraded logs why it was refused."""
    body = msgpack.packb({"type": "goodbye", "reason": reason, "detail": detail}, use_bin_type=True)
    return cast("bytes", struct.pack(">I", len(body)) + body)


class SecureHandshake:
    """Runs one side of the handshake over a byte stream: `start()` and `feed(data)` return the
    bytes to write; once `done`, `transport()`, `remote_public_key`, `remote_id` and `handshake_hash`
    are set and `leftover` holds bytes that already belong to the transport phase."""

    def __init__(self, initiator: bool, identity: StaticIdentity, verify: Verify, node_id_for: NodeIdFor) -> None:
        self.initiator = initiator
        self.identity = identity
        self._verify = verify
        self._node_id_for = node_id_for
        self._state = HandshakeState(initiator, identity.key, PROLOGUE)
        self._buffer = bytearray()
        self.done = False
        self.leftover = b""
        self.remote_public_key: bytes | None = None
        self.remote_id: str | None = None
        self.handshake_hash: bytes | None = None

    def start(self) -> bytes:
        return self._frame(self._state.write_message(b"")) if self.initiator else b""

    def feed(self, data: bytes) -> bytes:
        """Consume received bytes; returns what to write back (maybe nothing). Raises ChannelError."""
        if self.done:
            raise ChannelError(CloseReason.NOISE_HANDSHAKE_FAILED, "handshake already complete")
        self._buffer += data
        out = b""
        while not self.done and len(self._buffer) >= 2:
            length = _unpack_length(self._buffer, 0)[0]
            if length == 0:
                self._zero_length()
                break  # a refusal still arriving
            if len(self._buffer) < 2 + length:
                break
            message = bytes(self._buffer[2:2 + length])
            del self._buffer[:2 + length]
            out += self._step(message)
        if self.done:
            # `_step` sets `done`: mypy keeps the loop's narrowing
            self.leftover = bytes(self._buffer)  # type: ignore[unreachable]
            self._buffer.clear()
        return out

    def _zero_length(self) -> None:
        """A zero-length message: a refusal (dialler side), or a protocol-1 node's 4-byte frame length."""
        buffer = self._buffer
        if self.initiator and len(buffer) < len(REFUSAL):
            return
        if self.initiator and buffer[:3] == REFUSAL:
            if len(buffer) < 4 or len(buffer) < 4 + buffer[3]:
                return  # the rest of the refusal is on its way
            said = bytes(buffer[4:4 + buffer[3]]).decode("ascii", "replace")
            reason = said if said in REFUSAL_REASONS else "refused"  # unauthenticated: never a permanent one
            raise ChannelError(remote_reason(reason), "refused before the encrypted handshake (unauthenticated)")
        reply = b"" if self.initiator else _v1_goodbye(CloseReason.INCOMPATIBLE_VERSION, "this node speaks protocol 2 "
                                                                                 "(Noise-encrypted links)")
        raise ChannelError(CloseReason.INCOMPATIBLE_VERSION, "peer speaks the plaintext protocol 1", reply=reply)

    def _step(self, message: bytes) -> bytes:
        state = self._state
        try:
            if not self.initiator and state.re is None and len(message) != MSG1_LEN:
                raise ChannelError(CloseReason.NOISE_HANDSHAKE_FAILED, f"first message of {len(message)} bytes, expected 32")
            payload = state.read_message(message)
            if state.rs is not None and self.remote_public_key is None:
                self.remote_public_key, self.remote_id = verify_identity(payload, state.rs, self._verify,
                                                                         self._node_id_for)
            reply = b""
            if not state.complete and state.my_turn():
                reply = self._frame(state.write_message(self.identity.payload))
        except NoiseError as exc:
            raise ChannelError(CloseReason.NOISE_HANDSHAKE_FAILED, str(exc)) from None
        if state.complete:
            self.done = True
            self.handshake_hash = state.handshake_hash
        return reply

    def transport(self) -> "SecureTransport":
        ciphers = self._state.ciphers
        if ciphers is None:
            raise ChannelError(CloseReason.NOISE_HANDSHAKE_FAILED, "handshake not complete")
        return SecureTransport(ciphers[0].aead, ciphers[1].aead)

    @staticmethod
    def _frame(message: bytes) -> bytes:
        return _pack_length(len(message)) + message


class SecureTransport:
    """The two transport ciphers of a finished handshake and the length-prefixed message stream."""

    __slots__ = ("_encrypt", "_decrypt", "_tx", "_rx", "_buffer")

    def __init__(self, send: ChaCha20Poly1305, receive: ChaCha20Poly1305) -> None:
        self._encrypt = send.encrypt
        self._decrypt = receive.decrypt
        self._tx = 0
        self._rx = 0
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def seal(self, data: bytes) -> bytes:
        """Encrypt `data` as one AEAD message per MAX_PLAINTEXT bytes, each with its length prefix."""
        n = self._tx
        size = len(data)
        if size <= MAX_PLAINTEXT:
            if n >= MAX_NONCE - 1:
                raise ChannelError(CloseReason.NONCE_EXHAUSTED)
            sealed = self._encrypt(nonce_bytes(n), data, None)
            self._tx = n + 1
            return _pack_length(len(sealed)) + sealed
        count = -(-size // MAX_PLAINTEXT)
        if n + count >= MAX_NONCE - 1:
            raise ChannelError(CloseReason.NONCE_EXHAUSTED)
        parts = []
        encrypt = self._encrypt
        with memoryview(data) as view:
            for start in range(0, size, MAX_PLAINTEXT):
                sealed = encrypt(nonce_bytes(n), view[start:start + MAX_PLAINTEXT], None)
                n += 1
                parts.append(_pack_length(len(sealed)))
                parts.append(sealed)
        self._tx = n
        return b"".join(parts)

    def open(self, data: bytes | bytearray) -> bytes:
        """Plaintext of every complete AEAD message received so far (b"" if none is complete yet)."""
        buffer = self._buffer
        if buffer:
            buffer += data
            source: bytes | bytearray = buffer
        else:
            source = data
        plain: list[bytes] = []
        pos = 0
        end = len(source)
        n = self._rx
        decrypt = self._decrypt
        try:
            with memoryview(source) as view:
                while end - pos >= 2:
                    length = _unpack_length(view, pos)[0]
                    stop = pos + 2 + length
                    if stop > end:
                        break
                    if length < TAGLEN or n >= MAX_NONCE - 1:
                        raise ChannelError(CloseReason.DECRYPT_FAILED, f"message of {length} bytes at #{n}")
                    try:
                        plain.append(decrypt(nonce_bytes(n), view[pos + 2:stop], None))
                    except InvalidTag:
                        raise ChannelError(CloseReason.DECRYPT_FAILED, f"message #{n} does not authenticate "
                                                             "(tampered, replayed, reordered or injected)") from None
                    n += 1
                    pos = stop
        finally:
            self._rx = n
            if source is buffer:
                if pos:
                    del buffer[:pos]
            elif pos < end:
                buffer += source[pos:]
        if len(plain) == 1:
            return plain[0]
        return b"".join(plain)
