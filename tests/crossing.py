"""What the client-library and cancel tests do to real nodes as traders would: read an account's open orders,
and make crossing trades between two of a node's accounts."""
from __future__ import annotations

from tests.harness import NodeProcess, converged, wait_until


def open_ids(node: NodeProcess, account: str) -> set[str]:
    """The ids of `account`'s open orders on `node`."""
    return {o["id"] for o in node.get(f"/orders?account={account}&status=open")["orders"]}


def cross(node: NodeProcess, count: int, price: int, maker: str = "maker", taker: str = "taker") -> None:
    """`count` sells by `maker` and as many buys by `taker` at prices from `price` up, final before return."""
    orders = [{"market": "BTC-USD", "side": side, "price": str(price + i % 3), "qty": "1", "account": account}
              for i in range(count) for account, side in ((maker, "sell"), (taker, "buy"))]
    for begin in range(0, len(orders), 200):
        status, body = node.api("POST", "/orders/batch?wait=10", {"orders": orders[begin:begin + 200]})
        assert status == 200 and all("error" not in r for r in body["results"]), body


def restart_caught_up(node: NodeProcess, others: list[NodeProcess], api_port: int) -> None:
    """Start `node` again on `api_port` only once it holds what `others` decided while it was down: it first
    catches up on another API port, out of sight of a stream client retrying `api_port`, so that client's
    reconnect meets the whole gap at once (a gap larger than a snapshot), however slow the machine is.
    Reconnecting while the node was still catching up would see the gap arrive live instead."""
    node.start(api_port=0)
    wait_until(lambda: converged([*others, node]), 30, message="the restarted node caught up")
    node.stop()
    node.start(api_port=api_port)
    wait_until(lambda: converged([*others, node]), 30)
