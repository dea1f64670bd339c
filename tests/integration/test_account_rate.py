"""Real processes: one account's operations per window of blocks. A transaction with more
operations than a block allows is refused account_rate (429 with Retry-After) and nothing of it rests; within
the allowance orders pass; the hundred-block window binds a steady sender; another account is not held up."""
from __future__ import annotations

from typing import Any

from tests.harness import Cluster

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _order(account: str, price: str) -> dict:
    return {"market": "BTC-USD", "side": "buy", "price": price, "qty": "1", "account": account}


def test_an_accounts_operations_are_bounded_per_block_and_per_hundred_blocks(cluster: Cluster):
    (node,) = cluster.chain(1, account_ops_per_block=5, account_ops_per_100_blocks=12, **FAST)
    node.new_accounts("busy", "other")
    status, body = node.api("POST", "/orders/batch?wait=5", {"orders": [_order("busy", "90")] * 6})
    assert status == 429 and body["error"]["code"] == "account_rate", body     # refused before it is signed
    status, body = node.api("POST", "/orders/batch?wait=5", {"orders": [_order("busy", "90")] * 5})
    assert status == 200 and all(r.get("final") for r in body["results"]), body
    answers = [node.api("POST", "/orders?wait=5", _order("busy", "91")) for _ in range(10)]
    accepted = [a for a in answers if a[0] == 201]
    refused = [a for a in answers if a[0] == 429]
    assert len(accepted) == 7 and refused, [a[0] for a in answers]     # 12 in a hundred blocks: 5 + 7
    assert {a[1]["error"]["code"] for a in refused} == {"account_rate"}
    status, body = node.api("POST", "/orders?wait=5", _order("other", "92"))
    assert status == 201, body
    view = node.status()["exchange"]["account_rate"]
    assert view["windows"] == [[1, 5], [100, 12]] and view["refused"] >= len(refused) + 1
