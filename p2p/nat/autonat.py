"""AutoNAT-style reachability: peers tell us where they see us, and a few of them dial us back there.

Client: whenever a checkable address of ours (see p2p/nat/self_addresses.py) has not been checked
lately, ask up to `fanout` linked peers that see us at that very host (their hello's `observed_host`)
- peers outside our own /24 first, each in a different /24 - to dial it back (`autonat.request`,
naming the host); each answers `autonat.response` with what its dial found and the IP it dialled.
An answer counts for the host asked about only when that IP is the host: a server dials the IP its
link sees, so a peer that sees us elsewhere says nothing about this host. SelfAddresses turns the
answers into `reachability`.

Server: a dial-back goes only to the address the request came from (the link's remote IP) at the
port asked for, never to an IP the requester names (a request naming another host is refused), so
nobody can aim our dials at a third party (the amplification libp2p's AutoNAT v2 charges for with
extra bytes: we simply refuse it). The
requester pays a request; we pay one TCP connect and a Noise handshake that closes at once
(ProbeLink). Requests are limited per peer (one per `per_peer_interval`), per /24 (a token bucket)
and globally (`max_concurrent` dial-backs at once); what is over a limit is answered `refused` and
costs nobody points, since an honest node may ask again after restarts.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from p2p.messages import Message
from p2p import messages as m
from p2p.admission import netgroup
from p2p.connection import PeerLink
from p2p.nat.self_addresses import MAX_OUTSIDE_GROUPS, AddressesView, OwnAddress, Reachability, SelfAddresses
from p2p.peer_hooks import PeerHooks
from p2p.resilience.token_bucket import TokenBucket
from p2p.transport import DialError

if TYPE_CHECKING:
    from p2p.peers import PeerManager

log = logging.getLogger("p2p.nat.autonat")

REQUEST, RESPONSE = "autonat.request", "autonat.response"
NONCE_BYTES = 8
AUTONAT_SCHEMAS: m.SchemaTable = {     # `host` is optional: nodes without it neither send nor check it
    REQUEST: m.schema({"nonce": m.is_bytes(NONCE_BYTES, NONCE_BYTES), "port": m.is_int(1, 65535)},
                      {"host": m.is_str(64)}),
    RESPONSE: m.schema({"nonce": m.is_bytes(NONCE_BYTES, NONCE_BYTES), "status": m.is_str(16)},
                       {"reason": m.is_str(64), "host": m.is_str(64)}),
}
OK, FAILED, REFUSED = "ok", "failed", "refused"


def local_group(link: PeerLink) -> str:
    """The /24 of our own end of this link."""
    transport = link.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return netgroup(sockname[0]) if sockname else "?"


def remote_group(link: PeerLink) -> str:
    return netgroup(link.remote_addr[0]) if link.remote_addr else "?"


def local_host(link: PeerLink) -> str | None:
    """Our own IP on a direct link (None over a relay)."""
    transport = link.transport
    sockname = transport.get_extra_info("sockname") if link.via is None and transport is not None else None
    return str(sockname[0]) if sockname else None


def sees_us_at(link: PeerLink) -> str | None:
    """The host this peer's hello says it sees us at: the IP it would dial back."""
    host = (link.remote_hello or {}).get("observed_host")
    return host if isinstance(host, str) and link.via is None else None


class Question(NamedTuple):
    host: str
    port: int
    server: str                      # the node asked
    group: str                       # its /24
    outside: bool                    # it is not in our own /24
    at: float


class AutonatStatus(AddressesView):
    counters: dict[str, int]
    asking: int                      # dial-backs we asked for and wait on


