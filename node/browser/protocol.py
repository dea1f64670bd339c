"""The protocol a page speaks over its WebTransport session: JSON lines on one bidirectional stream.

Requests (`req` echoed in the answer): `hello {nonce}` (the session proof: binding.py), `subscribe` /
`unsubscribe` / `ping` (the market-data stream's own requests, handled by its server: book snapshot and
updates with sequence and checksum), `headers` (every block header once final here, with its canonical
bytes and commit), `chain` (the genesis and epoch proofs, to check those commits against), `submit {signed}`
(a transaction in the documented signed form) and `nodes` (other nodes' WebTransport addresses, from
what their links told us) and `rtc_offer {to, sdp}` (a WebRTC offer carried to a linked node that
cannot be dialled, its answer brought back: service.py). Every line the node sends goes through one
`StreamSession`, so a page that does not read is cut off exactly as a slow `/ws` client is.

The page is a peer with fewer rights: it cannot validate, relay, or add to a node's tables; it may only
read, ask and submit what it signed itself, within a request rate and a number of submissions in flight.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Awaitable, Callable, Protocol

import orjson

from node.api.base import Json, JsonObject
from node.browser.binding import NONCE_BYTES, proof_message
from node.marketdata.session import StreamSession
from p2p.resilience.token_bucket import TokenBucket

log = logging.getLogger("node.browser")

MAX_LINE = 64 * 1024           # a signed batch of 250 operations fits
REQUEST_RATE = 20.0            # requests per second per session, after a burst
REQUEST_BURST = 40.0
MAX_IN_FLIGHT = 8              # submissions of one session waiting for finality
MAX_OFFERS = 4                 # WebRTC offers of one session being carried at once
SUBMIT_WAIT = 10.0             # s a submission waits for its block before it is answered "not final yet"
SESSION_IDLE = 10.0            # s without a request before a session is closed (a page asks something every 5 s: a tab
                               # closed without a word, which Chromium leaves open, frees its slot)
CLOSE_PROTOCOL = 4400
CLOSE_IDLE = 4408
CLOSE_TOO_MANY = 4029


class SessionPipe(Protocol):
    """A session's way back to the page: a WebTransport stream (server.py) or a data channel (rtc.py)."""

    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int: ...

    def abort(self) -> None: ...


class NodeSide(Protocol):
    """What a page's session may ask of the node."""

    def identity(self) -> JsonObject:
        """node_id, public_key (hex), network, chain_id, markets, height."""

    def sign(self, data: bytes) -> bytes: ...

    def stream_request(self, session: StreamSession, text: str) -> None:
        """A market-data request (subscribe, unsubscribe, ping), answered on `session`."""

    def stream_closed(self, session: StreamSession) -> None: ...

    def submit(self, signed: Json) -> Awaitable[JsonObject]:
        """Hand a client's signed transaction to the chain; the answer once final (or why not)."""

    def nodes(self) -> list[JsonObject]:
        """Other nodes a page may dial: node_id, webtransport URL, cert_sha256 list."""

    def follow_headers(self, session: "BrowserSession", on: bool) -> None: ...

    def chain_proofs(self) -> JsonObject:
        """The genesis document and epoch proofs (base64 msgpack), to check headers against."""

    def rtc_offer(self, to: str, sdp: str, page: str) -> Awaitable[JsonObject]:
        """Carry a page's WebRTC offer to linked node `to`; its answer (`sdp`) or an `error`."""


class LineTransport:
    """What `StreamSession` writes into: it frames each message as a WebSocket text frame (node/marketdata/
    wsframe.py); this takes the frames apart again and writes each message as one line on the QUIC stream."""

    def __init__(self, write: Callable[[bytes], None], buffered: Callable[[], int], abort: Callable[[], None]) -> None:
        self._write = write
        self._buffered = buffered
        self._abort = abort
        self.closing = False

    def write(self, data: bytes) -> None:
        out: list[bytes] = []
        view = memoryview(data)
        i = 0
        while i < len(view):
            n = view[i + 1] & 0x7F
            i += 2
            if n == 126:
                n = struct.unpack_from("!H", view, i)[0]
                i += 2
            elif n == 127:
                n = struct.unpack_from("!Q", view, i)[0]
                i += 8
            out.append(bytes(view[i:i + n]))
            out.append(b"\n")
            i += n
        self._write(b"".join(out))

    def get_write_buffer_size(self) -> int:
        return self._buffered()

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True
        self._abort()


