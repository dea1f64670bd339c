"""BrowserService: the node's side of browser peers. Runs the WebTransport endpoint, rotates its
certificate, answers each page's session (protocol.py) from the node's chain, stream and links, and tells
linked peers (hello and heartbeat field `browser`) where pages may dial us and with which certificate hashes,
so a page that reached one node learns the others.

A page that cannot dial a node (behind a NAT) reaches it over WebRTC (rtc.py): it sends its offer to a node it
is linked to (`rtc_offer`), which carries it over its peer link to that node (`browser_rtc_offer`) and the
answer back (`browser_rtc_answer`). Nodes that take such offers say so in hellos and heartbeats
(`browser_rtc`: [1 when dial-backs say nobody can reach us, else 0]).

What a browser may not do is what it is never given: it gets no link in the peer manager (so it holds no
peer slot, routes nothing and is never handed out by peer exchange or the DHT), and it cannot vote or relay.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exchange.app.results import TxResult
from exchange.app.txs import InvalidTx, SignedTx
from exchange.chain.types.blocks import Block
from exchange.chain.types.codec import pack
from exchange.chain.ports import NotReady
from exchange.chain.service import ChainService
from node.api.base import Json, JsonObject
from node.browser import cert_store
from node.browser.certs import CertRotation, Certificate, usable_kept
from node.browser.config import BrowserConfig
from node.browser.endpoints import Endpoint, dht_entry, endpoint_of_record, parse_endpoint, url_of
from node.browser.protocol import CLOSE_IDLE, SESSION_IDLE, SUBMIT_WAIT, BrowserSession, LineTransport, SessionPipe
from node.browser.rtc import RtcEndpoint, RtcRefused
from node.browser.server import SessionHandler, WebTransportServer
from node.marketdata.server import StreamServer
from node.marketdata.session import StreamSession
from node.metrics import labelled_counter
from p2p import messages as m
from p2p.dht.records import NodeRecord
from p2p.messages import Message
from p2p.peer_hooks import PeerHooks, proven_id
from p2p.peers import PeerManager
from p2p.public.sources import host_of, subnet_of
from storage import StorageError

if TYPE_CHECKING:
    from p2p.connection import PeerLink

log = logging.getLogger("node.browser")

FIELD = "browser"                 # the hello and heartbeat field naming our endpoint
ANNOUNCE_AFTER_CHANGE = 600.0     # s heartbeats repeat our endpoint after it changed
MAX_NODES = 32                    # endpoints a page is told of at once
SEND_BUFFER = 1024 * 1024         # bytes a page may leave unread before it is cut off (as a slow /ws client)
RTC_FIELD = "browser_rtc"         # the hello and heartbeat field of a node that takes WebRTC offers
RTC_OFFER, RTC_ANSWER = "browser_rtc_offer", "browser_rtc_answer"
RTC_WAIT = 12.0                   # s a page's relayed offer waits for the node's answer
RTC_WAITING = 64                  # relayed offers waiting for an answer at once, in all ...
RTC_WAITING_PER_ADDRESS = 8       # ... from one page's address (a session carries up to 4 at once) ...
RTC_WAITING_PER_SUBNET = 16       # ... from one /24 (IPv4) or /48 (IPv6) ...
RTC_WAITING_PER_NODE = 16         # ... and to one node (a linked node that never answers holds its places 12 s each)
MAX_SDP = 16384
MAX_PROOFS = 256                  # epoch proofs a page is sent (one per validator-set change)
RTC_SCHEMAS: m.SchemaTable = {
    RTC_OFFER: m.schema({"id": m.is_int(), "sdp": m.is_str(MAX_SDP), "stun_port": m.is_int(0, 65535),
                         "page": m.is_str(64)}),
    RTC_ANSWER: m.schema({"id": m.is_int()}, {"sdp": m.is_str(MAX_SDP), "error": m.is_list(2, m.is_str(300))}),
}


class _Session(SessionHandler):
    def __init__(self, session: BrowserSession) -> None:
        self.session = session

    def data_received(self, data: bytes) -> None:
        self.session.data_received(data)

    def close(self, code: int, reason: str) -> None:
        self.session.close(code, reason)


class BrowserService:
    """The endpoint, its certificates, the sessions, and what linked peers told us of theirs."""

    def __init__(self, config: BrowserConfig, *, node_id: str, public_key: bytes, sign: Callable[[bytes], bytes],
                 network_id: str, chain: ChainService, peers: PeerManager, markets: Callable[[], list[str]],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.node_id = node_id
        self.public_key = public_key
        self._sign = sign
        self.network_id = network_id
        self.chain = chain
        self.peers = peers
        self.markets = markets
        self.clock = clock
        self.stream: StreamServer | None = None          # the operator surface's, set before start
        self.rotation: CertRotation | None = None
        self.server: WebTransportServer | None = None
        self.sessions: set[BrowserSession] = set()
        self.following: set[BrowserSession] = set()
        self.endpoints: dict[str, Endpoint] = {}        # linked peers' endpoints
        self.counters = {"sessions_opened": 0, "submitted": 0, "rotations": 0, "idle_closed": 0}
        self.records: Callable[[], Iterable[NodeRecord]] = lambda: ()   # checked DHT records we hold (the DHT's)
        self._tasks: list[asyncio.Task[None]] = []
        self._changed_at = time.monotonic()       # when what we announce last changed
        self.rtc = RtcEndpoint(self._new_session, enabled=config.webrtc)
        self.private: Callable[[], bool] = lambda: False      # dial-backs say nobody can reach us (NAT traversal's)
        self.rtc_peers: dict[str, bool] = {}      # linked peers taking WebRTC offers -> whether they are private
        self._rtc_waiting: dict[int, tuple[str, asyncio.Future[JsonObject]]] = {}
        self._rtc_held: Counter[str] = Counter()  # waiting offers by page address, page network and node asked
        self._rtc_next = 0
        self._rtc_tasks: set[asyncio.Task[None]] = set()

    # --- links: where peers' endpoints are --------------------------------------------------------
    def peer_hooks(self) -> PeerHooks:
        return PeerHooks(owner="browser", schemas=RTC_SCHEMAS,
                         handlers={RTC_OFFER: self._on_rtc_offer, RTC_ANSWER: self._on_rtc_answer},
                         on_open=(self._heard_link,), on_close=(self._link_closed,),
                         on_heartbeat=(self._heard,), hello_fields=(self._field, self._rtc_field),
                         heartbeat_fields=(self._heartbeat_field, self._rtc_field))

    def _rtc_field(self) -> dict[str, Any]:
        """Whether we take pages' WebRTC offers, and whether we are private (pages then should not dial us)."""
        if not self.rtc.available or self.server is None:
            return {}
        return {RTC_FIELD: [1 if self.private() else 0]}

    def _heartbeat_field(self) -> dict[str, Any]:
        """Heartbeats repeat what hellos said only for a while after it changed (a link opened just before the
        endpoint started, a renewal): a link otherwise learns it once."""
        if time.monotonic() - self._changed_at > ANNOUNCE_AFTER_CHANGE:
            return {}
        return self._field()

    def _field(self) -> dict[str, Any]:
        if self.server is None or self.rotation is None:
            return {}
        return {FIELD: [self.server.port, self.config.path,
                        [[c.sha256.hex(), int(c.not_after * 1000)] for c in self.rotation.published()]]}

    def dht_entries(self) -> tuple[str, ...]:
        """What our DHT record's services list adds: our endpoint and its certificates' hashes."""
        if self.server is None or self.rotation is None:
            return ()
        entry = dht_entry(self.server.port, self.config.path, [c.sha256 for c in self.rotation.published()])
        return () if entry is None else (entry,)

    def _heard_link(self, link: "PeerLink") -> None:
        if link.remote_hello is not None:
            self._heard(link, link.remote_hello)

    def _heard(self, link: "PeerLink", message: Message) -> None:
        rtc = message.get(RTC_FIELD)
        if type(rtc) is list and len(rtc) == 1 and rtc[0] in (0, 1):
            self.rtc_peers[proven_id(link)] = rtc[0] == 1
        if FIELD not in message or link.remote_addr is None or getattr(link, "via", None):
            return
        endpoint = parse_endpoint(message[FIELD], link.remote_addr[0])
        if endpoint is not None:
            self.endpoints[proven_id(link)] = endpoint

    def _link_closed(self, link: "PeerLink") -> None:
        self.endpoints.pop(proven_id(link), None)
        self.rtc_peers.pop(proven_id(link), None)

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self, peer_port: int) -> None:
        config = self.config
        hosts = tuple(dict.fromkeys(h for h in (config.public_host, "127.0.0.1") if h))
        kept = [] if self._kept_at is None else usable_kept(cert_store.load(self._kept_at), hosts, self.clock())
        self.rotation = CertRotation(self.clock(), hosts=hosts, kept=kept)
        self._keep_certificates()
        port = peer_port if config.port is None else config.port
        self.server = WebTransportServer(config.host, port, config.path, self.rotation.current, self._new_session,
                                         max_per_address=config.max_per_address, max_per_subnet=config.max_per_subnet,
                                         max_total=config.max_sessions)
        try:
            await self.server.start()
        except OSError as exc:
            if config.port is not None:
                raise
            log.warning("browser endpoint: UDP port %d is taken (%s); listening on an ephemeral port", port, exc)
            self.server.port = 0
            await self.server.start()
        self._changed_at = time.monotonic()
        self.chain.block_listeners.append(self._on_block)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._rotate()), loop.create_task(self._sweep())]
        log.info("browsers may dial %s (certificate sha256 %s)", self.url, self.rotation.current.sha256.hex())
        if self.rtc.available:
            log.info("browsers that cannot dial us may reach us over WebRTC, their offers relayed by a node they reach")
        else:
            log.warning("WebRTC for browsers is unavailable: %s", self.rtc.why)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._on_block in self.chain.block_listeners:
            self.chain.block_listeners.remove(self._on_block)
        for session in list(self.sessions):
            session.close(1001, "node stopping")
        for task in list(self._rtc_tasks):
            task.cancel()
        await self.rtc.stop()
        if self.server is not None:
            await self.server.stop()

    async def _rotate(self) -> None:
        """Renew the certificate when its time comes (CertRotation says when)."""
        rotation, server = self.rotation, self.server
        assert rotation is not None and server is not None
        while True:
            await asyncio.sleep(min(rotation.due_in(self.clock()), 3600.0) + 1.0)
            served = rotation.current
            if rotation.tick(self.clock()):
                self.counters["rotations"] += 1
                self._changed_at = time.monotonic()
                if rotation.current is not served:
                    server.use_certificate(rotation.current)
                self._keep_certificates()
                log.info("browser certificate renewed: publishing %s",
                         ", ".join(c.sha256.hex()[:16] for c in rotation.published()))

    @property
    def _kept_at(self) -> Path | None:
        return None if self.config.data_dir is None else self.config.data_dir / cert_store.FILE_NAME

    def _keep_certificates(self) -> None:
        """Keep what is served and published, so a restart serves the same hashes (a failure costs only that)."""
        if self._kept_at is None or self.rotation is None:
            return
        try:
            cert_store.save(self._kept_at, self.rotation.published())
        except OSError as exc:
            log.warning("browser endpoint: cannot keep its certificates in %s (%s): a restart will make new ones",
                        self._kept_at, exc)

    async def _sweep(self) -> None:
        """Close the sessions of pages gone without a word (no request for SESSION_IDLE s)."""
        while True:
            await asyncio.sleep(SESSION_IDLE / 4)
            now = time.monotonic()
            for session in [s for s in self.sessions if s.idle(now)]:
                self.counters["idle_closed"] += 1
                session.close(CLOSE_IDLE, f"no request for {SESSION_IDLE:g} s")

    @property
    def url(self) -> str | None:
        return None if self.server is None else url_of(self.config.public_host, self.server.port, self.config.path)

    # --- sessions -----------------------------------------------------------------------------------
    def _new_session(self, pipe: SessionPipe, cert_sha256: bytes, peer: str) -> SessionHandler:
        transport = LineTransport(pipe.write, pipe.buffered, pipe.abort)
        holder: list[BrowserSession] = []
        stream = StreamSession(transport, SEND_BUFFER, peer=peer,
                               on_closed=lambda _s, reason: holder[0].close(1001, reason) if holder else None)
        session = BrowserSession(self, stream, cert_sha256, peer=peer,
                                 close=lambda code, reason: self._closed(holder[0], pipe, code, reason))
        holder.append(session)
        self.sessions.add(session)
        self.counters["sessions_opened"] += 1
        return _Session(session)

    def _closed(self, session: BrowserSession, pipe: SessionPipe, code: int, reason: str) -> None:
        self.sessions.discard(session)
        self.following.discard(session)
        if session.stream.closing is None:
            session.stream.close(code, reason)
        pipe.abort()

    # --- NodeSide: what a session asks ---------------------------------------------------------------
    def identity(self) -> JsonObject:
        core = self.chain.core
        return {"node_id": self.node_id, "public_key": self.public_key.hex(), "network": self.network_id,
                "chain_id": None if core is None else core.chain_id, "height": 0 if core is None else core.height,
                "markets": self.markets()}

    def sign(self, data: bytes) -> bytes:
        return self._sign(data)

    def stream_request(self, session: StreamSession, text: str) -> None:
        if self.stream is None:
            raise RuntimeError("no market-data stream on this node")
        self.stream.on_request(session, text)

    def stream_closed(self, session: StreamSession) -> None:
        stream = self.stream
        if stream is not None:
            for sub in list(session.subscriptions.values()):
                stream.subscriptions_by_source.remove(sub.session.peer)
                stream.feed.unsubscribe(sub)
            session.subscriptions.clear()

    def follow_headers(self, session: BrowserSession, on: bool) -> None:
        if on:
            self.following.add(session)
        else:
            self.following.discard(session)

    def nodes(self) -> list[JsonObject]:
        """Linked peers' endpoints (with when each certificate ends), then those of DHT records we hold (the
        record names no expiry: 0), at most MAX_NODES, never our own."""
        now_ms = int(self.clock() * 1000)
        known: dict[str, Endpoint] = {node_id: e for node_id, e in self.endpoints.items()
                                      if any(t > now_ms for _, t in e.certs)}
        for record in self.records():
            if len(known) >= MAX_NODES:
                break
            if record.node_id not in known and record.node_id != self.node_id and record.live(now_ms):
                endpoint = endpoint_of_record(record)
                if endpoint is not None:
                    known[record.node_id] = endpoint
        return [{"node_id": node_id, "webtransport": url_of(e.host, e.port, e.path),
                 "cert_sha256": [h for h, _ in e.certs], "cert_expires_ms": [t for _, t in e.certs],
                 "webrtc": node_id in self.rtc_peers, "direct": not self.rtc_peers.get(node_id, False)}
                for node_id, e in list(known.items())[:MAX_NODES]]

    # --- WebRTC offers: relayed for pages, answered for them ------------------------------------------------
    async def rtc_offer(self, to: str, sdp: str, page: str) -> JsonObject:
        """Carry a page's offer to linked node `to` and bring its answer back (or why not)."""
        link = self.peers.links.get(to)
        if link is None or to not in self.rtc_peers or self.server is None:
            return {"error": {"code": "not_linked", "msg": "this node holds no link to that node, or it takes no "
                              "WebRTC offers"}}
        if len(self._rtc_waiting) >= RTC_WAITING:
            return {"error": {"code": "busy", "msg": f"{RTC_WAITING} offers are waiting for answers here"}}
        shares = (("address:" + host_of(page), RTC_WAITING_PER_ADDRESS), ("subnet:" + subnet_of(page),
                  RTC_WAITING_PER_SUBNET), ("node:" + to, RTC_WAITING_PER_NODE))
        for key, most in shares:
            if self._rtc_held[key] >= most:
                return {"error": {"code": "busy", "msg": f"{most} offers of this {key.split(':')[0]} are waiting for "
                                  f"answers here"}}
        for key, _ in shares:
            self._rtc_held[key] += 1
        self._rtc_next += 1
        rid = self._rtc_next
        future: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._rtc_waiting[rid] = (to, future)
        try:
            if not link.send({"type": RTC_OFFER, "id": rid, "sdp": sdp, "stun_port": self.server.port, "page": page}):
                return {"error": {"code": "not_linked", "msg": "the link to that node is closing"}}
            return await asyncio.wait_for(future, RTC_WAIT)
        except asyncio.TimeoutError:
            return {"error": {"code": "timeout", "msg": f"that node did not answer within {RTC_WAIT:g} s"}}
        finally:
            self._rtc_waiting.pop(rid, None)
            for key, _ in shares:
                self._rtc_held[key] -= 1
                if not self._rtc_held[key]:
                    del self._rtc_held[key]

    def _on_rtc_offer(self, link: "PeerLink", message: Message) -> None:
        task = asyncio.get_running_loop().create_task(self._answer_offer(link, message))
        self._rtc_tasks.add(task)
        task.add_done_callback(self._rtc_tasks.discard)

    async def _answer_offer(self, link: "PeerLink", message: Message) -> None:
        host = None if link.remote_addr is None else str(link.remote_addr[0])
        literal = f"[{host}]" if host and ":" in host else host
        stun = f"stun:{literal}:{message['stun_port']}" if host and message["stun_port"] else None
        try:
            sdp = await self.rtc.answer(message["sdp"], stun=stun, relay=proven_id(link), page=message["page"])
        except RtcRefused as exc:
            link.send({"type": RTC_ANSWER, "id": message["id"], "error": [exc.code, str(exc)[:300]]})
            return
        except Exception as exc:  # noqa: BLE001 - a bug of ours on a peer's offer: it hears so, the node goes on
            log.warning("browser WebRTC offer relayed by %s failed: %s: %s", proven_id(link), type(exc).__name__, exc)
            link.send({"type": RTC_ANSWER, "id": message["id"], "error": ["internal", "the node could not answer"]})
            return
        link.send({"type": RTC_ANSWER, "id": message["id"], "sdp": sdp})

    def _on_rtc_answer(self, link: "PeerLink", message: Message) -> None:
        waiting = self._rtc_waiting.get(message["id"])
        if waiting is None or waiting[0] != proven_id(link) or waiting[1].done():
            return
        error = message.get("error")
        if error is not None and len(error) == 2:
            waiting[1].set_result({"error": {"code": error[0], "msg": error[1]}})
        elif isinstance(message.get("sdp"), str):
            waiting[1].set_result({"sdp": message["sdp"]})
        else:
            waiting[1].set_result({"error": {"code": "bad_answer", "msg": "that node sent no answer"}})

    async def submit(self, signed: Json) -> JsonObject:
        chain = self.chain
        try:
            tx = SignedTx.from_json(signed)
        except InvalidTx as exc:
            return _error(exc.code, str(exc))
        core = chain.core
        if core is not None and core.intake.refuses_own(tx.account, len(tx.ops)):
            return _error("account_rate", "this account submits faster than the chain takes")
        if not tx.signature_valid():
            return _error("bad_signature", "the signature does not verify for this account and these bytes")
        order_ids = [tx.order_id(i) for i in range(len(tx.ops))]
        self.counters["submitted"] += 1
        try:
            why, future = await chain.submissions.submit(tx)
        except NotReady as exc:
            return _error(exc.code, str(exc))
        except StorageError as exc:
            return _error("storage", f"this node cannot write its outbox: {exc}")
        if why is not None and why != "duplicate":
            return _error(why, f"refused: {why}") | {"tx_id": tx.id}
        result = await chain.submissions.wait(future, SUBMIT_WAIT)
        if why == "duplicate" and future.done() and result is None:     # sent again: a final block holds it
            return {"tx_id": tx.id, "order_ids": order_ids, "final": True, "status": "duplicate"}
        if not isinstance(result, TxResult):
            return {"tx_id": tx.id, "order_ids": order_ids, "final": False}
        return {"tx_id": tx.id, "order_ids": order_ids, "final": True, "status": result.status,
                "ops": [op.to_dict() for op in result.ops], "height": 0 if chain.core is None else chain.core.height}

    def chain_proofs(self) -> JsonObject:
        """The genesis document and the epoch proofs, as the light routes serve them: what a page checks headers
        against (it follows the validator set from the genesis, whose hash is the chain id)."""
        store = self.chain.store
        genesis = store.load_genesis()
        if genesis is None:
            return {"error": {"code": "no_chain_yet", "msg": "this node has not joined or founded a chain yet"}}
        return {"chain_id": genesis.chain_id, "genesis": _b64(genesis.wire()),
                "proofs": [_b64([block.wire(), commit.wire()]) for block, commit in store.epoch_proofs()[:MAX_PROOFS]]}

    def _on_block(self, block: Block, _result: object) -> None:
        """Headers go out after what the block settled: the answers to submissions it made final (their waiters
        were woken before listeners run) leave first."""
        if self.following:
            asyncio.get_running_loop().call_soon(self._send_header, block)

    def _send_header(self, block: Block) -> None:
        if not self.following:
            return
        h = block.header
        event: JsonObject = {"event": "header", "height": h.height, "id": h.id.hex(), "time_ms": h.time_ms,
                             "prev_id": h.prev_id.hex(), "app_hash": h.app_hash.hex(), "proposer": h.proposer.hex(),
                             "txs": len(block.txs), "header": _b64(h.wire())}
        core = self.chain.core
        commit = None if core is None else core.last_commit          # the newest applied block's, usually this one
        if commit is None or commit.height != h.height or commit.block_id != h.id:
            stored = self.chain.store.get(h.height)        # saved before listeners hear of it: with its commit
            commit = stored[1] if stored is not None and stored[0].id == h.id else None
        if commit is not None:
            event["commit"] = _b64(commit.wire())
        for session in list(self.following):
            session.send(dict(event))

    # --- observability ------------------------------------------------------------------------------
    def status(self) -> JsonObject | None:
        server, rotation = self.server, self.rotation
        if server is None or rotation is None:
            return None
        published: list[Certificate] = rotation.published()
        return {"webtransport": self.url, "cert_sha256": [c.sha256.hex() for c in published],
                "cert_expires_ms": [int(c.not_after * 1000) for c in published],
                "sessions": len(self.sessions), "connections": server.connections.held,
                "limits": {"per_address": self.config.max_per_address, "per_subnet": self.config.max_per_subnet,
                           "total": self.config.max_sessions},
                "refused": dict(server.refused), "evicted": server.evicted, "strays_closed": server.strays_closed,
                "peers_with_endpoint": len(self.endpoints), "webrtc": self.rtc.status() | {"linked": [
                    {"node_id": node_id, "direct": not private}
                    for node_id, private in list(self.rtc_peers.items())[:MAX_NODES]]},
                **self.counters}


    def metrics(self) -> Iterator[Metric]:
        """For /metrics: sessions and connections now, refusals by cap, submissions and renewals."""
        server = self.server
        yield GaugeMetricFamily("exchange_node_browser_sessions", "Browser sessions open (WebTransport)",
                                value=len(self.sessions))
        yield GaugeMetricFamily("exchange_node_browser_connections", "Browser QUIC connections held",
                                value=0 if server is None else server.connections.held)
        yield labelled_counter("exchange_node_browser_refused_total", "Browser connections refused, by the cap they hit",
                               "cap", {} if server is None else server.refused)
        yield CounterMetricFamily("exchange_node_browser_evicted_total", "Browser connections closed to make room for a "
                                  "newcomer from a less crowded network", value=0 if server is None else server.evicted)
        yield CounterMetricFamily("exchange_node_browser_submitted_total", "Transactions browsers submitted",
                                  value=self.counters["submitted"])
        yield CounterMetricFamily("exchange_node_browser_cert_rotations_total",
                                  "Changes of the browser endpoint's certificates", value=self.counters["rotations"])


def _b64(value: object) -> str:
    return base64.b64encode(pack(value)).decode()


def _error(code: str, message: str) -> JsonObject:
    return {"final": False, "error": {"code": code, "msg": message}}
