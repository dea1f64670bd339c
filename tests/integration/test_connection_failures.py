"""Connection failures said out loud: a refused bootstrap address and a NETWORK_ID mismatch are
logged at the default level with their cause and address, once (then rate-limited), on both sides
where there are two, and shown as `last_error` in /status and /peers."""
from __future__ import annotations

import time

from tests.harness import closed_port, wait_until


def lines(node, needle: str) -> list[str]:
    """The node's p2p log lines that mention `needle` (the test's own directory name may contain it too)."""
    return [line for line in node.log_path.read_text().splitlines() if needle in line and " p2p." in line]


def test_a_refused_bootstrap_address_is_logged_once_and_shown(cluster):
    port = closed_port()
    a = cluster.node("a", bootstrap_peers=f"127.0.0.1:{port}", log_level="INFO")
    wait_until(lambda: (a.status()["p2p"]["last_error"] or {}).get("address") == f"127.0.0.1:{port}", 5)
    error = a.status()["p2p"]["last_error"]
    assert error["what"].startswith("dial") and "refused" in error["reason"].lower() and error["at"] > 0
    wait_until(lambda: a.status()["p2p"]["counters"]["dial_failures"] >= 3, 15, message="a few retries")
    logged = lines(a, f"127.0.0.1:{port} failed")
    assert len(logged) == 1 and " INFO " in logged[0], logged  # once, then rate-limited


def test_a_network_mismatch_is_visible_on_both_sides(cluster):
    a = cluster.node("a", network_id="net-one")
    b = cluster.node("b", network_id="net-two", bootstrap_peers=a.p2p_address)
    wait_until(lambda: lines(a, "network_mismatch") and lines(b, "network_mismatch"), 10)
    assert " WARNING " in lines(a, "network_mismatch")[0] and " WARNING " in lines(b, "network_mismatch")[0]
    assert "127.0.0.1" in lines(a, "network_mismatch")[0] and a.p2p_address in lines(b, "network_mismatch")[0]
    # each side reads the other's hello and refuses it (or hears the other's goodbye first)
    assert b.status()["p2p"]["last_error"]["reason"] in ("network_mismatch", "remote_network_mismatch")
    error = a.status()["p2p"]["last_error"]
    assert error["reason"] in ("network_mismatch", "remote_network_mismatch") and "net-" in error["detail"]
    time.sleep(0.5)
    assert a.connected_ids() == set() and b.connected_ids() == set()


def test_a_peer_that_went_bad_shows_its_last_error_in_peers(cluster):
    a = cluster.node("a", heartbeat_interval=0.2)
    b = cluster.node("b", bootstrap_peers=a.p2p_address, heartbeat_interval=0.2)
    wait_until(lambda: b.node_id in a.connected_ids(), 5)
    b.kill()
    wait_until(lambda: (next(p for p in a.peers() if p["node_id"] == b.node_id).get("last_error") or {})
               .get("reason") in ("connection_reset", "heartbeat_timeout", "connection_closed"), 5)
