"""Adaptive RPC routing between real exchange-node processes: 5 workers serve `test.echo`, one made slow
(10x), one failing 50% fast, one killed; a client node sending steady traffic moves off the bad ones,
loses nothing to the killed one, and brings traffic back to the healed ones."""
from __future__ import annotations

import concurrent.futures
import time
import urllib.request

import pytest

from tests.harness import wait_until

pytestmark = pytest.mark.timeout(90)

BASE_DELAY = 0.02    # every worker's normal service time (s)
RATE = 200.0         # client requests per second


def load(client, seconds: float, rate: float = RATE, bucket: float = 0.5) -> dict:
    status, body = client.api("POST", "/debug/rpc-load", {"service": "test.echo", "rate": rate, "seconds": seconds,
                                                          "bucket": bucket, "timeout": 2.0, "payload": {"n": 1}},
                              timeout=seconds + 30)
    assert status == 200, body
    return body


def share(result: dict, peers: set[str], since: float, until: float = 1e9) -> tuple[int, int]:
    """(attempts to `peers`, all attempts) over the buckets ending in (since, until]."""
    bad = total = 0
    for row in result["buckets"]:
        if since < row["t"] <= until:
            for peer, n in row["attempts"].items():
                total += n
                if peer in peers:
                    bad += n
    return bad, total


def set_fault(node, **fault) -> None:
    status, body = node.api("POST", "/debug/rpc-fault", {"delay": BASE_DELAY} | fault)
    assert status == 200, body


def test_router_avoids_slow_failing_and_killed_workers_and_returns_to_healed_ones(cluster):
    workers = [cluster.node(f"w{i}", start=False, debug_api="true", test_service_fault=f"delay={BASE_DELAY}")
               for i in range(5)]
    for w in workers:
        w.start(wait=False)
    for w in workers:
        w.wait_ready()
    client = cluster.node("client", debug_api="true", rpc_warmup=0, target_outbound=8,
                          bootstrap_peers=",".join(w.p2p_address for w in workers))
    wait_until(lambda: len(client.get("/routing")["services"].get("test.echo", {}).get("providers", [])) == 5, 15,
               message="client linked to the 5 workers, each offering test.echo")
    slow, failing, doomed, good = workers[0], workers[1], workers[2], workers[3:]

    healthy = load(client, 1.0)          # everyone healthy: the router learns a baseline
    assert healthy["failed"] == 0

    set_fault(slow, delay=10 * BASE_DELAY)
    set_fault(failing, fail=0.5)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(load, client, 6.0)
        time.sleep(0.5)
        doomed.kill()                     # kill -9 in the middle of the traffic
        faulty = running.result()
    bad_ids = {slow.node_id, failing.node_id, doomed.node_id}
    # no request lost: what the killed or the failing node did not answer was retried elsewhere
    assert faulty["failed"] == 0, faulty["errors"]
    # (slots are skipped, not bunched, while the client process is held up on a loaded machine)
    assert faulty["ok"] == faulty["sent"] >= 0.6 * faulty["planned"]
    assert faulty["retried"] > 0
    bad, total = share(faulty, bad_ids, since=2.0)
    assert total > 0.6 * 4.0 * RATE
    assert bad < 0.05 * total, (bad, total, faulty["buckets"])
    routing = client.get("/routing")["services"]["test.echo"]
    assert doomed.node_id not in routing["providers"]
    assert routing["peers"][failing.node_id]["error_rate"] > 0.05
    # the client told the network what it saw: signed DEGRADED hints, logged, received by the workers
    assert "DEGRADED for test.echo" in client.log_tail(400)
    assert client.get("/routing")["hints"]["counters"]["sent"] >= 1
    assert good[0].get("/routing")["hints"]["counters"]["received"] >= 1

    set_fault(slow)
    set_fault(failing)
    healed = load(client, 5.0)
    assert healed["failed"] == 0
    for node in (slow, failing):          # back to a real share of traffic within 5 s
        back, total = share(healed, {node.node_id}, since=3.0)
        assert back > 0.05 * total, (node.name, back, total, healed["buckets"])

    # the same decisions, visible to an operator: CLI and Prometheus
    shown = client.cli("routing")
    assert shown.returncode == 0 and "test.echo" in shown.stdout and "breaker" in shown.stdout
    assert slow.node_id[:16] in shown.stdout
    called = client.cli("rpc", "test.echo", '{"n": 3}')
    assert called.returncode == 0 and '"n": 3' in called.stdout, called.stderr
    refused = client.cli("rpc", "test.echo", '{"error": "no_such_thing"}')
    assert refused.returncode == 1 and "no_such_thing" in refused.stderr
    with urllib.request.urlopen(client.api_url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert f'exchange_node_rpc_peer_score{{peer="{slow.node_id}",service="test.echo"}}' in metrics
    assert 'exchange_node_rpc_peer_breaker{' in metrics and 'exchange_node_rpc_hints_sent_total ' in metrics
    assert 'exchange_node_rpc_attempt_duration_seconds_bucket{le="+Inf",outcome="ok",service="test.echo"}' in metrics
