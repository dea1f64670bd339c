"""One peer link: Noise handshake, encrypted hello, heartbeat RTT, batched encrypted writes with a hard buffer bound,
close reasons.

A `PeerLink` is an asyncio Protocol (10-30% faster than streams here). It goes `securing` (Noise XX,
p2p/secure/channel.py: proves the remote node id) -> `handshaking` (hellos, then `handshake_ack` from each side once
it admits the other) -> `open` -> `closed`. After the Noise handshake every byte is sealed: the frames queued in one
event-loop pass are joined and encrypted together (as few AEAD messages as fit) into a single `write()`, and
received bytes are decrypted message by message before the FrameDecoder sees them.

No exception raised by a peer's bytes leaves `data_received`: a protocol violation closes the link with its reason
and `fault=Fault.PEER` (the PeerManager penalises it), a channel failure (tampered, replayed or injected bytes:
anyone on the path could cause it) closes it with `fault=Fault.PATH`, and anything else is our bug: reported to the
host with its traceback and the link closed as `internal_error`, blaming nobody.

Over 500 lines on purpose: one link's states, sealing, write batching and read turns are one asyncio Protocol whose
callbacks run for every frame; split across objects, each frame would pay the calls between them.
"""
from __future__ import annotations

import asyncio
from enum import StrEnum
import logging
import time
from typing import Any, Mapping, Protocol, cast

from p2p.messages import Message
from p2p import messages as m
from p2p.close_reason import CloseReason, Fault, GivenReason, LinkReason, remote_reason
from p2p.link_reading import TURN_SECONDS, LinkReading, ReadTurns
from p2p.framing import HEADER, FrameDecoder, FrameError, encode_body, encode_frame
from p2p.secure.channel import ChannelError, SecureHandshake, SecureTransport, StaticIdentity, refusal

frame_header = HEADER.pack
log = logging.getLogger("p2p.link")

_LINK_TYPES = frozenset({"heartbeat", "goodbye", "handshake", "handshake_ack"})


class LinkState(StrEnum):
    """Where a link is: Noise handshake, then hellos, then open until closed."""

    SECURING = "securing"
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSED = "closed"


class Direction(StrEnum):
    OUTBOUND = "outbound"   # we dialled
    INBOUND = "inbound"     # they dialled us


SECURING, HANDSHAKING, OPEN, CLOSED = LinkState


class LinkHost(Protocol):
    """What a link needs from the node that owns it."""

    node_id: str
    network_id: str
    max_frame_bytes: int
    send_buffer_bytes: int
    read_rate: float                # bytes a second read from one link, in bursts of up to read_burst
    read_burst: float
    read_turns: ReadTurns           # hands out its links' read turns, by network
    handshake_timeout: float
    static_identity: StaticIdentity
    schemas: m.Schemas

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool: ...
    def node_id_for(self, public_key: bytes) -> str: ...
    def accept(self, link: "PeerLink") -> CloseReason | None: ...
    def local_hello(self, link: "PeerLink") -> Message: ...
    def admit(self, link: "PeerLink", hello: Message) -> GivenReason | None: ...
    def claim(self, link: "PeerLink") -> CloseReason | None: ...
    def on_open(self, link: "PeerLink") -> None: ...
    def on_message(self, link: "PeerLink", message: Message) -> None: ...
    def on_heartbeat(self, link: "PeerLink", message: Message) -> None: ...
    def on_unknown(self, link: "PeerLink", message: Message) -> None: ...
    def on_closed(self, link: "PeerLink", reason: LinkReason, was_open: bool) -> None: ...
    def on_internal_error(self, link: "PeerLink", where: str, exc: BaseException) -> None: ...


