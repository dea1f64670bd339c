"""Reaching nodes behind NAT, composed on a PeerManager: reachability checks, relay service and use,
hole punching. One place registers every message type these parts speak and sends each to its part."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING, Any, TypedDict

from p2p.messages import Message
from p2p import messages as m
from p2p.close_reason import CloseReason
from p2p.connection import PeerLink
from p2p.nat.autonat import AutoNat, AutonatStatus
from p2p.nat.circuit import CHUNK, CLOSE, DATA
from p2p.nat.config import NatConfig
from p2p.nat.holepunch import HOLEPUNCH_SCHEMAS, HolePuncher, HolePunchStatus
from p2p.nat.port_mapping import PortMapper, PortMappingView
from p2p.nat.relay_client import RELAY_CAPABILITY, RelayClient, RelayClientStatus
from p2p.nat.relay_server import CONNECT, INCOMING, OPENED, RESERVATION, RESERVE, RelayServer, RelayServerStatus
from p2p.nat.self_addresses import Reachability
from p2p.peer_hooks import PeerHooks
from p2p.transport import DialError

if TYPE_CHECKING:
    from p2p.peers import PeerManager

log = logging.getLogger("p2p.nat")

ROUTES = "relay.routes"
MAX_ROUTES_SENT = 64
_circuit = m.is_int(1, (1 << 31) - 1)
RELAY_SCHEMAS: m.SchemaTable = {
    RESERVE: m.schema({}),
    RESERVATION: m.schema({"status": m.is_str(16)}, {"ttl": m.is_int(0, 86400), "reason": m.is_str(64)}),
    CONNECT: m.schema({"circuit": _circuit, "target": m.is_node_id}),
    INCOMING: m.schema({"circuit": _circuit, "source": m.is_node_id}),
    OPENED: m.schema({"circuit": _circuit}),
    DATA: m.schema({"circuit": _circuit, "data": m.is_bytes(1, CHUNK)}),
    CLOSE: m.schema({"circuit": _circuit}, {"reason": m.is_str(64)}),
    ROUTES: m.schema({"targets": m.is_list(MAX_ROUTES_SENT, m.is_node_id)}),
}


class PortMappingStatus(PortMappingView):
    enabled: bool


class NatStatus(AutonatStatus):
    """NAT traversal in `/status`: our addresses and reachability, relays both ways, hole punching, the
    gateway's port mapping."""
    relay_service: RelayServerStatus
    relay_client: RelayClientStatus
    hole_punching: HolePunchStatus
    port_mapping: PortMappingStatus


class PunchTrial(TypedDict):
    direct: bool                     # a direct link replaced the relayed one in time
    relayed_ms: float | None         # when the relayed link came
    ms: float


