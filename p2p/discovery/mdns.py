"""Zero-config LAN discovery over mDNS/DNS-SD (python-zeroconf, async API).

We register `<node id>._exchange-node._tcp.local.` with a TXT record carrying our node id,
network id, protocol version and P2P port, browse for the same type, and offer every instance of
our network (never ourselves) as a candidate. On shutdown the service is unregistered and the
goodbye packets are awaited.

Interfaces are explicit IPv4 addresses: `MDNS_INTERFACES`, or by default every address of every
real (non-loopback) interface. `InterfaceChoice.Default` is avoided because it needs a multicast
route. A host without multicast (or without interfaces) gets one warning and an idle strategy,
retried with backoff; the node keeps running.

Instance names are node ids (unique by construction: a node id is a hash of the node's key), so
we skip the probing phase (`cooperating_responders=True`): a new node is visible to the others
at once instead of after 1.2-1.7 s of probing.

mDNS never notices a host that dropped off (records live 1125 s): liveness is the links'
heartbeats' job, and a removal event is ignored.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any, Callable, Iterable, Sequence

from p2p import messages as m
from p2p.discovery.base import Candidate, CandidateSink, DiscoveryStrategy

log = logging.getLogger("p2p.discovery.mdns")

SERVICE_TYPE = "_exchange-node._tcp.local."
RESOLVE_TIMEOUT_MS = 3000


def real_interface_addresses() -> list[str]:
    """IPv4 addresses of every interface except loopback (and link-local 169.254/16)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6 (tuple)
            address = ipaddress.IPv4Address(ip.ip)
            if address.is_loopback or address.is_link_local or address.is_unspecified:
                continue
            if ip.ip not in found:
                found.append(ip.ip)
    return found


def txt_properties(node_id: str, network_id: str, port: int, protocol: int = m.PROTOCOL_VERSION) -> dict[str, str]:
    return {"id": node_id, "net": network_id, "proto": str(protocol), "port": str(port)}


def parse_txt(properties: dict[Any, Any]) -> dict[str, str]:   # Any: zeroconf's keys and values, bytes or str, checked here
    out: dict[str, str] = {}
    for key, value in (properties or {}).items():
        try:
            k = key.decode() if isinstance(key, bytes) else str(key)
            v = value.decode() if isinstance(value, bytes) else ("" if value is None else str(value))
        except UnicodeDecodeError:
            continue
        out[k] = v
    return out


