"""Real processes: a follower hands its client's order to a validator that
refuses it (here the account is past its operations for the last hundred blocks, `account_rate`). The client
used to get 202 `not_final_yet` and nothing else while the follower only logged the refusal; now the 202, the
pending order's view and the CLI say what the validator answered, until a validator takes it."""
from __future__ import annotations

import time
from typing import Any

from tests.harness import Cluster, converged, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _order(price: str) -> dict:
    return {"market": "BTC-USD", "side": "buy", "price": price, "qty": "1", "account": "busy"}


def test_a_followers_client_is_told_what_the_validator_refused_its_order_for(cluster: Cluster):
    # two operations of an account per hundred blocks; blocks every 50 ms when idle, so the window passes in ~5 s
    (validator,) = cluster.chain(1, account_ops_per_100_blocks=2, empty_block_interval=0.05, **FAST)
    follower = cluster.node("follower", role="follower", bootstrap_peers=validator.p2p_address, **FAST)
    wait_until(lambda: converged([validator, follower]), 20)
    follower.new_accounts("busy")
    for price in ("90", "91"):
        status, body = follower.api("POST", "/orders?wait=10", _order(price))
        assert status == 201, body

    status, body = follower.api("POST", "/orders?wait=1", _order("92"))
    assert status == 202 and body["reason"] == "not_final_yet", body
    refusal = body["validator_refusal"]
    assert refusal is not None and refusal["error"] == "account_rate", body
    assert refusal["validator"] == validator.node_id and refusal["age_s"] < 1.5, refusal
    order_id = body["order"]["id"]
    assert body["order"]["validator_refusal"] == refusal
    view = follower.get(f"/orders/{order_id}")
    assert view["final"] is False and view["order"]["status"] == "pending", view
    assert view["validator_refusal"]["error"] == view["order"]["validator_refusal"]["error"] == "account_rate", view
    listed = follower.cli("orders")
    assert listed.returncode == 0 and "a validator refused it for now: account_rate" in listed.stdout, listed

    # the follower keeps handing it on; once the hundred-block window has room the validator takes it
    started = time.monotonic()
    final = wait_until(lambda: (v := follower.get(f"/orders/{order_id}")).get("final") and v, 30,
                       message="the refused order final once the account's window had room")
    assert final["order"]["status"] == "open" and "validator_refusal" not in final["order"], final
    assert time.monotonic() - started < 30
    assert follower.get("/orders?status=pending")["orders"] == []