class NatService:
    def __init__(self, peers: "PeerManager", config: NatConfig) -> None:
        self.peers = peers
        self.config = config
        self.autonat = AutoNat(peers)
        self.server = RelayServer(config, lambda: self.autonat.reachability == Reachability.PUBLIC)
        self.client = RelayClient(peers, config, lambda: self.autonat.reachability == Reachability.PRIVATE,
                                  self._peer_public)
        self.puncher = HolePuncher(peers, self.autonat.addresses, enabled=config.hole_punch,
                                   cooldown=config.hole_punch_cooldown)
        self.mapper = PortMapper(lambda: peers.listen_port, self._lan_address, self._mapped, self._unmapped)
        self._peer_reach: dict[str, str] = {}
        self._routes_sent: dict[str, tuple[str, ...]] = {}
        self._task: asyncio.Task[None] | None = None

    def peer_hooks(self) -> PeerHooks:
        """Relay reservations, circuits and their bytes, hole punching, and the dial-back service."""
        handlers = {RESERVE: self._on_reserve, RESERVATION: self.client.on_reservation, CONNECT: self._on_connect,
                    INCOMING: lambda link, msg: self.client.on_incoming(link, msg["circuit"], msg["source"]),
                    OPENED: lambda link, msg: self.client.on_opened(link, msg["circuit"]),
                    DATA: self._on_data, CLOSE: self._on_close,
                    ROUTES: lambda link, msg: self.client.on_routes(link, msg["targets"]),
                    **self.puncher.handlers()}
        own = PeerHooks("nat", schemas={**RELAY_SCHEMAS, **HOLEPUNCH_SCHEMAS}, handlers=handlers,
                        ungated=frozenset({DATA, CLOSE}),   # the relay's per-circuit budget and the inner link's limit
                        on_heartbeat=(self._on_heartbeat,), on_close=(self._on_link_closed,),
                        on_open=(self._on_link_open,),
                        capabilities=(RELAY_CAPABILITY,) if self.config.relay_service else ())
        return self.autonat.peer_hooks() + own

    @property
    def reachability(self) -> Reachability:
        return self.autonat.reachability

    def _peer_public(self, node_id: str) -> bool:
        return self._peer_reach.get(node_id) == Reachability.PUBLIC

    def says_private(self, node_id: str) -> bool:
        """A linked peer that says nobody can dial it: its claimed address is not worth telling anyone."""
        return self._peer_reach.get(node_id) == Reachability.PRIVATE

    # --- port mapping ---------------------------------------------------------------------------
    def _lan_address(self) -> str | None:
        """Our address on a private LAN, as our own end of a direct link shows it: the only place a UPnP
        gateway can be (never loopback, never a public address, so no search leaves the LAN)."""
        for link in list(self.peers.links.values()):
            transport = link.transport
            sockname = transport.get_extra_info("sockname") if link.via is None and transport is not None else None
            if sockname:
                try:
                    ip = ipaddress.ip_address(sockname[0])
                except ValueError:
                    continue
                if ip.version == 4 and ip.is_private and not ip.is_loopback and not ip.is_link_local:
                    return str(ip)
        return None

    def _mapped(self, host: str, port: int) -> None:
        self.autonat.addresses.mapped(host, port)
        self.autonat.wake()

    def _unmapped(self, host: str, port: int) -> None:
        self.autonat.addresses.unmapped(host, port)

    # --- handlers -----------------------------------------------------------------------------
    def _on_reserve(self, link: PeerLink, message: Message) -> None:
        ok, reason = self.server.reserve(link)
        reply: dict[str, Any] = {"type": RESERVATION, "status": "ok" if ok else "refused"}
        if ok:
            reply["ttl"] = int(self.config.relay_reservation_ttl)
        else:
            reply["reason"] = reason
        link.send(reply)
        if ok:
            self._announce_routes()

    def _on_connect(self, link: PeerLink, message: Message) -> None:
        refusal = self.server.connect(link, message["circuit"], message["target"])
        if refusal is not None:
            link.send({"type": CLOSE, "circuit": message["circuit"], "reason": refusal})

    def _on_data(self, link: PeerLink, message: Message) -> None:
        if self.server.owns(link, message["circuit"]):
            self.server.data(link, message["circuit"], message["data"])
        else:
            self.client.data(link, message["circuit"], message["data"])

    def _on_close(self, link: PeerLink, message: Message) -> None:
        if self.server.owns(link, message["circuit"]):
            self.server.close(link, message["circuit"])
        else:
            self.client.closed(link, message["circuit"])

    def _on_heartbeat(self, link: PeerLink, message: Message) -> None:
        said = message.get("reachability")
        if link.remote_id and isinstance(said, str) and said in Reachability.__members__.values():
            if self._peer_reach.get(link.remote_id) != said:
                self._peer_reach[link.remote_id] = said
                self.client.maintain()

    def _on_link_open(self, link: PeerLink) -> None:
        if self.server.reservations:
            self._send_routes(link)
        self.puncher.link_opened(link)

    def _on_link_closed(self, link: PeerLink) -> None:
        self.server.link_closed(link)
        self.client.link_closed(link)
        self.puncher.link_closed(link)
        if link.remote_id:
            self._peer_reach.pop(link.remote_id, None)
            self._routes_sent.pop(link.remote_id, None)
        if self.server.reservations:
            self._announce_routes()

    # --- telling neighbours whom we relay for ---------------------------------------------------
    def _announce_routes(self) -> None:
        for link in list(self.peers.links.values()):
            self._send_routes(link)

    def _send_routes(self, link: PeerLink) -> None:
        if link.via is not None or not link.remote_id:
            return
        targets = tuple(t for t in self.server.reserved() if t != link.remote_id)[:MAX_ROUTES_SENT]
        if self._routes_sent.get(link.remote_id) != targets:
            self._routes_sent[link.remote_id] = targets
            link.send({"type": ROUTES, "targets": list(targets)})

    # --- reaching a node through a relay a record names -----------------------------------------
    async def dial_through(self, relay_host: str, relay_port: int, target: str) -> PeerLink:
        """Link to `target` through the relay listening at relay_host:relay_port (dialled first if we hold no
        link to it). Raises DialError."""
        relay = next((link for link in self.peers.links.values()
                      if link.via is None and self.peers.listen_address(link) == (relay_host, relay_port)), None)
        if relay is None:
            relay = await self.peers.dial(relay_host, relay_port, source="relay")
        assert relay.remote_id is not None
        self.client.add_route(target, relay.remote_id)
        return await self.client.dial_via(relay.remote_id, target)

    def addresses_to_publish(self) -> list[tuple[str, int, str]]:
        """Our candidate addresses a dial-back of that very host reached (observed or mapped), then our relays'
        (how = "relayed")."""
        own = [(a.host, a.port, a.how) for a in self.autonat.addresses.confirmed()]
        relayed = [(host, port, "relayed") for host, port, _ in self.client.relayed_addresses()]
        return own + relayed

    # --- a measured hole punch (benchmarks and diagnostics) -------------------------------------
    async def punch_trial(self, target: str, relay_id: str, timeout: float = 10.0) -> PunchTrial:
        """Drop our link to `target`, link again through `relay_id`, and time how long the hole punch takes to
        put a direct link in its place (or say it did not within `timeout`)."""
        loop = asyncio.get_running_loop()
        old = self.peers.links.get(target)
        if old is not None:
            old.close(CloseReason.SHUTDOWN, "hole punching trial")
        started = loop.time()
        relayed_at = None
        while loop.time() - started < timeout:
            link = self.peers.links.get(target)
            if link is not None and link.via is None and link is not old:
                return {"direct": True, "relayed_ms": relayed_at, "ms": round((loop.time() - started) * 1000, 1)}
            if link is not None and relayed_at is None:
                relayed_at = round((loop.time() - started) * 1000, 1)
            if link is None and not self.client.dialling(target):
                try:
                    await self.client.dial_via(relay_id, target, timeout=max(0.5, timeout - (loop.time() - started)))
                except DialError:
                    await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(0.01)
        return {"direct": False, "relayed_ms": relayed_at, "ms": round((loop.time() - started) * 1000, 1)}

    # --- lifecycle ----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.client.maintain()
            self.client.dial_due()
            self.server.sweep()
            if self.server.reservations:
                self._announce_routes()

    def _reachability_changed(self, reach: Reachability) -> None:
        if reach == Reachability.PUBLIC:
            self.client.release_all()
        self.client.maintain()

    async def start(self) -> None:
        await self.autonat.start()
        self.autonat.reachability_listeners.append(self._reachability_changed)
        if self.config.port_mapping:
            await self.mapper.start()
        self._task = asyncio.create_task(self._run(), name="nat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.mapper.stop()
        await self.client.stop()
        await self.puncher.stop()
        await self.autonat.stop()

    def status(self) -> NatStatus:
        return {**self.autonat.status(), "relay_service": self.server.status(), "relay_client": self.client.status(),
                "hole_punching": self.puncher.status(),
                "port_mapping": {**self.mapper.status(), "enabled": self.config.port_mapping}}
