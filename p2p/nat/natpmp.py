"""NAT-PMP (RFC 6886): the port-mapping protocol of gateways that offer no UPnP-IGD (Apple's, and many
OpenWrt and miniupnpd setups with UPnP turned off). PCP servers (RFC 6887) that keep NAT-PMP's version 0
answer it too; a PCP-only server does not.

Written here because the one Python client (NAT-PMP on PyPI) blocks on its socket and needs netifaces,
an unmaintained C extension. The protocol is two fixed-size UDP messages to the default gateway, port
5351: public address (opcode 0) and map TCP (opcode 2; lifetime 0 deletes). Requests are retried at
250 ms, doubling, as the RFC says, but four times, not nine: a gateway that has not answered in about
four seconds is not there, and port mapping retries later anyway.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from pathlib import Path

PORT = 5351
VERSION = 0
OP_PUBLIC_ADDRESS = 0
OP_MAP_TCP = 2
RESPONSE = 128
TRIES = 4
FIRST_WAIT = 0.25
RESULTS = {1: "unsupported version", 2: "not authorized or refused", 3: "network failure",
           4: "out of resources", 5: "unsupported opcode"}


class NatPmpError(Exception):
    """The gateway answered with an error, or its answer made no sense."""


def default_gateway(route_table: Path = Path("/proc/net/route")) -> str | None:
    """The IPv4 default gateway from the kernel's routing table (Linux), or None."""
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "00000000" and fields[2] != "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    return None


def public_address_request() -> bytes:
    return struct.pack("!BB", VERSION, OP_PUBLIC_ADDRESS)


def map_request(internal_port: int, external_port: int, lifetime: int) -> bytes:
    return struct.pack("!BBHHHI", VERSION, OP_MAP_TCP, 0, internal_port, external_port, lifetime)


def parse_public_address(data: bytes) -> str:
    _check(data, OP_PUBLIC_ADDRESS, 12)
    return str(ipaddress.IPv4Address(data[8:12]))


def parse_mapping(data: bytes, internal_port: int) -> tuple[int, int]:
    """(external port, lifetime) the gateway granted for our internal port."""
    _check(data, OP_MAP_TCP, 16)
    internal, external, lifetime = struct.unpack("!HHI", data[8:16])
    if internal != internal_port:
        raise NatPmpError(f"answer for port {internal}, asked for {internal_port}")
    return external, lifetime


def _check(data: bytes, opcode: int, size: int) -> None:
    if len(data) < size:
        raise NatPmpError(f"short answer ({len(data)} bytes)")
    version, op, result = struct.unpack("!BBH", data[:4])
    if version != VERSION or op != RESPONSE + opcode:
        raise NatPmpError(f"unexpected answer (version {version}, opcode {op})")
    if result:
        raise NatPmpError(f"gateway refused: {RESULTS.get(result, f'result {result}')}")


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, gateway: tuple[str, int]) -> None:
        self.gateway = gateway
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        if (addr[0], addr[1]) == self.gateway:      # RFC 6886: only the gateway's answers count
            self.answers.put_nowait(data)


class NatPmpGateway:
    """A NAT-PMP gateway, with the same calls as the UPnP one (`port_mapping.Gateway`)."""

    kind = "nat-pmp"

    def __init__(self, gateway: str, local_ip: str, *, port: int = PORT, tries: int = TRIES,
                 first_wait: float = FIRST_WAIT) -> None:
        self.gateway = gateway
        self.port = port
        self.local_ip = local_ip
        self.tries = tries
        self.first_wait = first_wait

    @classmethod
    async def find(cls, local_ip: str, gateway: str | None = None, port: int = PORT) -> "NatPmpGateway | None":
        """The default gateway, if it answers NAT-PMP; only at a private address."""
        gateway = gateway or default_gateway()
        if gateway is None or not ipaddress.IPv4Address(gateway).is_private:
            return None
        found = cls(gateway, local_ip, port=port)
        try:
            await found.external_ip()
        except (NatPmpError, TimeoutError, OSError):
            return None
        return found

    async def _ask(self, request: bytes, opcode: int) -> bytes:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(lambda: _Exchange((self.gateway, self.port)),
                                                                  local_addr=(self.local_ip, 0))
        try:
            wait = self.first_wait
            for _ in range(self.tries):
                transport.sendto(request, (self.gateway, self.port))
                deadline = loop.time() + wait
                while (left := deadline - loop.time()) > 0:
                    try:
                        answer = await asyncio.wait_for(protocol.answers.get(), left)
                    except TimeoutError:
                        break
                    if len(answer) >= 2 and answer[1] == RESPONSE + opcode:
                        return answer
                wait *= 2
            raise TimeoutError(f"no NAT-PMP answer from {self.gateway}")
        finally:
            transport.close()

    async def external_ip(self) -> str | None:
        return parse_public_address(await self._ask(public_address_request(), OP_PUBLIC_ADDRESS))

    async def add(self, external_port: int, internal_client: str, internal_port: int, lease: float) -> int:
        answer = await self._ask(map_request(internal_port, external_port, max(1, int(lease))), OP_MAP_TCP)
        external, _ = parse_mapping(answer, internal_port)
        return external

    async def delete(self, external_port: int, internal_port: int) -> None:
        """NAT-PMP names a mapping by its internal port; lifetime 0 (and external port 0) removes it."""
        parse_mapping(await self._ask(map_request(internal_port, 0, 0), OP_MAP_TCP), internal_port)

    async def close(self) -> None:
        """Nothing to release: each request opens and closes its own socket."""