class MdnsDiscovery(DiscoveryStrategy):
    name = "mdns"

    def __init__(self, node_id: str, network_id: str, port: int | Callable[[], int], *,
                 interfaces: Sequence[str] = (), announce_hosts: Sequence[str] = (),
                 retry_base: float = 5.0, retry_cap: float = 300.0,
                 list_interfaces: Callable[[], list[str]] = real_interface_addresses) -> None:
        super().__init__()
        self.node_id = node_id
        self.network_id = network_id
        self._port = port
        self.interfaces = list(interfaces)
        self.announce_hosts = list(announce_hosts)
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._list_interfaces = list_interfaces
        self._zc: Any = None
        self._browser: Any = None
        self._info: Any = None
        self._names: asyncio.Queue[str] | None = None
        self._warned: set[str] = set()
        self._resolving: set[str] = set()
        self._attempts: dict[str, int] = {}  # instance name -> failed resolutions in a row
        self.bound: list[str] = []
        self.seen: dict[str, tuple[str, ...]] = {}  # instance name -> addresses offered

    @property
    def port(self) -> int:
        return self._port() if callable(self._port) else self._port

    @property
    def instance_name(self) -> str:
        return f"{self.node_id}.{SERVICE_TYPE}"

    # --- errors -----------------------------------------------------------------------------
    def _error(self, key: str, message: str) -> None:
        self.stats.last_error = message
        self.stats.last_error_at = time.time()
        if key not in self._warned:  # log once per kind of trouble
            self._warned.add(key)
            log.warning("mDNS discovery: %s", message, extra={"reason": key})

    # --- run --------------------------------------------------------------------------------
    async def run(self, sink: CandidateSink) -> None:
        delay = self.retry_base
        while True:
            try:
                started = await self._start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - no multicast, bad interface address, socket errors
                self._error(type(exc).__name__, f"cannot start on {self.interfaces or 'real interfaces'}: "
                                                f"{type(exc).__name__}: {exc} (retrying in {delay:.0f}s)")
                await self._shutdown(goodbye=False)
                started = False
            if started:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_cap)
        assert self._names is not None
        while True:
            name = await self._names.get()
            if name in self._resolving:
                continue
            self._resolving.add(name)
            task = asyncio.create_task(self._resolve(name, sink), name=name)
            task.add_done_callback(lambda done: self._resolving.discard(done.get_name()))

    async def _start(self) -> bool:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

        interfaces = self.interfaces or self._list_interfaces()
        if not interfaces:
            self._error("no_interfaces", "no usable network interface with an IPv4 address; mDNS idle")
            return False
        port = self.port
        if not port:
            self._error("no_port", "P2P listener has no port yet")
            return False
        announce = self.announce_hosts or interfaces
        self._zc = AsyncZeroconf(interfaces=list(interfaces), ip_version=IPVersion.V4Only)
        self.bound = list(interfaces)
        self._names = asyncio.Queue()
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        self._info = AsyncServiceInfo(
            SERVICE_TYPE, self.instance_name, port=port,
            properties=txt_properties(self.node_id, self.network_id, port),
            server=f"en-{self.node_id[:20]}.local.", addresses=[ipaddress.ip_address(a).packed for a in announce])
        # Node ids are unique by construction, so no probing (saves 1.2-1.7 s before we are visible).
        announced = await self._zc.async_register_service(self._info, cooperating_responders=True)
        await announced
        log.info("mDNS: registered %s on %s (announcing %s:%d)", SERVICE_TYPE, ",".join(interfaces),
                 ",".join(announce), port)
        return True

    def _on_change(self, *, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated) and name != self.instance_name:
            if self._names is not None:
                self._names.put_nowait(name)
        # Removed: ignored on purpose, heartbeats decide whether a peer is alive.

    async def _resolve(self, name: str, sink: CandidateSink) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo

        if self._zc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            ok = await info.async_request(self._zc.zeroconf, RESOLVE_TIMEOUT_MS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - zeroconf's errors vary by platform: reported, never fatal to discovery
            self._error("resolve", f"resolving {name}: {type(exc).__name__}: {exc}")
            return
        if not ok:  # no answer in time (a busy or slow responder): the browser will not tell us again
            attempt = self._attempts.get(name, 0) + 1
            self._attempts[name] = attempt
            if attempt <= 5 and self._names is not None:
                asyncio.get_running_loop().call_later(min(0.5 * 2 ** attempt, 30.0), self._names.put_nowait, name)
            return
        self._attempts.pop(name, None)
        for candidate in self.candidates_from(parse_txt(info.properties), info.parsed_addresses(IPVersion.V4Only),
                                              info.port):
            sink(candidate)

    def candidates_from(self, txt: dict[str, str], addresses: Iterable[str], port: int | None) -> list[Candidate]:
        """Candidates for one resolved instance: same network only, never ourselves, and loopback
        addresses only when we ourselves do mDNS on loopback."""
        node_id = txt.get("id")
        if txt.get("net") != self.network_id or not node_id or node_id == self.node_id or not m.is_node_id(node_id):
            return []
        try:
            if int(txt.get("proto", "0")) < m.MIN_PROTOCOL_VERSION:
                return []
            port = int(txt.get("port") or port or 0)
        except ValueError:
            return []
        if not 0 < port < 65536:
            return []
        loopback_ok = any(ipaddress.ip_address(a).is_loopback for a in self.bound)
        out = []
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                continue
            if ip.is_loopback and not loopback_ok:
                continue
            out.append(Candidate(address, port, self.name, node_id))
        key = f"{node_id}:{port}"
        offered = tuple(sorted(c.host for c in out))
        if out and self.seen.get(key) != offered:
            self.seen[key] = offered
            self.stats.found += 1
        return out

    # --- shutdown ---------------------------------------------------------------------------
    async def _shutdown(self, *, goodbye: bool) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            if self._browser is not None:
                await self._browser.async_cancel()
            if goodbye and self._info is not None:
                sent = await zc.async_unregister_service(self._info)
                await sent  # the goodbye packets are only sent once this completes
            await zc.async_close()
        except Exception as exc:  # noqa: BLE001 - shutting down: report, never raise
            log.debug("mDNS shutdown: %s", exc)
        finally:
            self._browser = None
            self._info = None

    async def close(self) -> None:
        await self._shutdown(goodbye=True)


def mdns_announce_hosts(advertise_host: str | None, p2p_host: str) -> list[str]:
    """Which addresses to put in our A records: ADVERTISE_HOST if it is an IP, else P2P_HOST if it
    is a concrete address, else (empty) the mDNS interface addresses."""
    for host in (advertise_host, p2p_host):
        if not host:
            continue
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if ip.version == 4 and not ip.is_unspecified:
            return [host]
    return []
