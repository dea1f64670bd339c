"""Using relays: a private node holds reservations on a few public peers, and anyone reaches a node
through a relay that holds its reservation.

Reserving: while dial-backs say we are private, keep reservations with `relays_wanted` linked peers that
say they are public and offer `circuit-relay`, in different /24s, renewed at half their lifetime.
A relay tells its links which nodes it holds reservations for (`relay.routes`); we remember those
routes (bounded per relay and in all) and, like any dial, link to such a node when we want more
links or must keep it linked. Incoming circuits are taken only from relays we reserved with.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Callable, TypedDict

from p2p.messages import Message
from p2p.admission import netgroup
from p2p.close_reason import CloseReason
from p2p.connection import Direction, LinkClosed, PeerLink
from p2p.nat.circuit import CLOSE, CircuitTransport
from p2p.nat.config import NatConfig
from p2p.nat.relay_server import CONNECT, RESERVE
from p2p.transport import DialError

if TYPE_CHECKING:
    from p2p.peers import PeerManager

log = logging.getLogger("p2p.nat.relay")

RELAY_CAPABILITY = "circuit-relay"
MAX_ROUTES_PER_RELAY = 64
MAX_ROUTES = 1024
MAX_RELAYED_INBOUND_PER_RELAY = 16


class RelayClientStatus(TypedDict):
    relays: list[str]                # the relays holding a reservation for us
    relayed_addresses: list[list[str | int]]     # [host, port, relay id]
    routes: int
    circuits: int
    counters: dict[str, int]


class RelayClient:
    def __init__(self, peers: "PeerManager", config: NatConfig, is_private: Callable[[], bool],
                 peer_public: Callable[[str], bool]) -> None:
        self.peers = peers
        self.config = config
        self.is_private = is_private
        self.peer_public = peer_public
        self.relays: dict[str, float] = {}                 # relay node id -> reservation expiry (monotonic)
        self._asked: dict[str, float] = {}                 # relay node id -> when we asked
        self.routes: dict[str, dict[str, float]] = {}      # target -> {relay id: when learnt}
        self.circuits: dict[tuple[int, int], CircuitTransport] = {}
        self._opening: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._ids = itertools.count(1, 2)                  # odd: circuits an endpoint opens
        self._next_try: dict[str, float] = {}              # target -> monotonic time of the next relayed dial
        self._failures: dict[str, int] = {}
        self._dialling: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = {"reservations": 0, "refused": 0, "dials": 0, "dials_ok": 0, "incoming": 0,
                         "incoming_refused": 0}

    # --- reservations -----------------------------------------------------------------------
    def _candidates(self) -> list[PeerLink]:
        groups = {netgroup(link.remote_addr[0]) for rid, link in self.peers.links.items()
                  if rid in self.relays and link.remote_addr}
        chosen = []
        for node_id, link in self.peers.links.items():
            if node_id in self.relays or link.via is not None or not link.remote_addr:
                continue
            caps = (link.remote_hello or {}).get("capabilities", ())
            if RELAY_CAPABILITY not in caps or not self.peer_public(node_id):
                continue
            group = netgroup(link.remote_addr[0])
            if group in groups:
                continue
            groups.add(group)
            chosen.append(link)
        return chosen

    def maintain(self, now: float | None = None) -> None:
        """Renew reservations due, drop those whose link is gone, reserve more when private."""
        now = time.monotonic() if now is None else now
        for relay_id in [r for r in self.relays if r not in self.peers.links]:
            del self.relays[relay_id]
        if not self.config.relay_client or not self.is_private():
            return
        ttl = self.config.relay_reservation_ttl
        for relay_id, expires in self.relays.items():
            if expires - now < ttl / 2 and now - self._asked.get(relay_id, -1e9) > 5.0:
                self._reserve(self.peers.links[relay_id], now)
        if len(self.relays) >= self.config.relays_wanted:
            return
        for link in self._candidates():
            if len(self.relays) + sum(1 for r, t in self._asked.items() if now - t < 5.0 and r not in self.relays) \
                    >= self.config.relays_wanted:
                break
            if now - self._asked.get(link.remote_id or "", -1e9) > 30.0:
                self._reserve(link, now)

    def release_all(self) -> None:
        """We are reachable now (a port mapping, a changed network): our relayed addresses are no longer
        published and nobody should pay a relay to reach us. The relays' slots lapse with their TTL;
        circuits open through them stay until either side closes them."""
        if self.relays:
            log.info("reachable directly now: dropping %d relay reservation(s)", len(self.relays))
        self.relays.clear()

    def _reserve(self, link: PeerLink, now: float) -> None:
        self._asked[link.remote_id or ""] = now
        link.send({"type": RESERVE})

    def on_reservation(self, link: PeerLink, message: Message) -> None:
        relay_id = link.remote_id or ""
        if relay_id not in self._asked:
            return
        if message["status"] == "ok":
            if relay_id not in self.relays:
                self.counters["reservations"] += 1
                log.info("reserved a relay slot with %s", relay_id[:12])
            self.relays[relay_id] = time.monotonic() + min(float(message.get("ttl", 0)),
                                                           self.config.relay_reservation_ttl)
        else:
            self.counters["refused"] += 1
            self.relays.pop(relay_id, None)

    def relayed_addresses(self) -> list[tuple[str, int, str]]:
        """Where others can reach us: our relays' addresses (dial the relay, then ask it for us)."""
        out = []
        for relay_id in self.relays:
            link = self.peers.links.get(relay_id)
            address = self.peers.listen_address(link) if link is not None else None
            if address is not None and address[1]:
                out.append((address[0], address[1], relay_id))
        return out

    # --- routes -----------------------------------------------------------------------------
    def on_routes(self, link: PeerLink, targets: list[str]) -> None:
        relay_id = link.remote_id or ""
        now = time.monotonic()
        for target, relays in list(self.routes.items()):
            relays.pop(relay_id, None)
            if not relays:
                del self.routes[target]
        for target in targets[:MAX_ROUTES_PER_RELAY]:
            if target == self.peers.node_id or (target not in self.routes and len(self.routes) >= MAX_ROUTES):
                continue
            self.routes.setdefault(target, {})[relay_id] = now

    def add_route(self, target: str, relay_id: str) -> None:
        if target != self.peers.node_id and (target in self.routes or len(self.routes) < MAX_ROUTES):
            self.routes.setdefault(target, {})[relay_id] = time.monotonic()

    def dial_due(self, now: float | None = None) -> None:
        """Link through a relay to route targets we hold no link to, when we want links or keep the node."""
        now = time.monotonic() if now is None else now
        peers = self.peers
        want = peers.config.target_outbound - peers.outbound_count > 0
        for target, relays in list(self.routes.items()):
            if target in peers.links or target in self._dialling or now < self._next_try.get(target, 0.0):
                continue
            if not want and target not in peers.kept:
                continue
            relay_id = next((r for r in relays if r in peers.links), None)
            if relay_id is None:
                continue
            self._dialling.add(target)
            task = asyncio.create_task(self._dial_task(relay_id, target))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def dialling(self, target: str) -> bool:
        return target in self._dialling

    async def _dial_task(self, relay_id: str, target: str) -> None:
        try:
            await self.dial_via(relay_id, target)
            self._failures.pop(target, None)
        except DialError as exc:
            failures = self._failures[target] = self._failures.get(target, 0) + 1
            self._next_try[target] = time.monotonic() + min(60.0, 2.0 * 2 ** failures)
            log.info("relayed dial to %s via %s failed: %s", target[:12], relay_id[:12], exc.reason)
        except Exception as exc:  # noqa: BLE001 - a dial task must never die silently
            self.peers.internal_errors.report("relay.dial", exc)
        finally:
            self._dialling.discard(target)

    # --- circuits ---------------------------------------------------------------------------
    async def dial_via(self, relay_id: str, target: str, timeout: float | None = None) -> PeerLink:
        """A link to `target` through our link to `relay_id`, Noise end to end. Raises DialError."""
        address = (f"relay:{relay_id[:16]}", 0)
        carrier = self.peers.links.get(relay_id)
        if carrier is None:
            raise DialError(address, "relay_not_linked")
        self.counters["dials"] += 1
        circuit = next(self._ids)
        key = (id(carrier), circuit)
        transport = CircuitTransport(carrier, circuit, relay_id, self._circuit_closed)
        self.circuits[key] = transport
        opened = self._opening[key] = asyncio.get_running_loop().create_future()
        link = PeerLink(self.peers, Direction.OUTBOUND, "relayed")
        link.via = relay_id
        timeout = self.peers.handshake_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                carrier.send({"type": CONNECT, "circuit": circuit, "target": target})
                await opened
                transport.attach(link)
                await link.ready
        except LinkClosed as exc:
            if link.remote_id is not None and link.remote_id != target:
                raise DialError(address, CloseReason.IDENTITY_MISMATCH, "the relay led to another node") from None
            raise DialError(address, exc.reason, exc.detail, link.remote_id) from None
        except TimeoutError:
            transport.close()
            raise DialError(address, CloseReason.DIAL_TIMEOUT, f"no relayed link within {timeout:g}s") from None
        finally:
            self._opening.pop(key, None)
        if link.remote_id != target:
            link.close(CloseReason.IDENTITY_MISMATCH, "the relay led to another node")
            raise DialError(address, CloseReason.IDENTITY_MISMATCH)
        self.counters["dials_ok"] += 1
        return link

    def on_opened(self, carrier: PeerLink, circuit: int) -> None:
        waiter = self._opening.get((id(carrier), circuit))
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_incoming(self, carrier: PeerLink, circuit: int, source: str) -> None:
        relay_id = carrier.remote_id or ""
        inbound_here = sum(1 for t in self.circuits.values() if t.relay_id == relay_id)
        if relay_id not in self.relays or circuit % 2 or inbound_here >= MAX_RELAYED_INBOUND_PER_RELAY \
                or (id(carrier), circuit) in self.circuits:
            self.counters["incoming_refused"] += 1
            carrier.send({"type": CLOSE, "circuit": circuit, "reason": "refused"})
            return
        self.counters["incoming"] += 1
        transport = CircuitTransport(carrier, circuit, relay_id, self._circuit_closed)
        self.circuits[(id(carrier), circuit)] = transport
        link = PeerLink(self.peers, Direction.INBOUND, "relayed")
        link.via = relay_id
        transport.attach(link)

    def owns(self, carrier: PeerLink, circuit: int) -> bool:
        return (id(carrier), circuit) in self.circuits

    def data(self, carrier: PeerLink, circuit: int, payload: bytes) -> None:
        transport = self.circuits.get((id(carrier), circuit))
        if transport is not None:
            transport.feed(payload)

    def closed(self, carrier: PeerLink, circuit: int) -> None:
        waiter = self._opening.get((id(carrier), circuit))
        if waiter is not None and not waiter.done():
            waiter.set_exception(LinkClosed(CloseReason.CONNECTION_CLOSED, "the relay refused the circuit"))
        transport = self.circuits.get((id(carrier), circuit))
        if transport is not None:
            transport.remote_closed()

    def _circuit_closed(self, transport: CircuitTransport) -> None:
        self.circuits.pop((id(transport.carrier), transport.circuit), None)

    def link_closed(self, link: PeerLink) -> None:
        """A carrier link went: every circuit on it goes with it."""
        for (carrier_key, _), transport in list(self.circuits.items()):
            if carrier_key == id(link):
                transport.remote_closed()
        for (carrier_key, _), waiter in list(self._opening.items()):
            if carrier_key == id(link) and not waiter.done():
                waiter.set_exception(LinkClosed(CloseReason.CONNECTION_CLOSED, "the relay link closed"))
        if link.remote_id:
            self.relays.pop(link.remote_id, None)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> RelayClientStatus:
        return {"relays": sorted(self.relays), "relayed_addresses": [list(a) for a in self.relayed_addresses()],
                "routes": len(self.routes), "circuits": len(self.circuits), "counters": dict(self.counters)}
