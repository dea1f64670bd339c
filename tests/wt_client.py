"""A WebTransport client in Python (aioquic) that speaks the browser protocol (node/browser/protocol.py): the
tests' and benchmarks' stand-in for a page, and the way a man in the middle reaches the real node."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import ssl
from typing import Any, Callable

import orjson
from aioquic.asyncio import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import H3Event, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, QuicEvent, StreamDataReceived
from cryptography.hazmat.primitives import serialization
from urllib.parse import urlsplit


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, enable_webtransport=True)
        self.accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.raw: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._buffer = b""
        self.session_id = -1
        self.stream_id = -1

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            if not self.accepted.done():
                self.accepted.set_exception(ConnectionError(event.reason_phrase or "closed"))
            self.lines.put_nowait(None)
            self.raw.put_nowait(None)
            return
        if isinstance(event, ProtocolNegotiated):
            return
        if isinstance(event, StreamDataReceived) and event.stream_id == self.stream_id:
            self._data(event.data)     # aioquic's H3 client does not tell its own WebTransport streams' data
            return
        for h3 in self.http.handle_event(event):
            self._h3(h3)

    def _h3(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and event.stream_id == self.session_id and not self.accepted.done():
            status = dict(event.headers).get(b":status")
            if status == b"200":
                self.accepted.set_result(event.stream_id)
            else:
                self.accepted.set_exception(ConnectionError(f"status {status!r}"))
        elif isinstance(event, WebTransportStreamDataReceived):
            self._data(event.data)

    def _data(self, data: bytes) -> None:
        self.raw.put_nowait(data)
        self._buffer += data
        *whole, self._buffer = self._buffer.split(b"\n")
        for line in whole:
            if line:
                self.lines.put_nowait(orjson.loads(line))

    def cert_sha256(self) -> bytes:
        cert = self._quic.tls._peer_certificate          # aioquic keeps it there only
        assert cert is not None
        return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


class BrowserClient:
    """One session: `open(url)`, then `request({...})` answers matched by `req`, `events()` for the rest."""

    def __init__(self) -> None:
        self.proto: _Client | None = None
        self.stream_id = -1
        self._req = 0
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.other: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def open(self, url: str, timeout: float = 10.0, local_host: str = "127.0.0.1") -> None:
        """A session with the endpoint at `url` (an IPv4 literal), from `local_host` (any 127.x.y.z on loopback)."""
        parts = urlsplit(url)
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                                   max_datagram_frame_size=65536, server_name=parts.hostname)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((local_host, 0))
        connection = QuicConnection(configuration=config)
        _, proto = await loop.create_datagram_endpoint(lambda: _Client(connection), sock=sock)
        self.proto = proto
        proto.connect((parts.hostname or "", parts.port or 443))
        await asyncio.wait_for(proto.wait_connected(), timeout)
        proto.session_id = proto._quic.get_next_available_stream_id()
        proto.http.send_headers(proto.session_id, [
            (b":method", b"CONNECT"), (b":scheme", b"https"), (b":authority", parts.netloc.encode()),
            (b":path", (parts.path or "/").encode()), (b":protocol", b"webtransport"),
            (b"sec-webtransport-http3-draft02", b"1")])
        proto.transmit()
        await asyncio.wait_for(proto.accepted, timeout)
        self.stream_id = proto.stream_id = proto.http.create_webtransport_stream(proto.session_id, is_unidirectional=False)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def write(self, data: bytes) -> None:
        assert self.proto is not None
        self.proto._quic.send_stream_data(self.stream_id, data)
        self.proto.transmit()

    def send(self, body: dict[str, Any]) -> None:
        self.write(orjson.dumps(body) + b"\n")

    async def request(self, body: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        self._req += 1
        req = self._req
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[req] = future
        self.send({**body, "req": req})
        return await asyncio.wait_for(future, timeout)

    async def hello(self) -> tuple[dict[str, Any], bytes]:
        nonce = os.urandom(32)
        return await self.request({"event": "hello", "nonce": nonce.hex()}), nonce

    async def _read(self) -> None:
        assert self.proto is not None
        while (line := await self.proto.lines.get()) is not None:
            req = line.get("req")
            future = self.pending.pop(req, None) if isinstance(req, int) else None
            if future is not None and not future.done():
                future.set_result(line)
            else:
                self.other.put_nowait(line)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("session closed"))

    async def next_event(self, timeout: float = 15.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.other.get(), timeout)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        proto, self.proto = self.proto, None
        if proto is not None:
            proto.close()
            try:
                await asyncio.wait_for(proto.wait_closed(), 2)
            except (asyncio.TimeoutError, ConnectionError):
                pass
            if proto._transport is not None:
                proto._transport.close()


class _Relay:
    """A man in the middle: a session of its own endpoint piped to a session with the real node."""

    def __init__(self, pipe: Any, url: str) -> None:
        self.pipe = pipe
        self.client = BrowserClient()
        self.early: list[bytes] = []
        self.ready = False
        self.task = asyncio.get_running_loop().create_task(self._connect(url))

    async def _connect(self, url: str) -> None:
        await self.client.open(url)
        for early in self.early:
            self.client.write(early)
        self.ready = True
        assert self.client.proto is not None
        if self.client._reader is not None:
            self.client._reader.cancel()     # the relay forwards bytes, it does not read requests' answers
        while True:
            data = await self.client.proto.raw.get()
            if data is None:
                return
            self.forward(data)

    def forward(self, data: bytes) -> None:
        """Bytes of the node's answers, on their way to the page."""
        self.pipe.write(data)

    def data_received(self, data: bytes) -> None:
        if self.ready:
            self.client.write(data)
        else:
            self.early.append(data)

    def close(self, code: int, reason: str) -> None:
        self.task.cancel()


