"""The WAN test network does what tests/integration/wan.py says: sites reach the public segment through
their NAT, a cone NAT keeps a connection's source port (so one socket has one public address), a
symmetric NAT gives every connection a new one, and nothing from outside reaches into a site unasked."""
from __future__ import annotations

import shutil

import pytest

from tests.integration.wan import PUBLIC, wan_or_skip

pytestmark = [pytest.mark.netns, pytest.mark.process]

# A listener that prints the address each connection came from, and a dialler that binds a source port.
_ECHO_PEER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(); print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    c, peer = s.accept(); c.sendall(f"{peer[0]} {peer[1]}".encode()); c.close()
"""
_DIAL_FROM = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3]))); s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode())
except OSError as e:
    print("failed", type(e).__name__)
"""


def _seen_from(net, listener, dialler, port: int, source_port: int) -> str:
    import subprocess
    server = subprocess.Popen(["ip", "netns", "exec", listener.ns, "python3", "-c", _ECHO_PEER, str(port), "1"],
                              stdout=subprocess.PIPE, text=True)
    net.processes.append(server)
    assert server.stdout is not None and server.stdout.readline().strip() == "listening"
    out = net.exec_in(dialler, "python3", "-c", _DIAL_FROM, listener.address, str(port), str(source_port)).stdout
    server.kill()
    return out.strip()


def test_nat_sites_reach_out_and_keep_strangers_out() -> None:
    if shutil.which("ping") is None:
        pytest.skip("ping is not installed (Debian's iputils-ping; .ci/run installs it): a failed ping proves nothing")
    with wan_or_skip(2, ["cone", "symmetric"]) as net:
        public, public2 = net.public
        cone_host, sym_host = net.sites[0].hosts[0], net.sites[1].hosts[0]
        cone_wan, sym_wan = net.sites[0].wan_address, net.sites[1].wan_address
        # outbound works and shows the router's public address; the cone NAT keeps the source port
        # for every destination (endpoint-independent mapping)
        assert _seen_from(net, public, cone_host, 7001, 40001) == f"{cone_wan} 40001"
        assert _seen_from(net, public2, cone_host, 7002, 40001) == f"{cone_wan} 40001"
        # the symmetric NAT picks a port per connection: at most one of several keeps the source port
        seen = [_seen_from(net, public, sym_host, 7003 + i, 40002) for i in range(4)]
        assert all(s.startswith(f"{sym_wan} ") for s in seen), seen
        assert sum(1 for s in seen if s.endswith(" 40002")) <= 1, seen
        # nobody outside reaches a site host, neither its LAN address nor the router's
        assert _seen_from(net, cone_host, public, 7010, 40003).startswith("failed")
        refused = net.exec_in(public, "python3", "-c", _DIAL_FROM, cone_wan, "7011", "40004").stdout
        assert refused.startswith("failed TimeoutError"), refused   # dropped silently, as a home router does
        # a site cannot reach another site's LAN either; only the public segment is routed
        ping = net.exec_in(cone_host, "ping", "-c1", "-W1", net.sites[1].hosts[0].address)
        assert ping.returncode != 0
        assert net.exec_in(cone_host, "ping", "-c1", "-W2", f"{PUBLIC}.1.1").returncode == 0


_CONNECT_TIME = """
import socket, sys, time
times = []
for _ in range(5):
    s = socket.socket(); started = time.monotonic()
    s.connect((sys.argv[1], int(sys.argv[2]))); times.append((time.monotonic() - started) * 1000); s.close()
print(sorted(times)[2])
"""


def _tcp_rtt_ms(net, source, target, port: int) -> float:
    """A TCP connect waits exactly one round trip (SYN out, SYN-ACK back): the median of five, in ms. (ping
    would under-report: its receive timestamp is taken before the last edge's queue.)"""
    import subprocess
    server = subprocess.Popen(["ip", "netns", "exec", target.ns, "python3", "-c", _ECHO_PEER, str(port), "5"],
                              stdout=subprocess.PIPE, text=True)
    net.processes.append(server)
    assert server.stdout is not None and server.stdout.readline().strip() == "listening"
    out = net.exec_in(source, "python3", "-c", _CONNECT_TIME, target.address, str(port), timeout=20)
    server.kill()
    return float(out.stdout.strip())


def test_delay_between_sites_is_what_the_network_says() -> None:
    """25 ms at every site's edge, each way: 50 ms one way between two sites, 100 ms round trip, measured
    as TCP connect time between public hosts and from a NATed host to a public one (through its router)."""
    with wan_or_skip(2, ["cone"], edge_delay_ms=25) as net:
        public, public2 = net.public
        between_public = _tcp_rtt_ms(net, public, public2, 7030)
        from_site = _tcp_rtt_ms(net, net.sites[0].hosts[0], public, 7031)
        assert 99 <= between_public < 130, between_public
        assert 99 <= from_site < 130, from_site
