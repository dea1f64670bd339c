"""A halt is loud, and pending orders are first-class, on four real pinned validators (loopback).

kill -9 one validator: orders stay final. kill -9 a second: a new order is answered 202 `no_quorum`;
within 10 s a node's log has a WARNING naming the two silent validators, and so has a follower's (which hears
validators only through blocks and heartbeats); `/ready` is 503 saying why, on the follower too;
`/metrics` says quorum 0 and for how long; the order is `pending` with its reason in `GET /orders/{id}`;
`exchange-node order` says NOT FINAL and exits 3 naming the reason; the halted chain's clock does not spin.
Restart one of the two: every pending order becomes final on every node, and the log says the quorum is back."""
from __future__ import annotations

import re
import time

from exchange.chain.ticker import BUSY_TICK
from tests.harness import NodeProcess, wait_until
from tests.integration.chain_nodes import pinned_loopback, wait_for

HALT_WARNING = re.compile(r"^\S+ WARNING exchange\.chain: chain halted for \d+ s: no quorum of validators.*$", re.M)
FOLLOWER_HALT_WARNING = re.compile(r"^\S+ WARNING exchange\.chain: chain halted for \d+ s: no final block reached "
                                   r"this follower.*$", re.M)


def order(price: str) -> dict:
    return {"market": "BTC-USD", "side": "buy", "type": "post_only", "price": price, "qty": "0.1"}


def halt_warnings(node: NodeProcess, pattern: re.Pattern[str] = HALT_WARNING) -> list[str]:
    return pattern.findall(node.log_path.read_text(errors="replace"))


def test_a_halt_is_loud_and_pending_orders_become_final_after_it(cluster):
    validators, followers = pinned_loopback(cluster, 4, followers=1)
    v0, v1, v2, v3 = validators
    follower = followers[0]
    everyone = [*validators, follower]

    v3.kill()
    status, body = v0.api("POST", "/orders?wait=10", order("50.00"), timeout=20)
    assert (status, body["final"]) == (201, True), body          # 3 of 4: a quorum
    assert halt_warnings(v0) == []

    v2.kill()
    killed_at = time.monotonic()
    silent = {v2.node_id, v3.node_id}

    def warned() -> str | None:
        lines = [line for line in halt_warnings(v0) if all(node in line for node in silent)]
        return lines[0] if lines else None
    line = wait_for(warned, 10.0, "a WARNING naming both silent validators in v0's log", everyone)
    assert time.monotonic() - killed_at <= 10.0
    assert v1.node_id not in line and "3 of 4 needed, 2 heard" in line, line

    # the follower names them too: both signed the last block it has, and it has heard neither since (it used
    # to name "none"); the two alive are heard through their heartbeats
    def follower_warned() -> str | None:
        lines = [line for line in halt_warnings(follower, FOLLOWER_HALT_WARNING) if all(n in line for n in silent)]
        return lines[0] if lines else None
    line = wait_for(follower_warned, 12.0, "a WARNING naming both silent validators in the follower's log", everyone)
    assert v0.node_id not in line and v1.node_id not in line and "none" not in line, line
    assert "3 of 4 needed, 2 heard" in line, line
    status, ready = follower.api("GET", "/ready")
    detail = next(c["detail"] for c in ready["checks"] if c["name"] == "chain")
    assert status == 503 and all(node in detail for node in silent) and v0.node_id not in detail, detail
    halt = follower.get("/status")["exchange"]["halt"]
    assert sorted(s["node_id"] for s in halt["silent"]) == sorted(silent), halt

    status, pending = v0.api("POST", "/orders?wait=1", order("51.00"), timeout=15)
    assert (status, pending["final"], pending["reason"]) == (202, False, "no_quorum"), pending
    order_id = pending["order"]["id"]

    status, ready = v0.api("GET", "/ready")
    assert status == 503 and ready["failing"] == ["chain"], ready
    detail = next(c["detail"] for c in ready["checks"] if c["name"] == "chain")
    assert "no quorum of validators" in detail and all(node in detail for node in silent), detail
    assert v0.metric("exchange_node_chain_quorum") == 0.0
    assert v0.metric("exchange_node_chain_halted_seconds") > 0.0

    # halted is loud, not busy: the chain's clock ticks at its timeouts (every BUSY_TICK at most while its own
    # orders wait), not in a loop at a deadline that has passed
    window = 2.0
    before, started = v0.get("/status")["exchange"]["ticks"], time.monotonic()
    time.sleep(window)          # the window the rate is measured over
    ticks = v0.get("/status")["exchange"]["ticks"] - before
    assert ticks <= 1.5 * (time.monotonic() - started) / BUSY_TICK, f"{ticks} ticks in {window} s halted"

    status, seen = v0.api("GET", f"/orders/{order_id}")
    assert (status, seen["final"], seen["order"]["status"], seen["order"]["reason"]) == (200, False, "pending",
                                                                                         "no_quorum"), seen
    assert order_id in [o["id"] for o in v0.get("/orders?status=pending")["orders"]]

    done = v1.cli("order", "buy", "BTC-USD", "0.1", "--price", "52.00", "--type", "post_only", "--wait", "1")
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr)
    assert "NOT FINAL (no_quorum)" in done.stdout and "not final within 1 s (no_quorum)" in done.stderr, done
    cli_order = done.stdout.split()[0]
    assert v1.get(f"/orders/{cli_order}")["order"]["status"] == "pending"

    v2.start()
    alive = [v0, v1, v2]

    def final_everywhere() -> bool:
        for node in alive:
            for oid in (order_id, cli_order):
                status, answer = node.api("GET", f"/orders/{oid}")
                if status != 200 or not answer["final"] or answer["order"]["status"] != "open":
                    return False
        return True
    wait_for(final_everywhere, 60.0, "both pending orders final (open) on every live node", alive)
    assert v0.get("/orders?status=pending")["orders"] == [] and v1.get("/orders?status=pending")["orders"] == []
    wait_until(lambda: v0.api("GET", "/ready")[0] == 200, 20.0, message="v0 ready again")
    wait_until(lambda: "chain quorum is back after" in v0.log_path.read_text(errors="replace"), 10.0,
               message="v0 logs that the quorum is back")
    assert v0.metric("exchange_node_chain_halted_seconds") == 0.0