class BrowserSession:
    """One page's session: reads its request lines, answers through `stream` (a StreamSession)."""

    def __init__(self, node: NodeSide, stream: StreamSession, cert_sha256: bytes, *, peer: str,
                 close: Callable[[int, str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.stream = stream
        self.cert_sha256 = cert_sha256
        self.peer = peer
        self._close = close
        self.bucket = TokenBucket(REQUEST_RATE, REQUEST_BURST, clock=clock)
        self.clock = clock
        self.last_request = clock()
        self.in_flight = 0
        self.offering = 0              # WebRTC offers of this page being carried
        self.proved = False
        self.headers = False
        self.closed = False
        self._buffer = bytearray()
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = {"requests": 0, "submitted": 0, "refused": 0}

    # --- input ---------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        """Bytes of the page's stream: whole lines are requests; a line longer than MAX_LINE ends the session."""
        if self.closed:
            return
        self._buffer += data
        while not self.closed:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    self.close(CLOSE_PROTOCOL, f"a request line is longer than {MAX_LINE} bytes")
                return
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if line.strip():
                self.request(line)

    def request(self, line: bytes) -> None:
        self.counters["requests"] += 1
        self.last_request = self.clock()
        if not self.bucket.try_take():
            self.close(CLOSE_TOO_MANY, f"too many requests: more than {REQUEST_RATE:g}/s")
            return
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError:
            return self.error("invalid_json", "a request is one line of JSON", None)
        if not isinstance(body, dict):
            return self.error("invalid_request", "a request is a JSON object with an event", None)
        req = body.get("req")
        if req is not None and not (isinstance(req, (int, str)) and not isinstance(req, bool) and len(str(req)) <= 64):
            return self.error("invalid_req", "req must be a number or a string of at most 64 characters", None)
        event = body.get("event")
        try:
            if event == "hello":
                self._hello(body.get("nonce"), req)
            elif event in ("subscribe", "unsubscribe", "ping"):
                self.node.stream_request(self.stream, line.decode())
            elif event == "headers":
                self.headers = body.get("on", True) is True
                self.node.follow_headers(self, self.headers)
                self.send({"event": "headers", "on": self.headers}, req)
            elif event == "submit":
                self._submit(body.get("signed"), req)
            elif event == "nodes":
                self.send({"event": "nodes", "nodes": self.node.nodes()}, req)
            elif event == "chain":
                self.send({"event": "chain", **self.node.chain_proofs()}, req)
            elif event == "rtc_offer":
                self._rtc_offer(body.get("to"), body.get("sdp"), req)
            else:
                self.error("unknown_event", "event must be hello, subscribe, unsubscribe, ping, headers, chain, "
                           "submit, nodes or rtc_offer", req)
        except Exception as exc:  # noqa: BLE001 - a bug of ours on odd input: refuse the request, keep the session
            log.warning("browser request refused, the node could not handle it: %s: %s", type(exc).__name__, exc,
                        extra={"address": self.peer})
            self.error("invalid_request", "the node could not handle this request", req)

    def _hello(self, nonce: Json, req: Json) -> None:
        try:
            raw = bytes.fromhex(nonce) if isinstance(nonce, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != NONCE_BYTES:
            return self.error("bad_nonce", f"nonce must be {NONCE_BYTES} bytes in hex", req)
        sig = self.node.sign(proof_message(self.cert_sha256, raw))
        self.proved = True
        self.send({"event": "welcome", **self.node.identity(), "cert_sha256": self.cert_sha256.hex(),
                   "sig": sig.hex()}, req)

    def _submit(self, signed: Json, req: Json) -> None:
        if self.in_flight >= MAX_IN_FLIGHT:
            self.counters["refused"] += 1
            return self.error("too_many_in_flight", f"at most {MAX_IN_FLIGHT} submissions wait for finality "
                              "per session", req)
        self.in_flight += 1
        self.counters["submitted"] += 1
        task = asyncio.get_running_loop().create_task(self._submit_task(signed, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rtc_offer(self, to: Json, sdp: Json, req: Json) -> None:
        if not isinstance(to, str) or len(to) != 40 or not isinstance(sdp, str) or not sdp:
            return self.error("invalid_offer", "rtc_offer takes a node id (to) and an SDP offer (sdp)", req)
        if self.offering >= MAX_OFFERS:
            return self.error("too_many_in_flight", f"at most {MAX_OFFERS} WebRTC offers at a time per session", req)
        self.offering += 1
        task = asyncio.get_running_loop().create_task(self._rtc_task(to, sdp, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rtc_task(self, to: str, sdp: str, req: Json) -> None:
        try:
            answer = await self.node.rtc_offer(to, sdp, self.peer)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: the page hears it, the session stays
            log.warning("browser WebRTC offer failed: %s: %s", type(exc).__name__, exc, extra={"address": self.peer})
            answer = {"error": {"code": "internal", "msg": "the node could not carry this offer"}}
        finally:
            self.offering -= 1
        self.send({"event": "rtc_answer", **answer}, req)

    async def _submit_task(self, signed: Json, req: Json) -> None:
        try:
            answer = await self.node.submit(signed)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: the page hears it, the session stays
            log.warning("browser submission failed: %s: %s", type(exc).__name__, exc, extra={"address": self.peer})
            answer = {"error": {"code": "internal", "msg": "the node could not take this transaction"}}
        finally:
            self.in_flight -= 1
        self.send({"event": "submitted", **answer}, req)

    def idle(self, now: float) -> bool:
        """Whether the page has asked nothing for SESSION_IDLE seconds (it is gone)."""
        return now - self.last_request > SESSION_IDLE

    # --- output --------------------------------------------------------------------------------
    def send(self, event: JsonObject, req: Json = None) -> None:
        if req is not None:
            event["req"] = req
        self.stream.send(orjson.dumps(event))

    def error(self, code: str, message: str, req: Json) -> None:
        self.send({"event": "error", "code": code, "msg": message}, req)

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.headers:
            self.node.follow_headers(self, False)
        self.node.stream_closed(self.stream)
        for task in self._tasks:
            task.cancel()
        self._close(code, reason)