class _Liar(_Relay):
    """A node with a key of its own (its proof is valid for its own id) that serves the real node's session with
    every header's commit changed by `lie` (base64 msgpack in, base64 msgpack out)."""

    def __init__(self, pipe: Any, url: str, cert_sha256: bytes, lie: Callable[[str], str]) -> None:
        from nacl.signing import SigningKey

        self.key, self.cert_sha256, self.lie = SigningKey.generate(), cert_sha256, lie
        self.nonce = b""
        self.partial = b""
        super().__init__(pipe, url)

    @property
    def node_id(self) -> str:
        return hashlib.sha256(bytes(self.key.verify_key)).digest()[:20].hex()

    def data_received(self, data: bytes) -> None:
        for line in data.split(b"\n"):
            if b'"hello"' in line:
                self.nonce = bytes.fromhex(orjson.loads(line)["nonce"])
        super().data_received(data)

    def forward(self, data: bytes) -> None:
        from node.browser.binding import proof_message

        *lines, self.partial = (self.partial + data).split(b"\n")
        out = []
        for line in lines:
            body = orjson.loads(line)
            if body.get("event") == "welcome":
                public = bytes(self.key.verify_key)
                body |= {"node_id": self.node_id, "public_key": public.hex(), "cert_sha256": self.cert_sha256.hex(),
                         "sig": self.key.sign(proof_message(self.cert_sha256, self.nonce)).signature.hex()}
            elif body.get("event") == "header" and "commit" in body:
                body["commit"] = self.lie(body["commit"])
            out.append(orjson.dumps(body))
        if out:
            self.pipe.write(b"\n".join(out) + b"\n")


def lying_session(url: str, lie: Callable[[str], str]) -> Any:
    """A server's `new_session` whose sessions are a lying node's (_Liar) in front of the node at `url`."""
    return lambda pipe, cert, _peer: _Liar(pipe, url, cert, lie)


def forge_signature(commit: str) -> str:
    """The commit with its first signature's first byte changed."""
    import msgpack

    height, round_, block_id, sigs = msgpack.unpackb(base64.b64decode(commit))
    sigs[0][1] = bytes([sigs[0][1][0] ^ 0xFF]) + sigs[0][1][1:]
    return base64.b64encode(msgpack.packb([height, round_, block_id, sigs], use_bin_type=True)).decode()


def drop_signatures(commit: str) -> str:
    """The commit with every signature left out."""
    import msgpack

    height, round_, block_id, _ = msgpack.unpackb(base64.b64decode(commit))
    return base64.b64encode(msgpack.packb([height, round_, block_id, []], use_bin_type=True)).decode()


def relay_session(url: str) -> Any:
    """A server's `new_session` that relays every page's session to the node at `url`."""
    return lambda pipe, _cert, _peer: _Relay(pipe, url)


class _Impostor:
    """Answers a page's hello with a proof over its own certificate, signed by a key of its own."""

    def __init__(self, pipe: Any, cert_sha256: bytes) -> None:
        from nacl.signing import SigningKey

        self.pipe, self.cert_sha256, self.key = pipe, cert_sha256, SigningKey.generate()

    def data_received(self, data: bytes) -> None:
        from node.browser.binding import proof_message

        for line in data.split(b"\n"):
            if not line:
                continue
            body = orjson.loads(line)
            if body.get("event") == "hello":
                public = bytes(self.key.verify_key)
                sig = self.key.sign(proof_message(self.cert_sha256, bytes.fromhex(body["nonce"]))).signature
                self.pipe.write(orjson.dumps({
                    "event": "welcome", "req": body.get("req"), "node_id": hashlib.sha256(public).digest()[:20].hex(),
                    "public_key": public.hex(), "cert_sha256": self.cert_sha256.hex(), "sig": sig.hex()}) + b"\n")

    def close(self, code: int, reason: str) -> None:
        pass


def signing_session() -> Any:
    return lambda pipe, cert, _peer: _Impostor(pipe, cert)
