"""Links from IPv6 addresses, on a real process: a node's inbound caps count an IPv6 peer's /48 as they count an
IPv4 peer's /24 (p2p/admission.py `netgroup`), so one provider's allocation, however many addresses and /64s it
holds, gets one network's share, and a peer from another /48 still gets in. A peer that names no port it listens on
is not remembered at its source port, nor dialled there.

One network namespace whose `lo` holds global IPv6 addresses (documentation prefix 2001:db8::/32, no duplicate
address detection): the node listens on `::`, and a client inside the namespace connects from chosen source
addresses and completes the real handshake (`python -m tests.wire`). The test itself reaches the node's API
through the LAN's proxy; nothing here touches the root namespace.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, wait_until
from tests.integration.netns import NetnsLan, lan_or_skip

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

NODE = "2001:db8:1::1"
# three addresses of one /48 (the last in another /64 of it), then one of another /48
SOURCES = ["2001:db8:1::2", "2001:db8:1::2", "2001:db8:1::2", "2001:db8:1::3", "2001:db8:1:ffff::9",
           "2001:db8:2::2"]


def _add_addresses(lan: NetnsLan, addresses: list[str]) -> None:
    for address in addresses:
        subprocess.run(["ip", "-n", lan.hosts[0], "-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad"],
                       check=True, capture_output=True)


@pytest.fixture
def lan():
    with lan_or_skip(1) as lan:
        yield lan


def test_inbound_caps_count_an_ipv6_peers_48_as_one_network(lan: NetnsLan, tmp_path: Path):
    _add_addresses(lan, [NODE, *sorted(set(SOURCES))])
    node = lan.node(tmp_path, 0, "capped", p2p_host="::", discovery_mdns="false", discovery_pex="false",
                    max_inbound_per_ip=2, max_inbound_per_subnet=3).start()
    assert node.info["listen"].rsplit(":", 1)[0] in ("::", "[::]"), node.info
    done = subprocess.run([*lan.exec_prefix(lan.hosts[0]), sys.executable, "-m", "tests.wire", NODE,
                           str(node.p2p_port), *SOURCES], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    # 1::2 twice (its address's two), not a third; 1::3 the /48's third; 1:ffff::9 refused: another /64, same /48;
    # 2::2 another /48, let in beside a full one
    assert results == ["open", "open", "refused", "open", "refused", "open"], results
    reasons = node.status()["p2p"]["close_reasons"]
    assert reasons.get("too_many_from_ip") == 1 and reasons.get("too_many_from_subnet") == 1, reasons
    wait_until(lambda: "inbound connection from 2001:db8:1:ffff::9 failed: too_many_from_subnet"
               in node.log_path.read_text(), 10, message="the /48's refusal logged")
    # the clients named no port they listen on: their source ports are not remembered as addresses (a claim is
    # booked as its link opens), nor dialled
    assert node.status()["p2p"]["known_addresses"] == 0
    assert "dial (inbound)" not in node.log_path.read_text(), node.log_tail(20)
