"""One peer link: handshake, heartbeat RTT, batched writes with a hard buffer bound, close reasons.

A `PeerLink` is an asyncio Protocol (10-30% faster than streams here). Frames queued in one
event-loop pass are joined into a single `write()` (one syscall instead of one per frame).
Everything the link cannot decide alone (admission, duplicates, what to do with messages) is
asked of its `LinkHost`, which the PeerManager implements.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from p2p import messages as m
from p2p.framing import HEADER, FrameDecoder, FrameError, encode_body, encode_frame

frame_header = HEADER.pack
log = logging.getLogger("p2p.link")

_SCHEMAS = m._SCHEMAS
_LINK_TYPES = frozenset({"heartbeat", "goodbye", "handshake", "handshake_ack"})

HANDSHAKING = "handshaking"
OPEN = "open"
CLOSED = "closed"


class LinkHost(Protocol):
    """What a link needs from the node that owns it."""

    node_id: str
    network_id: str
    max_frame_bytes: int
    send_buffer_bytes: int
    handshake_timeout: float

    def local_hello(self, link: "PeerLink") -> dict: ...
    def sign(self, data: bytes) -> bytes: ...
    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool: ...
    def node_id_for(self, public_key: bytes) -> str: ...
    def admit(self, link: "PeerLink", hello: dict) -> str | None: ...
    def claim(self, link: "PeerLink") -> str | None: ...
    def on_open(self, link: "PeerLink") -> None: ...
    def on_message(self, link: "PeerLink", message: dict) -> None: ...
    def on_heartbeat(self, link: "PeerLink", message: dict) -> None: ...
    def on_unknown(self, link: "PeerLink", message: dict) -> None: ...
    def on_closed(self, link: "PeerLink", reason: str, was_open: bool) -> None: ...


class PeerLink(asyncio.Protocol):
    __slots__ = (
        "host", "direction", "source", "state", "transport", "decoder", "local_nonce", "remote_id",
        "remote_hello", "remote_addr", "close_reason", "close_detail", "ready", "_pending", "_pending_bytes",
        "_flush_handle", "_paused", "_resumed", "_timeout_handle", "_ack_verified",
        "opened_at", "last_recv", "rtt", "msgs_in", "msgs_out", "bytes_in", "bytes_out",
        "peer_ts", "peer_ts_at", "remote_links", "_loop", "dial_address", "dial_seq", "lost", "_bound", "_max_frame",
    )

    def __init__(self, host: LinkHost, direction: str, source: str = "inbound",
                 dial_address: tuple[str, int] | None = None) -> None:
        self.host = host
        self.direction = direction  # "outbound" (we dialled) or "inbound"
        self.source = source
        self.dial_address = dial_address
        self.state = HANDSHAKING
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(host.max_frame_bytes)
        self._max_frame = host.max_frame_bytes
        self.local_nonce = m.new_nonce()
        self.remote_id: str | None = None
        self.remote_hello: dict | None = None
        self.remote_addr: tuple[str, int] | None = None
        self.close_reason: str | None = None
        self.close_detail = ""
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[PeerLink] = self._loop.create_future()
        self.lost: asyncio.Future[None] = self._loop.create_future()  # the socket is gone
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._bound = host.send_buffer_bytes
        self._flush_handle: asyncio.Handle | None = None
        self._paused = False
        self._resumed: asyncio.Event | None = None
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._ack_verified = False
        self.opened_at: float | None = None
        self.last_recv = time.monotonic()
        self.rtt: float | None = None
        self.msgs_in = self.msgs_out = self.bytes_in = self.bytes_out = 0
        self.peer_ts: float | None = None
        self.peer_ts_at = 0.0
        self.remote_links: frozenset[str] = frozenset()
        self.dial_seq = 0  # the dialler's count of dials; set by the dialler's hello

    # --- identity helpers -------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def dialer_nonce(self) -> bytes:
        if self.direction == "outbound":
            return self.local_nonce
        return self.remote_hello["nonce"] if self.remote_hello else b""

    @property
    def dialer_seq(self) -> int:
        if self.direction == "outbound":
            return self.dial_seq
        seq = self.remote_hello.get("dial_seq", 0) if self.remote_hello else 0
        return seq if isinstance(seq, int) else 0

    @property
    def dialer_id(self) -> str | None:
        return self.host.node_id if self.direction == "outbound" else self.remote_id

    def __repr__(self) -> str:
        peer = self.remote_id[:8] if self.remote_id else "?"
        return f"<PeerLink {self.direction} {peer} {self.remote_addr} {self.state}>"

    # --- asyncio Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        peername = transport.get_extra_info("peername")
        if peername:
            self.remote_addr = (peername[0], peername[1])
        transport.set_write_buffer_limits(high=max(64 * 1024, self.host.send_buffer_bytes // 4))
        self._timeout_handle = self._loop.call_later(self.host.handshake_timeout, self._handshake_expired)
        self.send(self.host.local_hello(self))

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.last_recv = time.monotonic()
        try:
            messages = self.decoder.feed(data)
        except FrameError as exc:
            self.close(exc.reason, str(exc))
            return
        if self.state == OPEN:
            self._dispatch_open(messages)
            return
        for message in messages:
            if self.state == CLOSED:
                return
            self.msgs_in += 1
            try:
                self._dispatch(message)
            except m.ProtocolError as exc:
                self.close(exc.reason, exc.detail)
                return

    def _dispatch_open(self, messages: list[dict]) -> None:
        """Hot path for an open link: application messages go straight to their compiled schema
        check and the host; link-level types take the general path."""
        schemas = _SCHEMAS
        deliver = self.host.on_message
        for message in messages:
            if self.state != OPEN:
                return
            self.msgs_in += 1
            kind = message["type"]
            check = schemas.get(kind)
            if check is None or kind in _LINK_TYPES:
                try:
                    self._dispatch(message)
                except m.ProtocolError as exc:
                    self.close(exc.reason, exc.detail)
                    return
                continue
            bad = check(message)
            if bad is not None:
                self.close("malformed_message", f"{kind}.{bad}")
                return
            deliver(self, message)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._finish(self.close_reason or ("connection_reset" if exc else "connection_closed"), str(exc or ""))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._resumed is not None:
            self._resumed.set()

    # --- receiving --------------------------------------------------------------------------
    def _dispatch(self, message: dict) -> None:
        kind = message["type"]
        if self.state == OPEN:
            if kind == "heartbeat":
                m.validate(message)
                self._on_heartbeat(message)
            elif kind == "goodbye":
                self._on_goodbye(message)
            elif kind in ("handshake", "handshake_ack"):
                raise m.ProtocolError("unexpected_handshake", kind)
            elif m.validate(message):
                self.host.on_message(self, message)
            else:
                self.host.on_unknown(self, message)
            return
        if kind == "handshake":
            self._on_hello(message)
        elif kind == "handshake_ack":
            self._on_ack(message)
        elif kind == "goodbye":
            self._on_goodbye(message)
        else:
            raise m.ProtocolError("handshake_required", kind)

    def _on_hello(self, hello: dict) -> None:
        if self.remote_hello is not None:
            raise m.ProtocolError("duplicate_handshake")
        m.validate(hello)
        host = self.host
        if hello["protocol"] < m.MIN_PROTOCOL_VERSION:
            return self.close("incompatible_version", f"peer speaks {hello['protocol']}, need >= {m.MIN_PROTOCOL_VERSION}")
        if hello["network"] != host.network_id:
            return self.close("network_mismatch", f"peer network {hello['network']!r}, ours {host.network_id!r}")
        if hello["node_id"] == host.node_id:
            return self.close("self_connection")
        if host.node_id_for(hello["public_key"]) != hello["node_id"]:
            return self.close("identity_mismatch", "node id does not derive from the public key")
        self.remote_hello = hello
        self.remote_id = hello["node_id"]
        refusal = host.admit(self, hello)
        if refusal:
            return self.close(refusal)
        proof = m.handshake_proof(hello["nonce"], host.node_id, hello["node_id"], host.network_id)
        self.send({"type": "handshake_ack", "node_id": host.node_id, "signature": host.sign(proof)})

    def _on_ack(self, ack: dict) -> None:
        m.validate(ack)
        hello = self.remote_hello
        if hello is None or ack["node_id"] != hello["node_id"]:
            raise m.ProtocolError("handshake_required", "ack before handshake")
        proof = m.handshake_proof(self.local_nonce, hello["node_id"], self.host.node_id, self.host.network_id)
        if not self.host.verify(hello["public_key"], ack["signature"], proof):
            return self.close("bad_signature", "handshake proof does not verify")
        self._ack_verified = True
        refusal = self.host.claim(self)  # only a proven identity may displace another link
        if refusal:
            return self.close(refusal)
        self.state = OPEN
        self.opened_at = time.monotonic()
        if self._timeout_handle:
            self._timeout_handle.cancel()
        self.host.on_open(self)
        if not self.ready.done():
            self.ready.set_result(self)

    def _on_goodbye(self, message: dict) -> None:
        reason = message.get("reason")
        reason = reason if isinstance(reason, str) else "unknown"
        detail = message.get("detail") if isinstance(message.get("detail"), str) else ""
        self.close("remote_" + reason[:48], detail, send_goodbye=False)

    def _on_heartbeat(self, message: dict) -> None:
        self.peer_ts = message["ts"]
        self.peer_ts_at = time.time()
        echo = message.get("echo")
        if echo is not None:
            hold = message.get("hold") or 0.0
            sample = time.time() - echo - hold
            if 0 <= sample < 60:
                self.rtt = sample if self.rtt is None else 0.8 * self.rtt + 0.2 * sample
        links = message.get("links")
        if links is not None:
            self.remote_links = frozenset(links)
        self.host.on_heartbeat(self, message)

    # --- sending ----------------------------------------------------------------------------
    def heartbeat(self, extra: dict[str, Any] | None = None) -> bool:
        """Send a heartbeat that echoes the peer's last timestamp, so both sides measure RTT."""
        now = time.time()
        message: dict[str, Any] = {"type": "heartbeat", "ts": now}
        if self.peer_ts is not None:
            message["echo"] = self.peer_ts
            message["hold"] = now - self.peer_ts_at
        if extra:
            message.update(extra)
        return self.send(message)

    def send(self, message: dict) -> bool:
        """Encode and queue one message (encode_frame inlined: every RPC goes through here)."""
        body = encode_body(message)
        if len(body) > self._max_frame:
            log.warning("refusing to send oversized %s frame to %r", message.get("type"), self)
            return False
        return self.send_frame(frame_header(len(body)) + body)

    def send_frame(self, frame: bytes) -> bool:
        """Queue an encoded frame; joined with others into one write at the end of this loop pass."""
        if self.state == CLOSED or self.transport is None:
            return False
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self.msgs_out += 1
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)
        if self._pending_bytes > self._bound:
            return self._overflow()
        return True

    def _overflow(self) -> bool:
        self.close("send_buffer_overflow", "peer is not reading fast enough", send_goodbye=False)
        return False

    def _flush(self) -> None:
        self._flush_handle = None
        pending = self._pending
        if not pending or self.transport is None or self.transport.is_closing():
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_bytes = 0
        self.bytes_out += len(data)
        self.transport.write(data)
        # the bound covers what the kernel would not take yet, so a stalled reader is cut off
        self._bound = self.host.send_buffer_bytes - self.transport.get_write_buffer_size()
        if self._bound < 0:
            self._overflow()

    async def drain(self) -> None:
        """Wait while the kernel and transport buffers are above the high-water mark."""
        if not self._paused or self.state == CLOSED:
            return
        if self._resumed is None:
            self._resumed = asyncio.Event()
        self._resumed.clear()
        await self._resumed.wait()

    # --- closing ----------------------------------------------------------------------------
    def _handshake_expired(self) -> None:
        if self.state == HANDSHAKING:
            self.close("handshake_timeout", f"no handshake within {self.host.handshake_timeout:g}s")

    def close(self, reason: str, detail: str = "", *, send_goodbye: bool = True) -> None:
        """Close with a reason (sent to the peer in a goodbye when the link can still carry one)."""
        if self.state == CLOSED:
            return
        self.close_reason = reason
        self.close_detail = detail
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if reason == "send_buffer_overflow":
                transport.abort()
            else:
                if send_goodbye:
                    self._pending.append(encode_frame(m.goodbye(reason, detail)))
                self._flush()
                transport.close()
        self._finish(reason, detail)

    def _finish(self, reason: str, detail: str) -> None:
        if self.state == CLOSED:
            return
        was_open = self.state == OPEN
        self.state = CLOSED
        self.close_reason = self.close_reason or reason
        self.close_detail = self.close_detail or detail
        if self._timeout_handle:
            self._timeout_handle.cancel()
        if self._flush_handle:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending.clear()
        if self._resumed is not None:
            self._resumed.set()
        if not self.ready.done():
            self.ready.set_exception(LinkClosed(self.close_reason, self.close_detail))
            self.ready.exception()  # mark retrieved: nobody may be awaiting an inbound link
        self.host.on_closed(self, self.close_reason, was_open)


class LinkClosed(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} {detail}".strip())
        self.reason = reason
        self.detail = detail
