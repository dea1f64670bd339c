"""Hole punching (DCUtR in spirit): two nodes linked through a relay open a direct TCP link by dialling
each other at the same moment.

The side that accepted the relayed link starts: it binds a fresh port and sends `holepunch.connect`
with the hosts believed its own (p2p/nat/self_addresses.py candidates) and that port; the other binds
its own and answers the same way.
The starter measures that round trip, sends `holepunch.sync` and dials half a round trip later, when
the sync has reached the other side, which dials at once. Both SYNs leave together, each NAT sees its
own host's SYN go out first and lets the other's in as its reply, and the kernel joins the two into
one connection (TCP simultaneous open). Each side also listens on its punch port, so where no NAT
stands in the way the first SYN is simply accepted; either way there is one connection, and the Noise
roles are fixed by node id (the smaller id initiates) whoever dialled. Only the node we punch to is
kept: the Noise-proven id of anything else that connects to the punch port closes it.

That works through NATs that keep a socket's port for every destination (endpoint-independent
mapping, as Linux masquerade and most home routers do) and fails through symmetric NATs, which give
each destination its own port: those pairs stay on the relay. The direct link then replaces the
relayed one: PeerManager ranks a direct link above a relayed one on both ends.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, TypedDict

from p2p.messages import Message
from p2p import messages as m
from p2p.close_reason import CloseReason
from p2p.connection import Direction, PeerLink
from p2p.nat.self_addresses import SelfAddresses

if TYPE_CHECKING:
    from p2p.peers import PeerManager

log = logging.getLogger("p2p.nat.holepunch")

CONNECT, SYNC = "holepunch.connect", "holepunch.sync"
MAX_ADDRS = 8
ATTEMPTS = 3
DIAL_TIMEOUT = 4.0
MAX_DIALS = 4                 # addresses of the other side dialled at once, from the same punch port
REDIAL_GAP = 0.2              # s between SYNs to one address: a lying peer can aim at most ~20 per address per try
MAX_OPEN_ATTEMPTS = 64        # punch ports held for others' attempts at once


def _is_address(v: Any) -> bool:
    return (type(v) is list and len(v) == 2 and type(v[0]) is str and 0 < len(v[0]) <= 64
            and type(v[1]) is int and 0 < v[1] < 65536)


HOLEPUNCH_SCHEMAS: m.SchemaTable = {
    CONNECT: m.schema({"addrs": m.is_list(MAX_ADDRS, _is_address), "attempt": m.is_int(0, ATTEMPTS)}),
    SYNC: m.schema({"attempt": m.is_int(0, ATTEMPTS)}),
}


class HolePunchStatus(TypedDict):
    enabled: bool
    counters: dict[str, int]
    time_to_direct_ms_p50: float | None


class HolePuncher:
    def __init__(self, peers: "PeerManager", addresses: SelfAddresses, *, enabled: bool = True,
                 cooldown: float = 30.0) -> None:
        self.peers = peers
        self.addresses = addresses
        self.enabled = enabled
        self.cooldown = cooldown          # s before a peer may open a new punch with us (its retries excepted)
        # (peer, attempt) -> the relayed link we sent our connect on, and when: an answer counts only on it
        self._sent_at: dict[tuple[str, int], tuple[PeerLink, float]] = {}
        self._their_addrs: dict[str, tuple[PeerLink, int, list[tuple[str, int]]]] = {}
        self._ports: dict[tuple[str, int], socket.socket] = {}      # (peer, attempt) -> the bound punch socket
        self._opened: dict[str, float] = {}        # peer -> when it last opened a punch with us
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = {"attempts": 0, "direct": 0, "failed": 0}
        self.last_times: list[float] = []           # seconds from the first connect to a direct link

    def handlers(self) -> dict[str, Callable[[PeerLink, Message], None]]:
        return {CONNECT: self._on_connect, SYNC: self._on_sync}

    def _our_addrs(self, port: int) -> list[list[str | int]]:
        """Hosts believed ours (not every host a hello named: the other side would dial a stranger's pick)."""
        return [[a.host, port] for a in self.addresses.candidates()[:MAX_ADDRS]]

    def _bind(self, peer: str, attempt: int) -> int:
        """A fresh listening port for this attempt (kept until the attempt ends): the port our NAT will show."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        bound = self.peers.transport.listen_address
        sock.bind((bound[0] if bound else "0.0.0.0", 0))
        sock.listen(4)
        sock.setblocking(False)
        old = self._ports.pop((peer, attempt), None)
        if old is not None:
            old.close()
        self._ports[(peer, attempt)] = sock
        return int(sock.getsockname()[1])

    def link_opened(self, link: PeerLink) -> None:
        """A relayed link we accepted: start punching."""
        if self.enabled and link.via is not None and link.direction == Direction.INBOUND \
                and self.addresses.candidates():
            self._start(link, 0)

    def link_closed(self, link: PeerLink) -> None:
        """Forget a punch being arranged over `link`: when both ends redial through the relay at once, one of
        the two relayed links closes as a duplicate, and a connect sent on it must not be taken as the
        answer to one sent on the link kept (each side would wait for the other)."""
        peer = link.remote_id
        if peer is None:
            return
        for key in [k for k, (on, _) in self._sent_at.items() if k[0] == peer and on is link]:
            del self._sent_at[key]
            sock = self._ports.pop(key, None)
            if sock is not None:
                sock.close()
        waiting = self._their_addrs.get(peer)
        if waiting is not None and waiting[0] is link:
            del self._their_addrs[peer]
            sock = self._ports.pop((peer, waiting[1]), None)
            if sock is not None:
                sock.close()

    def _start(self, link: PeerLink, attempt: int) -> None:
        peer = link.remote_id
        if peer is None or not link.is_open:
            return
        port = self._bind(peer, attempt)
        self._sent_at[(peer, attempt)] = (link, time.monotonic())
        self.counters["attempts"] += 1
        link.send({"type": CONNECT, "addrs": self._our_addrs(port), "attempt": attempt})

    def _on_connect(self, link: PeerLink, message: Message) -> None:
        peer = link.remote_id
        if not self.enabled or link.via is None or peer is None:
            return
        addrs = [(a[0], a[1]) for a in message["addrs"]]
        attempt = message["attempt"]
        sent = self._sent_at.get((peer, attempt))
        if sent is None or sent[0] is not link:     # their opening move: answer with ours, dial on their sync
            now = time.monotonic()
            if len(self._ports) >= MAX_OPEN_ATTEMPTS or (
                    attempt == 0 and now - self._opened.get(peer, float("-inf")) < self.cooldown):
                return
            if attempt == 0:
                if len(self._opened) > 4096:
                    self._opened = {p: t for p, t in self._opened.items() if now - t < self.cooldown}
                self._opened[peer] = now
            self._sent_at.pop((peer, attempt), None)
            self._their_addrs[peer] = (link, attempt, addrs)
            link.send({"type": CONNECT, "addrs": self._our_addrs(self._bind(peer, attempt)), "attempt": attempt})
            return
        del self._sent_at[(peer, attempt)]
        started = sent[1]
        rtt = time.monotonic() - started    # their answer to ours: sync, then dial half a round trip later
        link.send({"type": SYNC, "attempt": attempt})
        self._spawn(self._punch(link, addrs, rtt / 2, attempt, started))

    def _on_sync(self, link: PeerLink, message: Message) -> None:
        peer = link.remote_id or ""
        on, attempt, addrs = self._their_addrs.pop(peer, (None, -1, []))
        if addrs and on is link and attempt == message["attempt"]:
            self._spawn(self._punch(link, addrs, 0.0, attempt, time.monotonic()))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _punch(self, relayed: PeerLink, addrs: list[tuple[str, int]], wait: float, attempt: int,
                     started: float) -> None:
        peer = relayed.remote_id or ""
        listener = self._ports.pop((peer, attempt), None)
        if listener is None:
            return
        loop = asyncio.get_running_loop()
        direction = Direction.OUTBOUND if self.peers.node_id < peer else Direction.INBOUND
        accepted: asyncio.Future[PeerLink | None] = loop.create_future()

        def on_accept() -> PeerLink:
            link = PeerLink(self.peers, direction, "holepunch")
            if not accepted.done():
                accepted.set_result(link)
            return link

        server = await loop.create_server(on_accept, sock=listener)
        port = listener.getsockname()[1]
        try:
            await asyncio.sleep(wait)
            dials = [asyncio.ensure_future(self._dial(addr, port, direction)) for addr in addrs[:MAX_DIALS]]
            link = await self._first_link([*dials, accepted], peer)
            for dial in dials:
                dial.cancel()
        finally:
            server.close()
        if link is not None or self._direct(peer):
            self.counters["direct"] += 1
            self.last_times = (self.last_times + [time.monotonic() - started])[-100:]
            log.info("hole punched to %s (attempt %d, %.0f ms)", peer[:12], attempt,
                     (time.monotonic() - started) * 1000)
            return
        self.counters["failed"] += 1
        if relayed.direction == Direction.INBOUND and attempt + 1 < ATTEMPTS and relayed.is_open:
            self._start(relayed, attempt + 1)

    async def _first_link(self, pending: list[asyncio.Future[PeerLink | None]], peer: str) -> PeerLink | None:
        """The first connection (dialled or accepted) whose Noise handshake proves it is `peer`."""
        deadline = asyncio.get_running_loop().time() + DIAL_TIMEOUT + self.peers.handshake_timeout
        waiting = set(pending)
        while waiting:
            timeout = deadline - asyncio.get_running_loop().time()
            if timeout <= 0:
                break
            done, waiting = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                link: PeerLink | None = None if future.cancelled() or future.exception() else future.result()
                if link is None:
                    continue
                try:
                    async with asyncio.timeout(self.peers.handshake_timeout):
                        await link.ready
                except Exception:  # noqa: BLE001 - closed or timed out: not this one
                    continue
                if link.remote_id == peer:
                    return link
                link.close(CloseReason.IDENTITY_MISMATCH, "not the node this hole punching port waits for")
        return None

    def _direct(self, peer: str) -> bool:
        link = self.peers.links.get(peer)
        return link is not None and link.via is None

    async def _dial(self, address: tuple[str, int], port: int, direction: Direction) -> PeerLink | None:
        """Dial from the punch port again until the two SYNs meet (or the other side accepts) or time is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DIAL_TIMEOUT
        bound = self.peers.transport.listen_address
        while loop.time() < deadline:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.setblocking(False)
                sock.bind((bound[0] if bound else "0.0.0.0", port))
                async with asyncio.timeout(max(0.05, deadline - loop.time())):
                    await loop.sock_connect(sock, address)
            except (OSError, TimeoutError):
                sock.close()
                await asyncio.sleep(REDIAL_GAP)  # refused or already joined to the other side's dial: again
                continue
            # no dial address: the punch port is no address to remember or tell others (the hello's claim is)
            _, link = await loop.create_connection(lambda: PeerLink(self.peers, direction, "holepunch"), sock=sock)
            return link
        return None

    async def stop(self) -> None:
        for sock in self._ports.values():
            sock.close()
        self._ports.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> HolePunchStatus:
        times = sorted(self.last_times)
        return {"enabled": self.enabled, "counters": dict(self.counters),
                "time_to_direct_ms_p50": round(times[len(times) // 2] * 1000, 1) if times else None}
