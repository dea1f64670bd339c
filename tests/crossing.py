"""What the client-library and cancel tests do to real nodes as traders would: read an account's open orders,
and make crossing trades between two of a node's accounts."""
from __future__ import annotations

from tests.harness import NodeProcess


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