class AutoNat:
    def __init__(self, peers: "PeerManager", *, fanout: int = 3, recheck: float = 300.0, retry: float = 5.0,
                 recheck_failed: float = 15.0,
                 answer_timeout: float = 10.0, dial_timeout: float = 5.0, per_peer_interval: float = 10.0,
                 per_group_rate: float = 0.5, per_group_burst: float = 4.0, max_concurrent: int = 4) -> None:
        self.peers = peers
        self.addresses = SelfAddresses()
        self.fanout = fanout
        self.recheck = recheck
        self.recheck_failed = recheck_failed
        self.retry = retry
        self.answer_timeout = answer_timeout
        self.dial_timeout = dial_timeout
        self.per_peer_interval = per_peer_interval
        self.per_group_rate, self.per_group_burst = per_group_rate, per_group_burst
        self.max_concurrent = max_concurrent
        self.reachability_listeners: list[Callable[[Reachability], None]] = []
        self._asked: dict[bytes, Question] = {}
        # checkable address -> the /24s asked about it since it was last due (at most MAX_OUTSIDE_GROUPS a round)
        self._round: dict[tuple[str, int], set[str]] = {}
        self._served_at: dict[str, float] = {}          # requester node id -> when we last dialled it back
        self._group_buckets: dict[str, TokenBucket] = {}
        self._serving = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: Reachability = Reachability.UNKNOWN
        self.counters = {"asked": 0, "answers_ok": 0, "answers_failed": 0, "answers_refused": 0,
                         "answers_other_host": 0, "served": 0, "served_ok": 0, "refused": 0}

    def peer_hooks(self) -> PeerHooks:
        """Dial-back requests and answers; each new link may be asked; heartbeats say our reachability."""
        return PeerHooks("autonat", schemas=AUTONAT_SCHEMAS,
                         handlers={REQUEST: self._on_request, RESPONSE: self._on_response},
                         on_open=(self._on_open,), heartbeat_fields=(lambda: {"reachability": str(self.reachability)},))

    @property
    def reachability(self) -> Reachability:
        return self.addresses.reachability

    def wake(self) -> None:
        """Check addresses now (a new mapping, say) rather than at the next round."""
        self._wake.set()

    # --- client -----------------------------------------------------------------------------
    def _on_open(self, link: PeerLink) -> None:
        host = sees_us_at(link)
        self.addresses.listen_port = self.peers.listen_port
        if host is not None and self.addresses.observed(host, remote_group(link), local_group(link),
                                                        local=host == local_host(link)) is not None:
            self._wake.set()
            self._changed()         # a new observer can change what we believe (a host turns candidate, say)

    def _servers(self, host: str, skip_groups: Collection[str] = (), outside_only: bool = False) -> list[PeerLink]:
        """Linked peers to ask about `host`: only those that see us there (a server dials the IP its link sees),
        outside our /24 first, one per /24 (none from `skip_groups`), freshest links last (they are the
        likeliest to be new nodes that came to us)."""
        chosen: list[PeerLink] = []
        groups: set[str] = set(skip_groups)
        links = sorted((lk for lk in self.peers.links.values() if sees_us_at(lk) == host),
                       key=lambda lk: (remote_group(lk) == local_group(lk), lk.opened_at or 0.0))
        for link in links:
            group = remote_group(link)
            if group not in groups and not (outside_only and group == local_group(link)):
                groups.add(group)
                chosen.append(link)
        return chosen[:self.fanout]

    def ask(self) -> int:
        """Send the checks due now; while an address being checked has no verdict, ask each outside /24 that
        links and has not been asked about it since it was due at once (up to `fanout` questions out), not at
        the due pace: a NATed node whose first witness failed just after a second linked was otherwise neither
        private nor relayed until its failed recheck. A /24 that refused or never answered waits for the next
        round like the rest (`_to_ask`). The number of requests sent."""
        sent = 0
        now = time.time()
        pending: dict[tuple[str, int], set[str]] = {}
        for question in self._asked.values():
            pending.setdefault((question.host, question.port), set()).add(question.group)
        due = {(a.host, a.port) for a in self.addresses.to_check(self.recheck, now, failed_after=self.recheck_failed)}
        checkable = self.addresses.checkable()
        keys = {(a.host, a.port) for a in checkable}
        self._round = {key: groups for key, groups in self._round.items() if key in keys}
        for address in checkable:
            key = (address.host, address.port)
            for link in self._to_ask(address, pending.get(key, set()), key in due):
                nonce = secrets.token_bytes(NONCE_BYTES)
                group = remote_group(link)
                if link.send({"type": REQUEST, "nonce": nonce, "port": address.port, "host": address.host}):
                    self._asked[nonce] = Question(address.host, address.port, link.remote_id or "?", group,
                                                  group != local_group(link), now)
                    self._round[key].add(group)      # _to_ask started or went on with the round
                    self.counters["asked"] += 1
                    sent += 1
        return sent

    def _to_ask(self, address: OwnAddress, asking: set[str], due: bool) -> list[PeerLink]:
        """Whom to ask about `address` now (`asking`: the /24s whose questions are out), starting or going on
        with its round in `_round`."""
        key = (address.host, address.port)
        if due and not asking:
            # an address nobody has answered for is due at every look: its round goes on past the /24s that
            # stayed silent or refused, and starts over once every linked /24 (or MAX_OUTSIDE_GROUPS) was asked
            asked = self._round.get(key, set()) if not address.answers else set()
            if len(asked) >= MAX_OUTSIDE_GROUPS:
                asked = set()
            servers = self._servers(address.host, asked)
            if not servers and asked:
                asked, servers = set(), self._servers(address.host)
            self._round[key] = asked
            return servers
        round_asked = self._round.get(key)
        if round_asked is None or len(round_asked) >= MAX_OUTSIDE_GROUPS or not address.undecided():
            return []
        return self._servers(address.host, asking | round_asked | address.answered_by(),
                             outside_only=True)[:max(0, self.fanout - len(asking))]

    def _on_response(self, link: PeerLink, message: Message) -> None:
        asked = self._asked.pop(message["nonce"], None)
        if asked is None or asked.server != link.remote_id:
            return          # not ours, or not from whom we asked: ignored
        status = message["status"]
        if status == REFUSED or status not in (OK, FAILED):
            self.counters["answers_refused"] += 1
            return
        if not self._dialled_what_we_asked(link, asked, message):
            self.counters["answers_other_host"] += 1
            return
        self.counters["answers_ok" if status == OK else "answers_failed"] += 1
        self.addresses.answered(asked.host, asked.port, status == OK, asked.server, asked.outside, asked.group)
        self._changed()
        if status == FAILED:
            self._wake.set()        # too few failures for a verdict: another /24 may be asked now (ask)

    @staticmethod
    def _dialled_what_we_asked(link: PeerLink, asked: Question, message: Message) -> bool:
        """The server dialled the host we asked about: it says so (`host`), or, from a server that does not
        say, its link sees us there (what such a server dials)."""
        said = message.get("host")
        dialled = said if isinstance(said, str) else sees_us_at(link)
        return dialled == asked.host

    def _expire_questions(self) -> None:
        cutoff = time.time() - self.answer_timeout
        for nonce in [n for n, q in self._asked.items() if q.at < cutoff]:
            del self._asked[nonce]

    def _changed(self) -> None:
        now = self.reachability
        if now != self._last:
            log.info("reachability %s -> %s (%s)", self._last, now,
                     ", ".join(f"{a.host}:{a.port} {'ok' if a.confirmed else 'not reached'}"
                               for a in self.addresses.addresses.values()))
            self._last = now
            for listener in self.reachability_listeners:
                listener(now)

    async def run(self) -> None:
        """Check new addresses soon, retry unanswered ones every `retry` s, failed ones after `recheck_failed` s
        (doubling while they keep failing), confirmed ones every `recheck` s."""
        while True:
            self._wake.clear()
            self._expire_questions()
            self.addresses.listen_port = self.peers.listen_port
            self.ask()
            try:
                async with asyncio.timeout(self.retry):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # --- server -----------------------------------------------------------------------------
    def _refusal(self, link: PeerLink) -> str | None:
        now = time.monotonic()
        requester = link.remote_id or ""
        if now - self._served_at.get(requester, float("-inf")) < self.per_peer_interval:
            return "too_soon"
        group = remote_group(link)
        bucket = self._group_buckets.get(group)
        if bucket is None:
            if len(self._group_buckets) > 4096:
                self._group_buckets.clear()
            bucket = self._group_buckets[group] = TokenBucket(self.per_group_rate, self.per_group_burst)
        if self._serving >= self.max_concurrent:
            return "busy"
        if not bucket.try_take():
            return "subnet_busy"
        if len(self._served_at) > 4096:
            self._served_at = {k: v for k, v in self._served_at.items() if now - v < self.per_peer_interval}
        self._served_at[requester] = now
        return None

    def _request_refusal(self, link: PeerLink, message: Message) -> str | None:
        """Why not to serve this request: no IP to dial, a host other than the one our link sees (we dial only
        that IP, so we could say nothing of another), or a limit."""
        if not link.remote_addr or link.via is not None:
            return "no_address"
        if message.get("host", link.remote_addr[0]) != link.remote_addr[0]:
            return "other_host"
        return self._refusal(link)

    def _on_request(self, link: PeerLink, message: Message) -> None:
        reason = self._request_refusal(link, message)
        if reason is not None:
            self.counters["refused"] += 1
            link.send({"type": RESPONSE, "nonce": message["nonce"], "status": REFUSED, "reason": reason})
            return
        assert link.remote_addr is not None
        self._serving += 1
        task = asyncio.create_task(self._dial_back(link, link.remote_addr[0], message["port"], message["nonce"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial_back(self, link: PeerLink, host: str, port: int, nonce: bytes) -> None:
        self.counters["served"] += 1
        try:
            reached = await self.peers.transport.probe(host, port, self.dial_timeout)
            status, reason = (OK, "") if reached == link.remote_id else (FAILED, "another_node")
        except DialError as exc:
            status, reason = FAILED, str(exc.reason)[:64]
        except Exception as exc:  # noqa: BLE001 - a dial-back task must never die silently
            self.peers.internal_errors.report("autonat.dial_back", exc)
            status, reason = FAILED, "internal_error"
        finally:
            self._serving -= 1
        if status == OK:
            self.counters["served_ok"] += 1
        reply: dict[str, Any] = {"type": RESPONSE, "nonce": nonce, "status": status, "host": host}
        if reason:
            reply["reason"] = reason
        link.send(reply)

    # --- lifecycle and status -----------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="autonat")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> AutonatStatus:
        return {**self.addresses.as_dict(), "counters": dict(self.counters), "asking": len(self._asked)}
