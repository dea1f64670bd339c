"""Port mapping: ask the LAN's gateway (UPnP-IGD, else NAT-PMP) to forward our P2P port, with a lease we
renew and a mapping we remove at stop.

async-upnp-client (Home Assistant's UPnP library) does the SSDP search and the SOAP calls; NAT-PMP is
two UDP messages (`natpmp.py`). We only decide what to map. The mapped address (the gateway's external
IP and the port it granted, which under NAT-PMP may differ from ours) is one of our addresses like any
other: it counts as ours only once a dial-back through it reached us (the gateway may itself sit behind
another NAT). A gateway that is absent or refuses is one INFO line, then a retry every `retry` seconds,
since routers reboot and come back.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, TypedDict

log = logging.getLogger("p2p.nat.portmap")

DESCRIPTION = "exchange-node"

if TYPE_CHECKING:
    import aiohttp
    from async_upnp_client.profiles.igd import IgdDevice


class Gateway(Protocol):
    """What we need of a gateway that maps ports: `add` returns the external port it granted."""

    kind: str

    async def external_ip(self) -> str | None: ...
    async def add(self, external_port: int, internal_client: str, internal_port: int, lease: float) -> int: ...
    async def delete(self, external_port: int, internal_port: int) -> None: ...
    async def close(self) -> None: ...       # what the gateway holds open (a session), released


class IgdGateway:
    """A UPnP-IGD gateway reached through async-upnp-client."""

    kind = "upnp-igd"

    def __init__(self, device: IgdDevice, session: aiohttp.ClientSession) -> None:
        self._device = device
        self._session = session

    @classmethod
    async def find(cls, local_ip: str, timeout: int = 3) -> "IgdGateway | None":
        from async_upnp_client.aiohttp import AiohttpSessionRequester
        from async_upnp_client.client_factory import UpnpFactory
        from async_upnp_client.profiles.igd import IgdDevice
        from async_upnp_client.search import async_search
        import aiohttp

        locations: list[str] = []

        async def found(headers: Any) -> None:
            location = headers.get("location")
            if location and location not in locations:
                locations.append(location)

        for target in IgdDevice.DEVICE_TYPES:
            await async_search(found, timeout=timeout, search_target=target, source=(local_ip, 0))
            if locations:
                break
        if not locations:
            return None
        session = aiohttp.ClientSession()
        try:
            factory = UpnpFactory(AiohttpSessionRequester(session, with_sleep=False, timeout=5))
            device = await factory.async_create_device(locations[0])
            return cls(IgdDevice(device, None), session)
        except BaseException:
            await session.close()
            raise

    async def external_ip(self) -> str | None:
        ip: str | None = await self._device.async_get_external_ip_address()
        return ip

    async def add(self, external_port: int, internal_client: str, internal_port: int, lease: float) -> int:
        await self._device.async_add_port_mapping(
            ipaddress.IPv4Address("0.0.0.0"), external_port, "TCP", internal_port,
            ipaddress.IPv4Address(internal_client), True, DESCRIPTION, timedelta(seconds=int(lease)))
        return external_port

    async def delete(self, external_port: int, internal_port: int) -> None:
        await self._device.async_delete_port_mapping(ipaddress.IPv4Address("0.0.0.0"), external_port, "TCP")

    async def close(self) -> None:
        await self._session.close()


async def find_gateway(local_ip: str) -> Gateway | None:
    """The LAN's gateway: UPnP-IGD if one answers the SSDP search, else NAT-PMP at the default route (asked
    at the same time)."""
    from p2p.nat.natpmp import NatPmpGateway

    natpmp = asyncio.ensure_future(NatPmpGateway.find(local_ip))     # asked at once: SSDP takes seconds to fail
    try:
        found: Gateway | None = await IgdGateway.find(local_ip)
    except BaseException:
        natpmp.cancel()
        raise
    if found is not None:
        natpmp.cancel()
        return found
    return await natpmp


class PortMappingView(TypedDict):
    mapped: list[str | int] | None   # [external ip, external port]
    renewed_at: float | None
    gateway: str | None              # its kind: "upnp-igd", "nat-pmp"
    lease_s: float
    last_error: str | None


class PortMapper:
    def __init__(self, port: Callable[[], int], local_ip: Callable[[], str | None],
                 on_mapped: Callable[[str, int], None], on_unmapped: Callable[[str, int], None], *,
                 lease: float = 3600.0, retry: float = 300.0,
                 find: Callable[[str], Awaitable[Gateway | None]] = find_gateway) -> None:
        self.port = port
        self.local_ip = local_ip
        self.on_mapped = on_mapped
        self.on_unmapped = on_unmapped
        self.lease = lease
        self.retry = retry
        self._find = find
        self.gateway: Gateway | None = None
        self.mapped: tuple[str, int] | None = None
        self.renewed_at: float | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def map_once(self) -> bool:
        """Find the gateway (once) and map or renew our port; False (with `last_error`) when that failed."""
        port, local = self.port(), self.local_ip()
        if not port or not local:
            self.last_error = "no local address yet"
            return False
        try:
            async with asyncio.timeout(15):
                if self.gateway is None:
                    self.gateway = await self._find(local)
                    if self.gateway is None:
                        raise LookupError("no UPnP-IGD or NAT-PMP gateway answered")
                external = await self.gateway.external_ip()
                if not external:
                    raise LookupError("the gateway has no external address")
                asked = self.mapped[1] if self.mapped is not None else port
                granted = await self.gateway.add(asked, local, port, self.lease)
        except Exception as exc:  # noqa: BLE001 - any failure of the gateway is one line and a later retry
            reason = f"{type(exc).__name__}: {exc}"[:200]
            if reason != self.last_error:
                log.info("no port mapping (%s); retrying every %.0f s", reason, self.retry)
            self.last_error = reason
            return False
        if self.mapped != (external, granted):
            if self.mapped is not None:
                self.on_unmapped(*self.mapped)
            log.info("%s gateway maps %s:%d to our port %d (lease %.0f s)", self.gateway.kind, external, granted,
                     port, self.lease)
            self.mapped = (external, granted)
            self.on_mapped(external, granted)
        self.renewed_at = time.time()
        self.last_error = None
        return True

    async def run(self) -> None:
        """Map as soon as we know our LAN address (our first link shows it), then renew at half the lease."""
        while True:
            if not self.local_ip():
                await asyncio.sleep(1.0)
                continue
            ok = await self.map_once()
            await asyncio.sleep(self.lease / 2 if ok else self.retry)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="port-mapping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        gateway, mapped = self.gateway, self.mapped
        if gateway is not None and mapped is not None:
            try:
                async with asyncio.timeout(3):
                    await gateway.delete(mapped[1], self.port())
                log.info("removed the port mapping %s:%d", *mapped)
            except Exception as exc:  # noqa: BLE001 - the lease ends it anyway
                log.info("could not remove the port mapping (%s); its lease ends it", type(exc).__name__)
        if gateway is not None:
            await gateway.close()

    def status(self) -> PortMappingView:
        return {"mapped": None if self.mapped is None else list(self.mapped), "renewed_at": self.renewed_at,
                "gateway": None if self.gateway is None else self.gateway.kind,
                "lease_s": self.lease, "last_error": self.last_error}
