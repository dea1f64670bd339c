"""The WebTransport endpoint: HTTP/3 over QUIC (aioquic), one UDP port next to the peer port.

A page opens a session with `CONNECT` (`:protocol webtransport`) on `path`, then one bidirectional stream
that carries its requests and the node's answers as JSON lines (protocol.py). Connections are counted per
address, per /24 (/48) and in all from their first datagram, before any handshake work beyond QUIC's own,
and addresses are validated first by a QUIC retry, so a spoofed source cannot take another's share.
A connection that never opens a session is dropped by QUIC's idle timeout.

The same port answers STUN binding requests (stun.py), each address at most STUN_RATE a second and all of
them at most STUN_TOTAL_RATE, so pages and nodes behind NATs learn their reflexive addresses for WebRTC from
us and need no outside server.

The served certificate can change at any time (`use_certificate`): connections made from then on get the new
one, open sessions keep theirs, and each session is told the hash of the certificate its connection used.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Callable, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import H3Event, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, QuicEvent, StreamReset
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.browser.certs import Certificate
from node.browser.stun import binding_answer, is_stun
from p2p.resilience.token_bucket import TokenBucket
from p2p.public.sources import Scope, Shares, cap_name, scope_words, subnet_of

log = logging.getLogger("node.browser")
logging.getLogger("quic").setLevel(logging.WARNING)     # aioquic logs several INFO lines for every connection

IDLE_TIMEOUT = 15.0               # s a QUIC connection may stay silent (a page asks something every 5 s)
MAX_DATAGRAM_FRAME = 65536
ERROR_REFUSED = 0x2               # QUIC CONNECTION_REFUSED
WARN_EVERY = 60.0                 # s between two warnings of refused connections (each is counted)
STRAY_LIMIT = 16                  # requests and streams a page never needs, per connection, before it is closed
STUN_RATE, STUN_BURST = 2.0, 10.0             # binding answers per address (ICE asks a few times per gathering)
STUN_TOTAL_RATE, STUN_TOTAL_BURST = 200.0, 400.0
STUN_ADDRESSES = 4096             # addresses whose STUN rate is tracked at once (past it: forgotten, oldest first)


class SessionHandler:
    """What the server hands a session's events to (the service makes one per session)."""

    def data_received(self, data: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class Pipe:
    """A session's way back to the page: one QUIC stream, its unsent bytes, and closing the session."""

    def __init__(self, protocol: "WebTransportProtocol", session_id: int, stream_id: int) -> None:
        self.protocol = protocol
        self.session_id = session_id
        self.stream_id = stream_id

    def write(self, data: bytes) -> None:
        if not self.protocol.closed:
            self.protocol._quic.send_stream_data(self.stream_id, data)
            self.protocol.transmit()

    def buffered(self) -> int:
        """Bytes written to the stream that the page has not acknowledged yet."""
        stream = self.protocol._quic._streams.get(self.stream_id)    # aioquic keeps no public count of it
        return 0 if stream is None else len(stream.sender._buffer)

    def abort(self) -> None:
        self.protocol.close_connection(0x100, "session closed")


NewSession = Callable[[Pipe, bytes, str], SessionHandler]      # (pipe, served cert sha256, peer address)


class WebTransportProtocol(QuicConnectionProtocol):
    def __init__(self, *args: object, server: "WebTransportServer", **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.server = server
        self.http: H3Connection | None = None
        self.peer: str | None = None
        self.closed = False
        self.sessions: dict[int, SessionHandler] = {}      # stream id of the page's stream -> its session
        self.session_ids: set[int] = set()
        self.streamed = False                               # the page opened its request stream
        self.strays = 0                                     # requests answered 404 and extra streams reset
        certificate = self._quic.configuration.certificate
        der = certificate.public_bytes(serialization.Encoding.DER) if certificate is not None else b""
        self.cert_sha256 = hashlib.sha256(der).digest()

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        if self.closed:
            return
        if self.peer is None:
            scope = self.server.admit(str(addr[0]), self)
            if scope is not None:      # over a cap: QUIC takes this first packet only to say so, then nothing more
                super().datagram_received(data, addr)
                self.closed = True
                self._quic.close(error_code=ERROR_REFUSED, reason_phrase=f"too many browser connections "
                                 f"({cap_name(scope)})")
                self.transmit()
                return
            self.peer = str(addr[0])
        super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self.http = H3Connection(self._quic, enable_webtransport=True)
        elif isinstance(event, ConnectionTerminated):
            self._terminated()
            return
        elif isinstance(event, StreamReset) and event.stream_id in self.sessions:
            self.sessions.pop(event.stream_id).close(1001, "stream reset")
        if self.http is None:
            return
        try:
            for h3_event in self.http.handle_event(event):
                self._h3_event(h3_event)
        except Exception as exc:  # noqa: BLE001 - a peer's bytes never take the endpoint down
            log.warning("browser connection dropped: %s: %s", type(exc).__name__, exc, extra={"address": self.peer})
            self.close_connection(0x101, "protocol error")

    def _h3_event(self, event: H3Event) -> None:
        assert self.http is not None
        if isinstance(event, HeadersReceived):
            headers = dict(event.headers)
            if headers.get(b":method") == b"CONNECT" and headers.get(b":protocol") == b"webtransport" \
                    and headers.get(b":path") == self.server.path.encode() and len(self.session_ids) < 1:
                self.session_ids.add(event.stream_id)
                self.http.send_headers(event.stream_id, [(b":status", b"200"),
                                                         (b"sec-webtransport-http3-draft", b"draft02")])
            else:
                self.http.send_headers(event.stream_id, [(b":status", b"404")], end_stream=True)
                self._stray()
            self.transmit()
        elif isinstance(event, WebTransportStreamDataReceived) and event.session_id in self.session_ids \
                and not self.closed:
            handler = self.sessions.get(event.stream_id)
            if handler is None:
                if self.streamed:       # one request stream per session, opened once
                    self._quic.reset_stream(event.stream_id, 0x10)
                    self._stray()
                    self.transmit()
                    return
                handler = self.server.new_session(Pipe(self, event.session_id, event.stream_id), self.cert_sha256,
                                                  self.peer or "")
                self.sessions[event.stream_id] = handler
                self.streamed = True
            if event.data:
                handler.data_received(event.data)
            if event.stream_ended and event.stream_id in self.sessions:
                self.sessions.pop(event.stream_id).close(1000, "the page closed its stream")

    def _stray(self) -> None:
        """A page opens one session and one stream: a connection that keeps opening others (each answered or reset
        at a cost, outside the session's request rate) is closed past STRAY_LIMIT."""
        self.strays += 1
        if self.strays > STRAY_LIMIT and not self.closed:
            self.server.strays_closed += 1
            log.info("browser connection from %s closed: %d requests and streams a page never opens", self.peer,
                     self.strays, extra={"address": self.peer})
            self.close_connection(ERROR_REFUSED, "too many stray requests and streams")

    def close_connection(self, code: int, reason: str) -> None:
        if not self.closed:
            self._quic.close(error_code=code, reason_phrase=reason)
            if self._quic._network_paths:      # none before its first packet was read: nothing to send to
                self.transmit()
            self._terminated()

    def _terminated(self) -> None:
        if self.closed:
            return
        self.closed = True
        for handler in list(self.sessions.values()):
            handler.close(1001, "connection closed")
        self.sessions.clear()
        if self.peer is not None:
            self.server.release(self.peer, self)
            self.peer = None


class StunGate:
    """Answers STUN binding requests within a rate per address and a rate in all."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.total = TokenBucket(STUN_TOTAL_RATE, STUN_TOTAL_BURST, clock=clock)
        self.by_address: dict[str, TokenBucket] = {}
        self.answered = 0
        self.refused = 0

    def answer(self, data: bytes, host: str, port: int) -> bytes | None:
        bucket = self.by_address.get(host)
        if bucket is None:
            if len(self.by_address) >= STUN_ADDRESSES:
                del self.by_address[next(iter(self.by_address))]
            bucket = self.by_address[host] = TokenBucket(STUN_RATE, STUN_BURST, clock=self.clock)
        if not bucket.try_take() or not self.total.try_take():
            self.refused += 1
            return None
        answer = binding_answer(data, host, port)
        if answer is not None:
            self.answered += 1
        return answer


class _Server(QuicServer):
    """aioquic's server, with STUN datagrams answered before QUIC parses anything."""

    def __init__(self, *, stun: StunGate, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.stun = stun

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        if isinstance(data, bytes) and is_stun(data):
            answer = self.stun.answer(data, str(addr[0]), int(addr[1]))
            if answer is not None and self._transport is not None:
                self._transport.sendto(answer, addr)
            return
        super().datagram_received(data, addr)


class WebTransportServer:
    """Listens on UDP `host:port`; `new_session` makes the handler of each page's session."""

    def __init__(self, host: str, port: int, path: str, certificate: Certificate, new_session: NewSession, *,
                 max_per_address: int, max_per_subnet: int, max_total: int) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.new_session = new_session
        self.connections = Shares(max_per_address, max_per_subnet, max_total)
        self._by_network: dict[str, dict[WebTransportProtocol, float]] = {}     # each /24's connections: opened at
        self.evicted = 0
        self.strays_closed = 0             # connections closed for opening what a page never opens
        self.refused: dict[str, int] = {}
        self._warned = -WARN_EVERY
        self._server: QuicServer | None = None
        self.stun = StunGate()
        self.configuration = QuicConfiguration(alpn_protocols=H3_ALPN, is_client=False,
                                               max_datagram_frame_size=MAX_DATAGRAM_FRAME, idle_timeout=IDLE_TIMEOUT)
        self.use_certificate(certificate)

    def use_certificate(self, certificate: Certificate) -> None:
        """Serve `certificate` to every connection made from now on."""
        self.configuration.certificate = x509.load_der_x509_certificate(certificate.der)
        self.configuration.certificate_chain = []
        self.configuration.private_key = cast(ec.EllipticCurvePrivateKey,
                                              serialization.load_pem_private_key(certificate.key_pem, None))

    def admit(self, peer: str, connection: "WebTransportProtocol") -> Scope | None:
        """None when a connection from `peer` may be held (counted), else the cap it is over. With every slot
        taken, a newcomer within its own shares makes room: the oldest connection of the most crowded network that
        holds more than the newcomer's would with it is closed (as the API's and the peers' guards do), so a few
        networks holding every slot cannot lock the rest out."""
        scope = self.connections.over_share(peer)
        if scope is None and self.connections.over(peer) == "total" and not self._make_room(peer):
            scope = "total"
        if scope is None:
            self.connections.add(peer)
            self._by_network.setdefault(subnet_of(peer), {})[connection] = time.monotonic()
        else:
            name = cap_name(scope)
            self.refused[name] = self.refused.get(name, 0) + 1
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY:
                self._warned = now
                log.warning("browser connection refused: %s over its cap (%d %s); %d refused so far",
                            peer, self.connections.cap(scope), scope_words(scope), sum(self.refused.values()),
                            extra={"address": peer, "reason": f"browser_{name}"})
        return scope

    def release(self, peer: str, connection: "WebTransportProtocol") -> None:
        self.connections.remove(peer)
        network = subnet_of(peer)
        held = self._by_network.get(network)
        if held is not None:
            held.pop(connection, None)
            if not held:
                del self._by_network[network]

    def _make_room(self, peer: str) -> bool:
        mine = self.connections.by_subnet.get(subnet_of(peer), 0) + 1
        network, held = max(self.connections.by_subnet.items(), key=lambda item: item[1], default=("", 0))
        connections = self._by_network.get(network)
        if held <= mine or not connections:
            return False
        victim = min(connections, key=connections.__getitem__)
        self.evicted += 1
        log.info("browser connection from %s evicted for a newcomer from %s: its network %s held %d of %d",
                 victim.peer, peer, network, held, self.connections.total, extra={"address": victim.peer})
        victim.close_connection(ERROR_REFUSED, "evicted: its network held the most browser connections")
        return self.connections.over(peer) is None

    async def start(self) -> None:
        def protocol(*args: object, **kwargs: object) -> QuicConnectionProtocol:
            return WebTransportProtocol(*args, server=self, **kwargs)

        loop = asyncio.get_running_loop()
        _, server = await loop.create_datagram_endpoint(
            lambda: _Server(stun=self.stun, configuration=self.configuration, create_protocol=protocol, retry=True),
            local_addr=(self.host, self.port))
        self._server = server
        transport = cast(asyncio.DatagramTransport, self._server._transport)
        self.port = transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            for proto in set(server._protocols.values()):
                if isinstance(proto, WebTransportProtocol):
                    proto.close_connection(0, "node stopping")
            server.close()