class PeerLink(asyncio.Protocol):
    __slots__ = (
        "host", "direction", "source", "state", "transport", "decoder", "remote_id", "remote_public_key",
        "remote_hello", "remote_addr", "close_reason", "close_detail", "close_fault", "ready", "_pending",
        "_pending_bytes", "_flush_handle", "_paused", "_resumed", "_timeout_handle", "_handshake", "_secure",
        "handshake_hash", "opened_at", "connected_at", "last_recv", "last_frame_at", "rtt", "msgs_in", "msgs_out", "bytes_in",
        "bytes_out", "peer_ts", "peer_ts_at", "remote_links", "_loop", "dial_address", "dial_seq", "lost",
        "_bound", "_max_frame", "provisional", "via", "reading",
    )

    def __init__(self, host: LinkHost, direction: Direction, source: str = "inbound",
                 dial_address: tuple[str, int] | None = None) -> None:
        self.host = host
        self.direction = direction
        self.source = source
        self.dial_address = dial_address
        self.state = SECURING
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(host.max_frame_bytes)
        self._max_frame = host.max_frame_bytes
        self.remote_id: str | None = None  # proven by the Noise handshake, never taken from a message
        self.remote_public_key: bytes | None = None
        self.remote_hello: Message | None = None
        self.remote_addr: tuple[str, int] | None = None
        self.close_reason: LinkReason | None = None
        self.close_detail = ""
        self.close_fault: Fault | None = None  # who caused it, when a failure closed the link
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
        self._handshake: SecureHandshake | None = None
        self._secure: SecureTransport | None = None
        self.handshake_hash = b""
        self.opened_at: float | None = None
        self.connected_at = time.monotonic()
        self.last_recv = self.connected_at
        self.last_frame_at: float | None = None  # wall-clock time of the last frame received (peers' "last seen")
        self.rtt: float | None = None
        self.msgs_in = self.msgs_out = self.bytes_in = self.bytes_out = 0
        self.peer_ts: float | None = None
        self.peer_ts_at = 0.0
        self.remote_links: frozenset[str] = frozenset()
        self.dial_seq = 0  # the dialler's count of dials; set by the dialler's hello
        self.provisional = False  # let in past a full house for a node we keep linked: must prove it is one
        self.via: str | None = None  # the relay's node id, for a link carried through a relay (p2p/nat/circuit.py)
        self.reading = LinkReading(self._loop, lambda: self.transport, self._dispatch_open, self._receive_failed,
                                   lambda: self.state == OPEN, (host.read_rate, host.read_burst), host.read_turns,
                                   lambda: host.read_turns.network_of(self.remote_id, self.remote_addr, self.via))

    # --- identity helpers -------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def dialer_seq(self) -> int:
        if self.direction == Direction.OUTBOUND:
            return self.dial_seq
        seq = self.remote_hello.get("dial_seq", 0) if self.remote_hello else 0
        return seq if isinstance(seq, int) else 0

    @property
    def dialer_id(self) -> str | None:
        return self.host.node_id if self.direction == Direction.OUTBOUND else self.remote_id

    def __repr__(self) -> str:
        peer = self.remote_id[:8] if self.remote_id else "?"
        return f"<PeerLink {self.direction} {peer} {self.remote_addr} {self.state}>"

    # --- asyncio Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = tcp = cast(asyncio.Transport, transport)  # a stream transport (uvloop's are not subclasses)
        peername = transport.get_extra_info("peername")
        if peername:
            self.remote_addr = (peername[0], peername[1])
        tcp.set_write_buffer_limits(high=max(64 * 1024, self.host.send_buffer_bytes // 4))
        host = self.host
        try:
            if self.direction == Direction.INBOUND:
                refused = host.accept(self)
                if refused:
                    self._write_raw(refusal(refused))
                    self.close(refused, "refused at accept", send_goodbye=False)
                    return
            self._timeout_handle = self._loop.call_later(host.handshake_timeout, self._handshake_expired)
            self._handshake = SecureHandshake(self.direction == Direction.OUTBOUND, host.static_identity, host.verify,
                                              host.node_id_for)
            self._write_raw(self._handshake.start())
        except Exception as exc:  # noqa: BLE001 - never an unhandled error in a transport callback
            self._internal_error("link.connect", exc)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.last_recv = time.monotonic()
        if self.via is None:    # a relayed link is bounded by its circuit's byte budget at the relay
            self.reading.charge(len(data))
        try:
            secure = self._secure
            if secure is None:
                data = self._handshake_bytes(data)
                if not data:
                    return
                secure = self._secure
                assert secure is not None, "bytes past the handshake come only once it is done"
            plain = secure.open(data)
            if not plain:
                return
            messages = self.decoder.feed(plain)
            if messages:
                self.last_frame_at = time.time()
            if self.state == OPEN:
                self.reading.deliver(messages)
                return
            for index, message in enumerate(messages):
                if self.state == CLOSED:
                    return
                if self.state == OPEN:      # read with the ack that opened it: in turns, never past a hold
                    return self.reading.deliver(messages[index:])
                self.msgs_in += 1
                self._dispatch(message)
        except Exception as exc:  # noqa: BLE001 - sorted by who caused it in _receive_failed
            self._receive_failed(exc)

    def _receive_failed(self, exc: Exception) -> None:
        if isinstance(exc, m.ProtocolError):
            self.close(exc.reason, exc.detail, fault=Fault.PEER)
        elif isinstance(exc, FrameError):
            self.close(exc.reason, str(exc), fault=Fault.PEER)
        elif isinstance(exc, ChannelError):
            self.close(exc.reason, exc.detail, fault=Fault.PATH)
        else:   # our bug, never the peer's to pay for
            self._internal_error("link.receive", exc)

    def hold_reading(self, seconds: float) -> None:
        """Read nothing from this peer for `seconds`: a component's budget for it is spent (link_reading.py).
        A relayed link is never held: it has no socket of its own, and pausing it would stop its carrier, our
        link to the relay, whose own messages (a validator's votes) and other circuits are not the one over
        budget; the component drops that peer's excess as it reads it instead."""
        if self.state != CLOSED and self.via is None:
            self.reading.hold(seconds)

    def _dispatch_open(self, messages: list[Message]) -> None:
        """Hot path for an open link: application messages go straight to their compiled schema
        check and the host; link-level types take the general path."""
        schemas = self.host.schemas.checks
        deliver = self.host.on_message
        reading = self.reading
        turn_ends = time.perf_counter() + TURN_SECONDS
        for index, message in enumerate(messages):
            if self.state != OPEN:
                return
            if reading.held or (index and time.perf_counter() > turn_ends):    # a budget spent, or the turn's time
                reading.put_back(messages[index:])      # the rest wait for the hold's end, or the link's next turn
                return
            self.msgs_in += 1
            kind = message["type"]
            check = schemas.get(kind)
            if check is None or kind in _LINK_TYPES:
                self._dispatch(message)
                continue
            bad = check(message)
            if bad is not None:
                raise m.ProtocolError(CloseReason.MALFORMED_MESSAGE, f"{kind}.{bad}")
            deliver(self, message)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        try:
            ended = CloseReason.CONNECTION_RESET if exc else CloseReason.CONNECTION_CLOSED
            self._finish(self.close_reason or ended, str(exc or ""))
        except Exception as error:  # noqa: BLE001
            self.host.on_internal_error(self, "link.lost", error)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._resumed is not None:
            self._resumed.set()

    # --- the Noise handshake ----------------------------------------------------------------
    def _handshake_bytes(self, data: bytes) -> bytes:
        """Feed the handshake; once it is done, switch to the encrypted channel and say hello.
        Returns bytes that already belong to the encrypted stream."""
        handshake = self._handshake
        if handshake is None:
            return b""  # refused at accept: whatever else arrives is ignored
        try:
            self._write_raw(handshake.feed(data))
        except ChannelError as exc:
            if exc.reply:
                self._write_raw(exc.reply)
            raise
        if not handshake.done:
            return b""
        self._handshake = None
        self.remote_id = handshake.remote_id
        self.remote_public_key = handshake.remote_public_key
        self.handshake_hash = handshake.handshake_hash or b""
        self._secure = handshake.transport()
        if self.remote_id == self.host.node_id:
            self.close(CloseReason.SELF_CONNECTION, "the remote key is our own")
            return b""
        self.state = HANDSHAKING
        self.send(self.host.local_hello(self))
        return handshake.leftover

    def _write_raw(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.bytes_out += len(data)
            self.transport.write(data)

    # --- receiving --------------------------------------------------------------------------
    def _dispatch(self, message: Message) -> None:
        kind = message["type"]
        if self.state == OPEN:
            if kind == "heartbeat":
                self.host.schemas.validate(message)
                self._on_heartbeat(message)
            elif kind == "goodbye":
                self._on_goodbye(message)
            elif kind in ("handshake", "handshake_ack"):
                raise m.ProtocolError(CloseReason.UNEXPECTED_HANDSHAKE, kind)
            elif self.host.schemas.validate(message):
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
            raise m.ProtocolError(CloseReason.HANDSHAKE_REQUIRED, kind)

    def _on_hello(self, hello: Message) -> None:
        if self.remote_hello is not None:
            raise m.ProtocolError(CloseReason.DUPLICATE_HANDSHAKE)
        self.host.schemas.validate(hello)
        host = self.host
        protocol = hello["protocol"]
        if not m.MIN_PROTOCOL_VERSION <= protocol <= m.MAX_PROTOCOL_VERSION:
            return self.close(CloseReason.INCOMPATIBLE_VERSION, f"peer speaks {protocol}, we accept "
                                                      f"{m.MIN_PROTOCOL_VERSION}..{m.MAX_PROTOCOL_VERSION}")
        if hello["network"] != host.network_id:
            return self.close(CloseReason.NETWORK_MISMATCH, f"peer network {hello['network']!r}, ours {host.network_id!r}")
        if hello["node_id"] != self.remote_id:
            return self.close(CloseReason.IDENTITY_MISMATCH, "the hello names another node than the Noise handshake proved",
                              fault=Fault.PEER)
        self.remote_hello = hello
        refusal_reason = host.admit(self, hello)
        if refusal_reason:
            return self.close(refusal_reason)
        self.send({"type": "handshake_ack"})

    def _on_ack(self, ack: Message) -> None:
        """The peer accepted our hello (and we accepted its own, or we would have closed)."""
        if self.remote_hello is None:
            raise m.ProtocolError(CloseReason.HANDSHAKE_REQUIRED, "ack before hello")
        refusal_reason = self.host.claim(self)  # only a proven identity may displace another link
        if refusal_reason:
            return self.close(refusal_reason)
        self.state = OPEN
        self.opened_at = time.monotonic()
        if self._timeout_handle:
            self._timeout_handle.cancel()
        self.host.on_open(self)
        if not self.ready.done():
            self.ready.set_result(self)

    def _on_goodbye(self, message: Message) -> None:
        detail = message.get("detail")
        detail = detail if isinstance(detail, str) else ""
        self.close(remote_reason(message.get("reason")), detail, send_goodbye=False)

    def _on_heartbeat(self, message: Message) -> None:
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
    def heartbeat(self, extra: Mapping[str, object] | None = None) -> bool:
        """Send a heartbeat that echoes the peer's last timestamp, so both sides measure RTT."""
        now = time.time()
        message: dict[str, Any] = {"type": "heartbeat", "ts": now}
        if self.peer_ts is not None:
            message["echo"] = self.peer_ts
            message["hold"] = now - self.peer_ts_at
        if extra:
            message.update(extra)
        return self.send(message)

    def send(self, message: Message) -> bool:
        """Encode and queue one message (encode_frame inlined: every RPC goes through here)."""
        body = encode_body(message)
        if len(body) > self._max_frame:
            log.warning("refusing to send oversized %s frame to %r", message.get("type"), self)
            return False
        return self.send_frame(frame_header(len(body)) + body)

    def send_frame(self, frame: bytes) -> bool:
        """Queue an encoded frame; joined with others, encrypted and written at the end of this loop pass."""
        if self.state == CLOSED or self._secure is None:
            return False
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self.msgs_out += 1
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)
        if self._pending_bytes > self._bound:
            return self._overflow()
        return True

    def spare_room(self) -> int:
        """Bytes this link takes while half its send buffer stays free (past the whole of it, it is closed as not
        reading fast enough): what can be sent on it that its own traffic could do without."""
        return self._bound - self._pending_bytes - self.host.send_buffer_bytes // 2

    def _overflow(self) -> bool:
        self.close(CloseReason.SEND_BUFFER_OVERFLOW, "peer is not reading fast enough", send_goodbye=False)
        return False

    def _flush(self) -> None:
        self._flush_handle = None
        pending = self._pending
        transport = self.transport
        if not pending or transport is None or transport.is_closing() or self._secure is None:
            return
        data = self._secure.seal(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()
        self._pending_bytes = 0
        self.bytes_out += len(data)
        transport.write(data)
        # the bound covers what the kernel would not take yet, so a stalled reader is cut off
        self._bound = self.host.send_buffer_bytes - transport.get_write_buffer_size()
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
        if self.state in (SECURING, HANDSHAKING):
            self.close(CloseReason.HANDSHAKE_TIMEOUT, f"no handshake within {self.host.handshake_timeout:g}s")

    def _internal_error(self, where: str, exc: BaseException) -> None:
        self.host.on_internal_error(self, where, exc)
        self.close(CloseReason.INTERNAL_ERROR, type(exc).__name__, fault=Fault.OURS)

    def close(self, reason: LinkReason, detail: str = "", *, send_goodbye: bool = True, fault: Fault | None = None) -> None:
        """Close with a reason (sent to the peer in an encrypted goodbye when the link can still carry one).
        `fault` says who caused a failure: "peer" (penalised), "path" or "ours" (nobody is)."""
        if self.state == CLOSED:
            return
        self.close_reason = reason
        self.close_detail = detail
        self.close_fault = fault
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if reason == CloseReason.SEND_BUFFER_OVERFLOW:
                transport.abort()
            else:
                if send_goodbye and self._secure is not None:
                    self._pending.append(encode_frame(m.goodbye(reason, detail)))
                try:
                    self._flush()
                finally:
                    transport.close()
        self._finish(reason, detail)

    def _finish(self, reason: LinkReason, detail: str) -> None:
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
        self.reading.close()
        self._pending.clear()
        if self._resumed is not None:
            self._resumed.set()
        if not self.ready.done():
            self.ready.set_exception(LinkClosed(self.close_reason, self.close_detail))
            self.ready.exception()  # mark retrieved: nobody may be awaiting an inbound link
        self.host.on_closed(self, self.close_reason, was_open)


class ProbeLink(PeerLink):
    """A dial that only asks who answers (a reachability dial-back): once the Noise handshake proves the
    remote key, `ready` holds the link and it closes with `dial_back`; it never opens, so the node it
    reached keeps its links and slots as they were."""

    __slots__ = ()

    def _handshake_bytes(self, data: bytes) -> bytes:
        super()._handshake_bytes(data)
        if self.remote_id is not None and self.state == HANDSHAKING:
            if not self.ready.done():
                self.ready.set_result(self)
            self.close(CloseReason.DIAL_BACK, "reachability check")
        return b""


class LinkClosed(Exception):
    def __init__(self, reason: LinkReason, detail: str = "") -> None:
        super().__init__(f"{reason} {detail}".strip())
        self.reason = reason
        self.detail = detail
