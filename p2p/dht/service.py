"""The DHT carried over the node's links: the driver of p2p/dht's sans-I/O parts.

Two RPC services every node serves over its Noise links: `dht.find` {target, service?} answers with the
contacts its table holds closest to the target, and the record it keeps for that id (or the providers of
`service`); `dht.store` {record} keeps a peer's signed record (checked, bounded per peer). The routing table
is fed from the links the node already has. A lookup asks the nodes its `Lookup` names, dialling the ones
it is not linked to (the handshake proves each is the node it claims to be: an address from the DHT is
only a hint). Every node publishes its own record on the k nodes closest to its id, and on those closest to
each service it serves, at start (again 5, 20 and 60 s later, as its table fills) and every
`republish` seconds. As a discovery strategy it also walks
random ids now and then and hands what it meets to the address book (source `dht`, unverified until
dialled). A node that dial-backs say nobody can reach runs in client mode (`mode`): it looks up and
publishes but serves neither service, and servers neither hand it out as a contact nor query it.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Protocol

from p2p.address_book import dialable
from p2p.admission import netgroup
from p2p.connection import Direction
from p2p.dht.dialing import DIALLED, HINT, OBSERVED, AddressHints, DialPacer, Paced
from p2p.dht.ids import ID_HEX, key_for
from p2p.dht.lookup import Lookup, Query
from p2p.dht.records import Address, NodeIdFor, NodeRecord, RecordError, RecordStore, Sign, Verify, provided
from p2p.dht.table import K, Contact, RoutingTable
from p2p.discovery.base import Candidate, CandidateSink, DiscoveryStrategy, StrategyStats, StrategyView
from p2p.peer_hooks import PeerHooks
from p2p.rpc import errors as e
from p2p.rpc.server import Handler
from p2p.rpc.wire import Payload
from p2p.transport import DialError

if TYPE_CHECKING:
    from p2p.connection import PeerLink

log = logging.getLogger("p2p.dht")

EARLY_REPUBLISH = (5.0, 20.0, 60.0)      # s between a new node's first publications, then `republish`
FIND = "dht.find"
STORE = "dht.store"
PROTOCOL = 2
MAX_SERVICE = 128


class DhtLink(Protocol):
    """What the DHT reads of a link: whose it is, and the address its bytes come from."""

    @property
    def remote_id(self) -> str | None: ...
    @property
    def remote_addr(self) -> tuple[str, int] | None: ...


class DhtPeers(Protocol):
    """What the DHT needs of the PeerManager: whom it is linked to, where a linked node listens, and a dial."""

    @property
    def node_id(self) -> str: ...
    @property
    def links(self) -> Mapping[str, DhtLink]: ...

    def listen_address(self, link: PeerLink) -> tuple[str, int] | None: ...

    async def dial(self, host: str, port: int, source: str = "manual") -> DhtLink: ...


class DhtRpc(Protocol):
    def register(self, service: str, handler: Handler) -> None: ...

    def request_peer(self, node_id: str, service: str, payload: Payload = None,
                     timeout: float | None = None) -> Awaitable[Payload]: ...


class DhtStatsView(StrategyView):
    lookups: int
    found_records: int
    queries: int
    failed_queries: int
    bad_answers: int
    published: int
    publications: int
    refused_as_client: int
    skipped_clients: int
    providers_linked: int
    lookup_hops: dict[str, int]        # node lookups by hops taken


class DhtView(DhtStatsView):
    node_id: str
    mode: str                          # "server" or "client"
    contacts: int
    buckets: list[tuple[int, int]]
    records: int
    services: int
    refused: dict[str, int]            # contacts and records turned away, by reason


@dataclass(slots=True)
class DhtStats(StrategyStats):
    lookups: int = 0
    found: int = 0
    queries: int = 0
    failed_queries: int = 0
    bad_answers: int = 0
    published: int = 0          # copies of our record other nodes took
    publications: int = 0       # rounds of publishing done
    refused_as_client: int = 0  # queries and stores we turned away in client mode
    skipped_clients: int = 0    # lookup steps not sent to a peer that says it is a client
    providers_linked: int = 0   # links made so an RPC call found a provider no linked peer was
    lookup_hops: dict[int, int] = field(default_factory=dict)   # node lookups that went to the network, by hops

    def as_dict(self) -> DhtStatsView:
        return {
            **StrategyStats.as_dict(self), "lookups": self.lookups, "found_records": self.found, "queries": self.queries,
            "failed_queries": self.failed_queries, "bad_answers": self.bad_answers, "published": self.published,
            "publications": self.publications, "refused_as_client": self.refused_as_client,
            "skipped_clients": self.skipped_clients, "providers_linked": self.providers_linked,
            "lookup_hops": {str(h): n for h, n in sorted(self.lookup_hops.items())}}


class DhtService(DiscoveryStrategy):
    name = "dht"

    def __init__(self, peers: DhtPeers, rpc: DhtRpc, *, public_key: bytes, sign: Sign, verify: Verify,
                 node_id_for: NodeIdFor, services: Callable[[], tuple[str, ...]],
                 addresses: Callable[[], tuple[Address, ...]], k: int = K, query_timeout: float = 2.0,
                 record_ttl: float = 3600.0, republish: float = 600.0, walk_interval: float = 30.0,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 relay_dial: Callable[[str, int, str], Awaitable[DhtLink]] | None = None,
                 private: Callable[[], bool] = lambda: False,
                 peer_private: Callable[[str], bool] = lambda node_id: False, limit_loopback: bool = False) -> None:
        super().__init__()
        self._private = private              # dial-backs say nobody can reach us: client mode
        self._peer_private = peer_private    # a peer says nobody can reach it: a client, never a contact
        self._relay_dial = relay_dial        # (relay host, relay port, target) -> a link through that relay
        self.stats: DhtStats = DhtStats()
        self.peers = peers
        self.rpc = rpc
        self.node_id = peers.node_id
        self.public_key = public_key
        self._sign = sign
        self._verify = verify
        self._node_id_for = node_id_for
        self._services = services
        self._addresses = addresses
        self.k = k
        self.query_timeout = query_timeout
        self.record_ttl = record_ttl
        self.republish = republish
        self.walk_interval = walk_interval
        self.clock = clock
        self.rng = rng or random.Random()
        self.table = RoutingTable(self.node_id, k=k, limit_loopback=limit_loopback)
        self.store = RecordStore(credit_ms=int(record_ttl * 1000), limit_loopback=limit_loopback)
        self._known = AddressHints(max_age=record_ttl)      # node id -> where to dial it
        self._pacer = DialPacer(limit_loopback=limit_loopback)
        self._seq = int(clock() * 1000)                     # a restarted node's records outrank its old ones
        rpc.register(FIND, self._serve_find)
        rpc.register(STORE, self._serve_store)

    def peer_hooks(self) -> PeerHooks:
        """The routing table follows links (its own queries travel as RPC)."""
        return PeerHooks("dht", on_open=(self._on_open,), on_close=(self._on_close,))

    # --- the table, from links ------------------------------------------------------------------------
    def _on_open(self, link: PeerLink) -> None:
        node_id = link.remote_id
        address, rank = self._link_address(link)
        if not node_id or address is None or not link.remote_addr:
            return
        now = self.clock()
        self._known.learn(node_id, address[0], address[1], now, rank)
        contact = Contact(node_id, address[0], address[1], netgroup(link.remote_addr[0]))
        if self.table.add(contact, now) == "updated" and rank == DIALLED:
            self.table.readdress(node_id, address[0], address[1])

    def _link_address(self, link: PeerLink) -> tuple[tuple[str, int] | None, int]:
        """Where a linked node can be dialled, and how we know: the address we dialled (proven by the
        handshake), else the IP its link came from with the port its hello names (a hello's host is a claim
        anyone can make: believed, it would send everyone who asks us to dial a host of the sender's choice)."""
        claimed = self.peers.listen_address(link)
        if claimed is None or not link.remote_addr:
            return None, HINT
        if link.direction == Direction.OUTBOUND and link.dial_address == claimed:
            return claimed, DIALLED
        observed = (link.remote_addr[0], claimed[1])
        return (observed, OBSERVED) if dialable(*observed) else (None, HINT)

    def _on_close(self, link: PeerLink) -> None:
        """A link closed: the contact stays (Kademlia keeps nodes that are merely not linked now)."""

    # --- serving ----------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """`server` while others can dial us; `client` behind a NAT nobody can dial (as libp2p's kad-dht):
        we look up and publish our record but answer no queries and hold nobody's records, and servers
        leave us out of the contacts they hand out, so no lookup waits on a node it cannot reach."""
        return "client" if self._private() else "server"

    def _refuse_as_client(self) -> None:
        if self._private():
            self.stats.refused_as_client += 1
            raise e.RpcError(e.UNAVAILABLE, "dht client mode: this node cannot be dialled, ask a server")

    def _contacts(self, target: str) -> list[list[Any]]:
        """The contacts we hand out: neither clients nor any whose last query or dial failed."""
        return [[c.node_id, c.host, c.port] for c in self.table.closest(target, self.k + 8)
                if c.port and not c.failures and not self._peer_private(c.node_id)][:self.k]

    def _serve_find(self, payload: Any, peer: str) -> dict[str, Any]:
        self._refuse_as_client()
        if not isinstance(payload, dict) or type(payload.get("target")) is not str \
                or len(payload["target"]) != ID_HEX:
            raise e.RpcError(e.BAD_REQUEST, "target must be a node id")
        target = payload["target"]
        try:
            int(target, 16)
        except ValueError:
            raise e.RpcError(e.BAD_REQUEST, "target must be hex") from None
        now_ms = int(self.clock() * 1000)
        answer: dict[str, Any] = {"contacts": self._contacts(target)}
        service = payload.get("service")
        if service is not None:
            if type(service) is not str or not 0 < len(service) <= MAX_SERVICE:
                raise e.RpcError(e.BAD_REQUEST, "service must be a name")
            answer["providers"] = [r.wire() for r in self.store.providers_of(service, now_ms)][:self.k]
        record = self.own_record() if target == self.node_id else self.store.get(target, now_ms)
        if record is not None:
            answer["record"] = record.wire()
        return answer

    def _serve_store(self, payload: Any, peer: str) -> dict[str, Any]:
        self._refuse_as_client()
        try:
            record = NodeRecord.from_wire(payload.get("record") if isinstance(payload, dict) else None)
            record.check(self._verify, self._node_id_for)
        except RecordError as exc:
            self.stats.bad_answers += 1
            raise e.RpcError(e.BAD_REQUEST, f"record refused: {exc}") from None
        why = self.store.put(record, peer, int(self.clock() * 1000), self._source_of(peer))
        return {"ok": why is None, "error": why}

    def _source_of(self, peer: str) -> str | None:
        """The IP a linked peer's request came from (a relayed link's names its relay), for the store's quotas."""
        link = self.peers.links.get(peer)
        remote = None if link is None else link.remote_addr
        return remote[0] if remote else None

    # --- our own record -----------------------------------------------------------------------------------
    def own_record(self) -> NodeRecord:
        now = self.clock()
        return NodeRecord.create(self.public_key, self._sign, self._node_id_for, addresses=self._addresses(),
                                 services=self._services()[:32], protocol=PROTOCOL, seq=self._seq,
                                 expires_ms=int((now + self.record_ttl) * 1000))

    async def publish(self) -> int:
        """Store our record on the k nodes closest to our id and to each service we serve; how many took it."""
        self._seq = max(self._seq + 1, int(self.clock() * 1000))
        record = self.own_record()
        searches = await asyncio.gather(*(self._lookup(target, want_value=False)
                                          for target in [self.node_id, *(key_for(s) for s in provided(record.services))]))
        holders = {node_id for search in searches for node_id in search.closest()}
        stored = sum(await asyncio.gather(*(self._store(node_id, record) for node_id in holders)))
        self.stats.publications += 1
        return stored

    async def _store(self, node_id: str, record: NodeRecord) -> bool:
        try:
            answer = await self.rpc.request_peer(node_id, STORE, {"record": record.wire()}, self.query_timeout)
        except (e.RpcError, asyncio.TimeoutError, OSError):
            return False
        ok = isinstance(answer, dict) and answer.get("ok") is True
        self.stats.published += ok
        return ok

    # --- lookups -------------------------------------------------------------------------------------------
    async def find_node(self, node_id: str, *, link: bool = False, fresh: bool = False) -> NodeRecord | None:
        """The newest valid record of `node_id` the DHT holds (None: not found); with `link`, then a link to
        it (dialled at the record's addresses, the handshake proving the node; best effort). With `fresh`,
        the network is asked even when a copy is kept here (what do the nodes near the id hold now?)."""
        self.stats.lookups += 1
        now_ms = int(self.clock() * 1000)
        record = self.own_record() if node_id == self.node_id else None if fresh else self.store.get(node_id, now_ms)
        if record is None and node_id != self.node_id:     # not among the records kept here: ask the network
            search = await self._lookup(node_id, want_value=True)
            record = search.value if isinstance(search.value, NodeRecord) else None
            if record is not None:
                self.stats.lookup_hops[search.hops] = self.stats.lookup_hops.get(search.hops, 0) + 1
        if record is None or not record.live(now_ms):
            return None
        self.stats.found += 1
        if link and record.node_id not in self.peers.links:
            await self._link_to(record)
        return record

    async def _link_to(self, record: NodeRecord) -> None:
        """Dial the record's own addresses first, then through the relays it names (a node behind NAT)."""
        ordered = sorted(record.addresses, key=lambda a: a[2] == "relayed")
        for host, port, how in ordered:
            if record.node_id in self.peers.links:
                return
            if not dialable(host, port):
                continue
            relayed = how == "relayed"
            if relayed and self._relay_dial is None:
                continue
            if self._pacer.allow(host, port, self.clock()) is not None:
                continue
            if not relayed:
                self._known.learn(record.node_id, host, port, self.clock())
            try:
                dialling = (self._relay_dial(host, port, record.node_id) if relayed and self._relay_dial is not None
                            else self.peers.dial(host, port, source=self.name))
                link = await asyncio.wait_for(dialling, 2 * self.query_timeout if relayed else self.query_timeout)
            except (DialError, asyncio.TimeoutError, OSError) as exc:
                log.info("could not link to %s at %s:%d: %s", record.node_id[:12], host, port, exc)
                self._pacer.result(host, port, False, self.clock())
                continue
            reached = link.remote_id == record.node_id
            self._pacer.result(host, port, reached, self.clock())
            if reached:
                return

    async def link_provider(self, service: str, timeout: float) -> bool:
        """For the RPC layer (`ProviderFinder`): link to some live provider of `service`, trying them in a
        random order; whether we are now linked to one."""
        async def search() -> bool:
            providers = [r for r in await self.find_providers(service) if r.node_id != self.node_id]
            self.rng.shuffle(providers)
            for record in providers[:4]:
                if record.node_id not in self.peers.links:
                    await self._link_to(record)
                if record.node_id in self.peers.links:
                    self.stats.providers_linked += 1
                    return True
            return False
        try:
            return await asyncio.wait_for(search(), timeout)
        except asyncio.TimeoutError:
            return False

    async def find_providers(self, service: str) -> list[NodeRecord]:
        """Live records of nodes that serve `service`, from the nodes closest to its key."""
        self.stats.lookups += 1
        found: dict[str, NodeRecord] = {}
        await self._lookup(key_for(service), want_value=False, service=service, providers=found)
        return sorted(found.values(), key=lambda r: r.node_id)

    async def _lookup(self, target: str, *, want_value: bool, service: str | None = None,
                      providers: dict[str, NodeRecord] | None = None) -> Lookup[NodeRecord]:
        seeds = [c.node_id for c in self.table.closest(target, self.k + 8)
                 if not self._peer_private(c.node_id)][:self.k]
        search: Lookup[NodeRecord] = Lookup(target, seeds, k=self.k, want_value=want_value,
                                            exclude=frozenset({self.node_id}))
        while not search.done:
            queries = search.next_queries()
            if not queries:
                break
            await asyncio.gather(*(self._ask(search, q, target, service, providers) for q in queries))
        return search

    async def _ask(self, search: Lookup[NodeRecord], query: Query, target: str, service: str | None,
                   providers: dict[str, NodeRecord] | None) -> None:
        if self._peer_private(query.node_id):       # a client answers nothing: do not wait on it
            self.stats.skipped_clients += 1
            search.failed(query)
            return
        self.stats.queries += 1
        payload: dict[str, Any] = {"target": target}
        if service is not None:
            payload["service"] = service
        try:
            await self._ensure_link(query.node_id)
            answer = await self.rpc.request_peer(query.node_id, FIND, payload, self.query_timeout)
            contacts, record = self._read_answer(answer, target, service, providers)
        except Paced as exc:                        # not tried: no fault of the node's
            log.debug("dht query to %s not sent: %s", query.node_id[:12], exc)
            search.failed(query)
            return
        except (e.RpcError, asyncio.TimeoutError, OSError, RecordError, ValueError, DialError) as exc:
            self.stats.failed_queries += 1
            log.debug("dht query to %s failed: %s", query.node_id[:12], exc)
            if self.table.failed(query.node_id, self.clock()):
                self._known.forget(query.node_id)
            search.failed(query)
            return
        self.table.touch(query.node_id, self.clock())
        search.answered(query, contacts, record)

    async def _ensure_link(self, node_id: str) -> None:
        """Link to `node_id` at the address held for it, within the dial pace; an address that failed is
        forgotten unless we met the node there before (another answer may know a better one)."""
        if node_id in self.peers.links:
            return
        address = self._known.get(node_id, self.clock())
        contact = self.table.get(node_id)
        if address is None and contact is not None and contact.port:
            address = (contact.host, contact.port)
        if address is None:
            raise ValueError("no address for it")
        why = self._pacer.allow(address[0], address[1], self.clock())
        if why is not None:
            raise Paced(why)
        reached = False
        try:
            link = await asyncio.wait_for(self.peers.dial(address[0], address[1], source=self.name),
                                          self.query_timeout)
            reached = link.remote_id == node_id
        except DialError:
            reached = node_id in self.peers.links   # it dialled us at the same moment: one link, whichever won
            if not reached:
                raise
        finally:
            self._pacer.result(address[0], address[1], reached, self.clock())
            if not reached and not self._known.dialled(node_id):
                self._known.forget(node_id)
        if not reached:
            raise ValueError("the address led to another node")

    def _read_answer(self, answer: Any, target: str, service: str | None,
                     providers: dict[str, NodeRecord] | None) -> tuple[list[str], NodeRecord | None]:
        if not isinstance(answer, dict) or type(answer.get("contacts")) is not list:
            raise ValueError("not a dht answer")
        contacts: list[str] = []
        for item in answer["contacts"][:self.k]:
            if type(item) is list and len(item) == 3 and type(item[0]) is str and len(item[0]) == ID_HEX \
                    and type(item[1]) is str and type(item[2]) is int and dialable(item[1], item[2]):
                contacts.append(item[0])
                if item[0] != self.node_id:
                    self._known.learn(item[0], item[1], item[2], self.clock())
        record = None
        if answer.get("record") is not None:
            record = self._checked(answer["record"])
            if record.node_id != target:
                raise RecordError("a record for another id")
        if service is not None and providers is not None:
            for wire in (answer.get("providers") or [])[:self.k]:
                provider = self._checked(wire)
                if service in provider.services:
                    known = providers.get(provider.node_id)
                    if known is None or known.seq < provider.seq:
                        providers[provider.node_id] = provider
        return contacts, record

    def _checked(self, wire: Any) -> NodeRecord:
        try:
            record = NodeRecord.from_wire(wire)
            record.check(self._verify, self._node_id_for)
        except RecordError:
            self.stats.bad_answers += 1
            raise
        return record

    # --- as a discovery strategy -------------------------------------------------------------------------
    async def run(self, sink: CandidateSink) -> None:
        await asyncio.sleep(1.0)
        next_publish = next_walk = 0.0
        early = list(EARLY_REPUBLISH)       # a young node's first copies went to the few nodes it knew then
        while True:
            if not len(self.table):             # nobody to ask yet: look again in a second
                await asyncio.sleep(1.0)
                continue
            try:
                if time.monotonic() >= next_publish:
                    await self.publish()
                    next_publish = time.monotonic() + (early.pop(0) if early else self.republish)
                if time.monotonic() >= next_walk:
                    await self._walk(sink)
                    next_walk = time.monotonic() + self.walk_interval * (0.5 + self.rng.random())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - discovery never stops on one bad round
                self.stats.last_error, self.stats.last_error_at = f"{type(exc).__name__}: {exc}", time.time()
                log.warning("dht round failed: %s", exc)
                next_walk = time.monotonic() + self.walk_interval
            await asyncio.sleep(max(0.1, min(next_publish, next_walk) - time.monotonic()))

    async def _walk(self, sink: CandidateSink) -> None:
        """Look up a random id and hand the nodes met that we are not linked to to the address book."""
        search = await self._lookup(f"{self.rng.getrandbits(160):040x}", want_value=False)
        for node_id in search.closest():
            address = self._known.get(node_id, self.clock())
            if address is not None and node_id not in self.peers.links:
                sink(Candidate(address[0], address[1], self.name, node_id))

    def view(self) -> DhtView:
        return {"node_id": self.node_id, "mode": self.mode, "contacts": len(self.table), "buckets": self.table.buckets(),
                "records": len(self.store.nodes), "services": len(self.store.providers),
                "refused": {**self.table.refused, **self.store.refused, **self._pacer.refused}, **self.stats.as_dict()}
