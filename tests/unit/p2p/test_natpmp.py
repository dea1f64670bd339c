"""NAT-PMP port mapping (RFC 6886) against a gateway double on loopback that speaks the RFC's byte
layouts: the mapper publishes the external port the gateway *granted* (which may not be ours), renews
asking for that port, deletes by internal port at stop, survives a lost request, and turns a refusal into
one readable reason."""
from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

from p2p.nat.natpmp import NatPmpGateway, default_gateway
from p2p.nat.port_mapping import PortMapper

EXTERNAL_IP = "11.18.7.1"


class FakeGateway(asyncio.DatagramProtocol):
    """Answers NAT-PMP as a gateway would: grants `shift` ports above the one asked, or refuses mappings."""

    def __init__(self, *, shift: int = 1, refuse: bool = False, drop_first: int = 0) -> None:
        self.shift, self.refuse, self.drop = shift, refuse, drop_first
        self.requests: list[bytes] = []
        self.mappings: dict[int, int] = {}         # internal port -> external port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport      # type: ignore[assignment]  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        self.requests.append(data)
        if self.drop > 0:
            self.drop -= 1
            return
        assert self.transport is not None
        version, op = data[0], data[1]
        if op == 0:
            self.transport.sendto(struct.pack("!BBHI", version, 128, 0, 7) + socket.inet_aton(EXTERNAL_IP), addr)
            return
        _, _, _, internal, suggested, lifetime = struct.unpack("!BBHHHI", data)
        external, result = 0, 2 if self.refuse else 0      # a policy that refuses mappings, as a deny rule does
        if not self.refuse:
            if lifetime == 0:
                self.mappings.pop(internal, None)
            else:
                external = self.mappings.setdefault(internal, suggested + self.shift)
        self.transport.sendto(struct.pack("!BBHIHHI", version, 128 + op, result, 7, internal, external, lifetime),
                              addr)


async def _serve(gateway: FakeGateway) -> tuple[asyncio.DatagramTransport, int]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: gateway,
                                                                             local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[1]


def _mapper(port: int, mapped: list, unmapped: list) -> PortMapper:
    async def find(local: str) -> NatPmpGateway | None:
        return await NatPmpGateway.find(local, gateway="127.0.0.1", port=port)
    return PortMapper(lambda: 9000, lambda: "127.0.0.1", lambda ip, p: mapped.append((ip, p)),
                      lambda ip, p: unmapped.append((ip, p)), lease=600, find=find)


def test_the_granted_port_is_published_renewed_and_deleted_at_stop():
    async def scenario() -> None:
        gateway = FakeGateway(shift=1)
        transport, port = await _serve(gateway)
        mapped: list = []
        mapper = _mapper(port, mapped, [])
        try:
            assert await mapper.map_once(), mapper.last_error
            assert mapped == [(EXTERNAL_IP, 9001)], "the port the gateway granted, not ours"
            assert mapper.status()["gateway"] == "nat-pmp" and mapper.status()["mapped"] == [EXTERNAL_IP, 9001]
            assert await mapper.map_once()
            _, _, _, internal, suggested, lifetime = struct.unpack("!BBHHHI", gateway.requests[-1])
            assert (internal, suggested, lifetime) == (9000, 9001, 600), "a renewal asks for the granted port"
            assert mapped == [(EXTERNAL_IP, 9001)], "a renewal that keeps the address announces nothing"
            await mapper.stop()
            assert gateway.mappings == {}, "deleted at stop (by internal port, lifetime 0)"
        finally:
            transport.close()
    asyncio.run(scenario())


def test_a_lost_request_is_retried_and_a_refusal_is_one_readable_reason():
    async def scenario() -> None:
        lossy = FakeGateway(drop_first=2)
        transport, port = await _serve(lossy)
        try:
            found = await NatPmpGateway.find("127.0.0.1", gateway="127.0.0.1", port=port)
            assert found is not None and await found.external_ip() == EXTERNAL_IP
            assert len(lossy.requests) == 4, "two lost, then answered"
        finally:
            transport.close()
        refusing = FakeGateway(refuse=True)
        transport, port = await _serve(refusing)
        mapped: list = []
        try:
            mapper = _mapper(port, mapped, [])
            assert not await mapper.map_once()
            assert "refused" in (mapper.last_error or "") and mapped == []
        finally:
            transport.close()
    asyncio.run(scenario())


def test_no_gateway_is_no_gateway_and_public_gateways_are_not_asked():
    async def scenario() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        try:
            gateway = NatPmpGateway("127.0.0.1", "127.0.0.1", port=silent.getsockname()[1], tries=2, first_wait=0.05)
            try:
                await gateway.external_ip()
                raise AssertionError("a silent gateway answered")
            except TimeoutError:
                pass
        finally:
            silent.close()
        assert await NatPmpGateway.find("127.0.0.1", gateway="8.8.8.8") is None
    asyncio.run(scenario())


def test_the_default_gateway_is_read_from_the_routing_table(tmp_path: Path):
    table = tmp_path / "route"
    table.write_text("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
                     "eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
                     "eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n")
    assert default_gateway(table) == "192.168.1.1"
    assert default_gateway(tmp_path / "missing") is None
