"""Real processes: the documented way out of a permanent halt, end to end.

Four validators (seats granted by the founder's join token) and a follower trade; then two validators are
killed with SIGKILL and their data dirs deleted: gone for good. The two left can never again form a
quorum (3 of 4): orders get 202 `no_quorum` and no height moves. Each survivor's operator runs
`exchange-node validators recover --keep A,B` as docs/orders-and-finality.md says. Then orders are final again on both
survivors and on the follower, the orders taken during the halt are final too, every fill final before the
halt is still there identically on every node, and the validator set is the two survivors.
"""
from __future__ import annotations

import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.harness import Cluster, NodeProcess, converged, wait_until
from tests.integration.test_exchange import check_history, random_order

pytestmark = pytest.mark.timeout(240)

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _trade(nodes: list[NodeProcess], seconds: float) -> dict[str, tuple[int, dict]]:
    """Every node's client places random orders (many cross) for `seconds`: {order id: (status, order)}."""
    answers: dict[str, tuple[int, dict]] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        rng = random.Random(index)
        while time.monotonic() < stop_at:
            status, body = nodes[index].api("POST", "/orders?wait=2", random_order(rng), timeout=10)
            assert status in (201, 202), (status, body)
            with lock:
                answers[body["order"]["id"]] = (status, body["order"])

    with ThreadPoolExecutor(len(nodes)) as pool:
        for future in [pool.submit(client, i) for i in range(len(nodes))]:
            future.result()
    return answers


def _trades(node: NodeProcess) -> list[dict]:
    return node.get("/trades/BTC-USD?limit=10000")["trades"]


def test_validators_gone_for_good_are_recovered_from_by_the_survivors_keeping_every_final_fill(cluster: Cluster):
    validators = cluster.chain(4, **FAST)
    follower = cluster.node("follower", bootstrap_peers=validators[0].p2p_address, **FAST)
    wait_until(lambda: follower.status()["height"] >= validators[0].status()["height"] - 1 > 0, 20,
               message="the follower follows the chain")
    nodes = [*validators, follower]
    answers = _trade(nodes, 4.0)
    assert sum(1 for status, _ in answers.values() if status == 201) > 20, "orders final before the halt"
    wait_until(lambda: converged(nodes), 30, interval=0.3, message="all 5 nodes agree before the halt")
    before = _trades(validators[0])
    assert len(before) > 5, "fills before the halt"

    survivors, gone = validators[:2], validators[2:]
    for node in gone:                               # gone for good: kill -9, and their data is lost
        node.kill()
        shutil.rmtree(node.data_dir)
    live = [*survivors, follower]

    probe = {"market": "BTC-USD", "side": "buy", "type": "post_only", "price": "50.00", "qty": "0.1"}
    halted: list[str] = []

    def no_quorum() -> bool:
        status, body = survivors[0].api("POST", "/orders?wait=1", probe, timeout=10)
        assert status == 202, (status, body)
        halted.append(body["order"]["id"])
        return body["reason"] == "no_quorum"
    wait_until(no_quorum, 20, interval=0.2, message="a survivor answers 202 no_quorum")
    status, body = follower.api("POST", "/orders?wait=1", probe, timeout=10)
    assert status == 202, (status, body)
    halted.append(body["order"]["id"])
    stuck = {n.name: n.status()["height"] for n in live}
    time.sleep(2.0)                                 # nothing to await: the point is that nothing happens
    assert {n.name: n.status()["height"] for n in live} == stuck, "a height moved without a quorum"
    assert all(n.status()["quorum"] is False for n in survivors)

    keep = ",".join(n.node_id for n in survivors)
    first = survivors[0].cli("validators", "recover", "--keep", keep, "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "waiting for the consent of" in first.stdout, first.stdout
    assert {n.name: n.status()["height"] for n in live} == stuck, "one consent of two recovered"
    second = survivors[1].cli("validators", "recover", "--keep", keep, "--yes", "--wait", "30", timeout=60)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "recovered" in second.stdout, second.stdout

    expected = sorted(n.node_id for n in survivors)
    wait_until(lambda: all(sorted(n.status()["validators"]) == expected for n in live), 20, interval=0.2,
               message="every live node holds the recovered set of the two survivors")
    for node in live:
        status, body = node.api("POST", "/orders?wait=5", probe, timeout=20)
        assert status == 201 and body["final"] is True, (node.name, status, body)
    wait_until(lambda: all(node.api("GET", f"/orders/{oid}")[0] == 200 for node in live for oid in halted), 20,
               message="the orders taken during the halt are final on every live node")
    wait_until(lambda: converged(live), 30, interval=0.3, message="survivors and follower agree after the recovery")
    check_history(live, answers)
    for node in live:
        after = {t["id"]: t for t in _trades(node)}
        assert all(after.get(t["id"]) == t for t in before), f"a fill final before the halt changed on {node.name}"
