"""Real processes: client order ids, as a trading program that lost its answer uses them.

- A program places an order with a client id while the network has no quorum (one of its two validators is
  stopped), and gives up waiting (its HTTP timeout fires): it never learnt the order's id. It finds the order by
  its client id (pending on its node, then final once the validator is back), cancels it by client id, and
  every node shows the same cancelled order under that client id; the client id cannot be used again while
  the order is recent.
- The CLI places with `--client-id`, lists with `orders --client-id` and cancels with `cancel --client-id`.
"""
from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
import pytest

from exchange_node_client import ApiError, AsyncClient
from tests.harness import Cluster, NodeProcess, converged, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _by_client_id(node: NodeProcess, client_id: str) -> list[dict]:
    return node.get(f"/orders?client_id={client_id}")["orders"]


def test_a_client_that_timed_out_finds_its_order_by_client_id_and_cancels_it(cluster: Cluster):
    entry, other = cluster.chain(2, seat_rule="any", **FAST)      # two validators: a quorum needs both

    async def post_and_give_up() -> None:
        async with AsyncClient(entry.api_url, entry.api_token, timeout=0.5, retries=0) as impatient:
            with pytest.raises((asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
                await impatient.place("BTC-USD", "buy", "1", "90", client_id="desk-42", wait=10)

    assert other.proc is not None
    other.proc.send_signal(signal.SIGSTOP)            # no quorum: the order cannot be final yet
    try:
        asyncio.run(post_and_give_up())
        wait_until(lambda: [o["status"] for o in _by_client_id(entry, "desk-42")] == ["pending"], 5,
                   message="the node holds the order it was sent, pending, under its client id")
    finally:
        other.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: [o["status"] for o in _by_client_id(entry, "desk-42")] == ["open"], 15,
               message="the order is final once the validator is back")

    async def find_and_cancel() -> tuple[dict, str]:
        async with AsyncClient(entry.api_url, entry.api_token) as client:
            (found,) = await client.orders_by_client_id("desk-42")
            assert found["client_id"] == "desk-42" and found["price"] == "90.00"
            with pytest.raises(ApiError) as again:
                await client.place("BTC-USD", "buy", "1", "91", client_id="desk-42")
            assert (again.value.status, again.value.code) == (409, "duplicate_client_id")
            gone = await client.cancel_by_client_id("desk-42")
            assert gone.final and gone.order and gone.order["status"] == "cancelled", gone.body
            with pytest.raises(ApiError) as unknown:
                await client.cancel_by_client_id("never-used")
            assert unknown.value.code == "unknown_client_id"
            return found, gone.order["id"]

    found, cancelled = asyncio.run(find_and_cancel())
    assert cancelled == found["id"]
    wait_until(lambda: converged([entry, other]), 10)
    for node in (entry, other):
        (seen,) = _by_client_id(node, "desk-42")
        assert (seen["id"], seen["status"], seen["client_id"]) == (found["id"], "cancelled", "desk-42")
    status, body = entry.api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "qty": "1", "price": "1",
                                                 "client_id": "not ok!"})
    assert (status, body["error"]["code"]) == (422, "invalid_client_id"), body
    status, body = entry.api("GET", "/orders?client_id=" + "x" * 37)
    assert (status, body["error"]["code"]) == (400, "invalid_client_id"), body


def test_the_cli_places_finds_and_cancels_by_client_id(cluster: Cluster):
    (node,) = cluster.chain(1, **FAST)
    placed = node.cli("order", "sell", "BTC-USD", "1", "--price", "120", "--client-id", "q-1", "--json")
    assert placed.returncode == 0, placed.stderr
    order = json.loads(placed.stdout)["order"]
    assert order["client_id"] == "q-1" and order["status"] == "open"
    listed = node.cli("orders", "--client-id", "q-1", "--json")
    assert listed.returncode == 0 and [o["id"] for o in json.loads(listed.stdout)["orders"]] == [order["id"]]
    done = node.cli("cancel", "--client-id", "q-1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["order"]["status"] == "cancelled"
    missing = node.cli("cancel", "--client-id", "q-2")
    assert missing.returncode != 0 and "unknown_client_id" in missing.stderr, missing.stderr
