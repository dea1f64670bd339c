"""Peer exchange: connected peers share bounded lists of peers they have verified by handshake.

On every new link, and then periodically (every `fast_interval` for the first `fast_period`
seconds, `slow_interval` after that), a node sends each peer a `peerexchange` message: at most 50
`[host, port, node_id]` entries of peers it holds links to or handshook with recently, never the
receiver itself. When our own set of links changes we also send sooner - at most once per
`min_gap` per link, and only entries that peer has not heard from us yet. Messages are
link-local (never relayed).

What we receive goes into the address book as *unverified* (source "pex"), guarded against
poisoning in layers: a receive rate limit per link (excess messages are dropped and cost the
sender penalty points), the book's per-reporter intake cap per interval, its size cap, unverified
entries never evicting verified ones, and addresses we cannot dial skipped (only IP literals;
loopback addresses only from a peer that is itself on loopback).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from p2p.messages import Message
from p2p import messages as m
from p2p.address_book import AddressBook, dialable
from p2p.admission import netgroup
from p2p.discovery.base import Candidate, CandidateSink, DiscoveryStrategy, StrategyStats, StrategyView
from p2p.peer_hooks import PeerHooks, proven_id
from p2p.resilience.token_bucket import TokenBucket

if TYPE_CHECKING:
    from p2p.connection import PeerLink
    from p2p.peers import PeerRecord

log = logging.getLogger("p2p.discovery.pex")

MSG_TYPE = "peerexchange"
MAX_ENTRIES = 50
MAX_CLAIMED = MAX_ENTRIES // 4      # of them, addresses linked peers claim that nobody here has dialled


def _is_entry(v: Any) -> bool:
    return (type(v) is list and len(v) == 3 and type(v[0]) is str and 0 < len(v[0]) <= 253
            and type(v[1]) is int and 0 <= v[1] <= 65535 and (v[2] is None or m.is_node_id(v[2])))


PEX_SCHEMAS: m.SchemaTable = {MSG_TYPE: m.schema({"peers": m.is_list(MAX_ENTRIES, _is_entry)})}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _same_host(remote_addr: tuple[str, int] | None, host: str) -> bool:
    """Whether a link came from `host` (an IPv4 client of a dual-stack listener as its IPv4 address)."""
    if not remote_addr:
        return False
    try:
        came_from, named = ipaddress.ip_address(remote_addr[0]), ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(came_from, ipaddress.IPv6Address) and came_from.ipv4_mapped is not None:
        came_from = came_from.ipv4_mapped
    return came_from == named


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PexView(StrategyView):
    sent: int
    received: int
    dropped: int
    skipped: int


@dataclass(slots=True)
class PexStats(StrategyStats):
    sent: int = 0
    received: int = 0
    dropped: int = 0  # messages over a link's receive rate
    skipped: int = 0  # entries not taken (ourselves, undialable, over a cap, already known)

    def as_dict(self) -> PexView:
        return {**StrategyStats.as_dict(self), "sent": self.sent, "received": self.received,
                "dropped": self.dropped, "skipped": self.skipped}


# [host, port, node id] as on the wire; `receive` checks each field before the book sees it
PexEntry = list[Any]

class _LinkState:
    __slots__ = ("last_sent", "sent_version", "bucket", "told")

    def __init__(self, recv_rate: float, recv_burst: float) -> None:
        self.last_sent = float("-inf")
        self.sent_version = -1
        self.told: set[tuple[Any, ...]] = set()  # entries this peer already has from us
        self.bucket = TokenBucket(recv_rate, recv_burst)


class PexPeers(Protocol):
    """What peer exchange needs of the PeerManager: its links and peer table, the address book, candidates
    and penalties, and where a linked node listens."""

    @property
    def node_id(self) -> str: ...
    @property
    def links(self) -> Mapping[str, PeerLink]: ...
    @property
    def peers(self) -> Mapping[str, PeerRecord]: ...
    @property
    def book(self) -> AddressBook: ...

    def add_candidate(self, candidate: Candidate, *, reporter: str | None = None,
                      reporter_group: str | None = None) -> bool: ...

    def penalize(self, node_id: str, points: float, reason: str) -> None: ...

    def _listen_address(self, link: PeerLink) -> tuple[str, int] | None: ...


class PeerExchange(DiscoveryStrategy):
    """Runs on a PeerManager: registers its link-local handler and open/close listeners."""

    name = "pex"

    def __init__(self, peers: PexPeers, *, fast_interval: float = 2.0, fast_period: float = 30.0,
                 slow_interval: float = 30.0, min_gap: float = 1.0, recv_rate: float = 1.0,
                 recv_burst: float = 5.0, recent: float = 600.0, excess_penalty: float = 2.0,
                 rng: random.Random | None = None, unreachable: Callable[[str], bool] | None = None) -> None:
        super().__init__()
        self.stats: PexStats = PexStats()
        self.peers = peers
        self.fast_interval = fast_interval
        self.fast_period = fast_period
        self.slow_interval = slow_interval
        self.min_gap = min_gap
        self.recv_rate = recv_rate
        self.recv_burst = recv_burst
        self.recent = recent
        self.excess_penalty = excess_penalty
        self._rng = rng or random.Random()
        self._unreachable = unreachable or (lambda node_id: False)   # peers that say a dial-back failed
        self._links: dict[int, _LinkState] = {}  # by id(link)
        self._version = 0  # bumped whenever our set of links changes
        self._started = time.monotonic()

    def peer_hooks(self) -> PeerHooks:
        """Address lists on links; each link's exchange starts when it opens."""
        return PeerHooks("pex", schemas=PEX_SCHEMAS, handlers={MSG_TYPE: self._on_message},
                         on_open=(self._on_open,), on_close=(self._on_close,))

    # --- building what we send --------------------------------------------------------------
    def entries_for(self, link: PeerLink) -> list[PexEntry]:
        """At most 50 peers: those linked at an address we dialled first, then those we verified recently, then a
        few (MAX_CLAIMED) linked at an address only they claim, a port at the IP their link came from (a node that
        is only ever dialled is still passed on, but inbound peers' claims cannot make up what we advertise, nor
        name a host they did not come from, which would aim everyone's dials at it); never the receiver itself nor a
        peer that says nobody can dial it (it is reached through its relays); loopback addresses only for a
        receiver on loopback."""
        receiver_id = proven_id(link)
        receiver_addr = self.peers._listen_address(link)
        loopback_ok = _is_loopback(link.remote_addr[0] if link.remote_addr else None)
        seen_ids: set[str] = {receiver_id, self.peers.node_id}
        seen_addrs: set[tuple[str, int]] = {receiver_addr} if receiver_addr else set()

        def usable(host: str, port: int, node_id: str | None) -> bool:
            if node_id in seen_ids or (host, port) in seen_addrs or not port:
                return False
            return dialable(host, port, allow_loopback=loopback_ok)

        live: list[PexEntry] = []
        claimed: list[PexEntry] = []
        for node_id, other in list(self.peers.links.items()):
            record = self.peers.peers.get(node_id)
            if record is None or not usable(record.host, record.port, node_id) or self._unreachable(node_id):
                continue
            known = self.peers.book.get((record.host, record.port))
            if known is not None and known.verified:
                live.append([record.host, record.port, node_id])
            elif _same_host(other.remote_addr, record.host):
                claimed.append([record.host, record.port, node_id])
            else:       # a host it names but did not come from: passed on, it would aim others' dials anywhere
                continue
            seen_ids.add(node_id)
            seen_addrs.add((record.host, record.port))
        self._rng.shuffle(live)
        self._rng.shuffle(claimed)
        if len(live) >= MAX_ENTRIES:
            return live[:MAX_ENTRIES]
        cutoff = time.time() - self.recent
        past: list[PexEntry] = []
        for entry in self.peers.book.verified():
            if (entry.last_connected or 0) < cutoff or not usable(entry.host, entry.port, entry.node_id):
                continue
            if entry.node_id:
                seen_ids.add(entry.node_id)
            seen_addrs.add(entry.address)
            past.append([entry.host, entry.port, entry.node_id])
        self._rng.shuffle(past)
        return (live + past + claimed[:MAX_CLAIMED])[:MAX_ENTRIES]

    def send_to(self, link: PeerLink, *, now: float | None = None, only_new: bool = False) -> bool:
        """Send our sample; `only_new` (a send driven by a change of our links) leaves out what
        this peer already heard from us, and sends nothing if that is everything."""
        state = self._links.get(id(link))
        if state is None or not link.is_open:
            return False
        entries = self.entries_for(link)
        state.sent_version = self._version
        if only_new:
            entries = [e for e in entries if tuple(e) not in state.told]
            if not entries:
                return False  # nothing new: the periodic send stays on its schedule
        state.last_sent = time.monotonic() if now is None else now
        if not entries:
            return False
        if len(state.told) > 4 * MAX_ENTRIES * MAX_ENTRIES:
            state.told.clear()
        state.told.update(tuple(e) for e in entries)
        ok = link.send({"type": MSG_TYPE, "peers": entries})
        if ok:
            self.stats.sent += 1
        return ok

    # --- PeerManager hooks ------------------------------------------------------------------
    def _on_open(self, link: PeerLink) -> None:
        self._links[id(link)] = _LinkState(self.recv_rate, self.recv_burst)
        self._version += 1
        self.send_to(link)

    def _on_close(self, link: PeerLink) -> None:
        self._links.pop(id(link), None)
        self._version += 1

    def _on_message(self, link: PeerLink, message: Message) -> None:
        state = self._links.get(id(link))
        if state is None:
            return
        if not state.bucket.try_take():
            self.stats.dropped += 1
            if link.remote_id and self.excess_penalty:
                self.peers.penalize(link.remote_id, self.excess_penalty, "peerexchange flood")
            return
        self.stats.received += 1
        remote_host = link.remote_addr[0] if link.remote_addr else None
        self.receive(link.remote_id, message["peers"], loopback_ok=_is_loopback(remote_host),
                     reporter_group=netgroup(remote_host) if remote_host else None)

    def receive(self, reporter: str | None, entries: list[PexEntry], *, loopback_ok: bool,
                reporter_group: str | None = None) -> int:
        """Offer entries to the book as unverified; returns how many addresses were new."""
        added = 0
        own_id = self.peers.node_id
        for host, port, node_id in entries[:MAX_ENTRIES]:
            # IP literals only: a hostname from a peer would make us resolve whatever it likes.
            if (node_id == own_id or node_id == reporter or not _is_ip(host)
                    or not dialable(host, port, allow_loopback=loopback_ok)):
                self.stats.skipped += 1
                continue
            if self.peers.add_candidate(Candidate(host, port, self.name, node_id), reporter=reporter,
                                        reporter_group=reporter_group):
                added += 1
            else:
                self.stats.skipped += 1
        self.stats.found += added
        return added

    # --- the periodic loop ------------------------------------------------------------------
    def interval(self, now: float) -> float:
        return self.fast_interval if now - self._started < self.fast_period else self.slow_interval

    def tick(self, now: float | None = None) -> int:
        """Send to every link that is due: its interval passed, or our links changed and its min gap passed."""
        now = time.monotonic() if now is None else now
        interval = self.interval(now)
        sent = 0
        for link in list(self.peers.links.values()):
            state = self._links.get(id(link))
            if state is None:
                continue
            since = now - state.last_sent
            if since >= interval:
                sent += self.send_to(link, now=now)
            elif state.sent_version != self._version and since >= self.min_gap:
                sent += self.send_to(link, now=now, only_new=True)
        return sent

    async def run(self, sink: CandidateSink) -> None:
        self._started = time.monotonic()
        step = min(0.5, self.min_gap, self.fast_interval)
        while True:
            await asyncio.sleep(step)
            try:
                self.tick()
            except Exception as exc:  # never let one bad tick stop peer exchange
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self.stats.last_error_at = time.time()
                log.exception("peer exchange tick failed")
