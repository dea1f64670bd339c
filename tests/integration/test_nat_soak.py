"""The longer NAT matrix (`make soak`): hole punching over every pair of NAT kinds, with and without delay
between sites, 40 tries each on real processes in the WAN test network. Endpoint-independent pairs (cone)
must punch at least 90 % of the time;
symmetric pairs cannot (a new port per destination) and must stay carried by the relay on every try."""
from __future__ import annotations

import shutil

import pytest

from tests.integration.netns import netns_unavailable, nft_unavailable
from tests.integration.wan import NatKind, punch_pair, punch_trials

pytestmark = [pytest.mark.soak, pytest.mark.netns, pytest.mark.timeout(900)]

TRIES = 40
P2P_PORT = 7946
SETTINGS = {"heartbeat_interval": 0.5, "peer_reconnect_interval": 2.0, "p2p_port": P2P_PORT, "debug_api": "true",
            "port_mapping": "false", "hole_punch_cooldown": 0.001}   # each try is a new punch, ms after the last
MATRIX: list[tuple[NatKind, NatKind, float]] = [
    ("cone", "cone", 0.0), ("cone", "cone", 25.0),
    ("cone", "symmetric", 0.0), ("cone", "symmetric", 25.0), ("symmetric", "symmetric", 25.0)]


@pytest.mark.parametrize("first,second,edge_ms", MATRIX, ids=[f"{a}-{b}-{2 * d:.0f}ms" for a, b, d in MATRIX])
def test_punching_matrix(tmp_path, first: NatKind, second: NatKind, edge_ms: float) -> None:
    reason = netns_unavailable() or nft_unavailable()
    if not reason and edge_ms and shutil.which("iptables") is None:
        reason = "iptables not installed (apt-get install iptables): delay uses its NFQUEUE target"
    if reason:
        pytest.skip(reason)
    net, relay, a, b = punch_pair(tmp_path, [first, second], "s", edge_delay_ms=edge_ms, **SETTINGS)
    try:
        results = punch_trials(relay, a, b, TRIES)
    finally:
        net.close()
    direct = sum(1 for r in results if r["direct"])
    relayed = sum(1 for r in results if r["relayed_ms"] is not None)
    print(f"{first}/{second} at {2 * edge_ms:.0f} ms one way: {direct}/{TRIES} direct, {relayed}/{TRIES} relayed")
    assert relayed == TRIES, f"the relay must carry the pair on every try: {results}"
    if "symmetric" in (first, second):
        assert direct == 0, "a symmetric NAT cannot be punched by port guessing we do not do"
    else:
        assert direct >= 0.9 * TRIES, f"{direct}/{TRIES} direct: {results}"
