"""Real processes: the Python client library (clients/python) as a trading program uses it.

- With its own key (the node never sees it): place, replace, cancel, cancel-all, typed errors, the sync
  wrapper; then the dead-man's switch armed through the client's node fires after that node is killed -9.
- A market data stream whose node is stopped and restarted mid-stream, with more trades than a snapshot
  holds made meanwhile, ends with exactly the node's book and every trade once, in order.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from exchange_node_client import ApiError, AsyncClient, Client, MarketStream, Signer
from tests.crossing import cross, open_ids, restart_caught_up
from tests.harness import Cluster, converged, free_ports, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def test_a_program_trades_with_its_own_key_and_its_switch_fires_after_its_node_dies(cluster: Cluster):
    (validator,) = cluster.chain(1, **FAST)
    near = cluster.node("near", bootstrap_peers=validator.p2p_address, **FAST)
    wait_until(lambda: converged([validator, near]), 20)
    signer = Signer.generate()

    async def trade() -> tuple[list[str], int]:
        async with AsyncClient(near.api_url, near.api_token, signer) as client:
            first = await client.place("BTC-USD", "buy", "1", "90")
            assert first.final and first.order and first.order_id
            assert first.order["status"] == "open" and first.order["account"] == signer.account
            second = await client.place("BTC-USD", "sell", "1", "110")
            assert second.order_id
            moved = await client.replace(first.order_id, "2", "91")
            assert moved.final and moved.order and moved.order["price"] == "91.00" and moved.order["qty"] == "2.0000"
            assert (await client.order(first.order_id))["status"] == "cancelled"
            gone = await client.cancel(second.order_id)
            assert gone.final and gone.order and gone.order["status"] == "cancelled"
            with pytest.raises(ApiError) as closed:
                await client.cancel(second.order_id)                      # already closed: the node says so
            assert (closed.value.status, closed.value.code) == (409, "order_closed")
            with pytest.raises(ApiError) as refused:
                await client.place("NOPE-USD", "buy", "1", "1")
            assert refused.value.status == 422 and refused.value.code == "unknown_market"
            swept = await client.cancel_all()
            assert swept.final and swept.body["cancel_all"]["cancelled"] == 1
            quotes = [(await client.place("BTC-USD", side, "1", price)).order_id
                      for side, price in (("buy", "95"), ("sell", "105"))]
            armed = await client.cancel_after(3)
            assert armed.final and armed.body["schedule_cancel"]["status"] == "armed"
            return [q for q in quotes if q], armed.body["schedule_cancel"]["at"]

    quotes, at = asyncio.run(trade())
    wait_until(lambda: open_ids(validator, signer.account) == set(quotes), 5)
    near.kill()                                                            # kill -9 of the client's node
    assert time.time() * 1000 < at
    wait_until(lambda: not open_ids(validator, signer.account), 15, message="the switch fires from block time")
    assert {validator.get(f"/orders/{q}")["order"]["reason"] for q in quotes} == {"scheduled_cancel"}
    with Client(validator.api_url, validator.api_token) as sync:          # the blocking wrapper, the node's key
        placed = sync.place("BTC-USD", "buy", "1", "80")
        assert placed.final and sync.cancel_all().body["cancel_all"]["cancelled"] >= 1


def test_a_stream_whose_node_restarts_ends_with_the_nodes_book_and_every_trade_once(cluster: Cluster):
    (validator,) = cluster.chain(1, **FAST)
    validator.new_accounts("maker", "taker")
    api_port = free_ports(1)[0]
    watched = cluster.node("watched", bootstrap_peers=validator.p2p_address, api_port=api_port, **FAST)
    wait_until(lambda: converged([validator, watched]), 20)


    async def run() -> tuple[MarketStream, list[dict], dict]:
        stream = MarketStream(watched.api_url, backoff=(0.05, 0.5))
        stream.subscribe_book("BTC-USD", 25)
        stream.subscribe_trades("BTC-USD")
        delivered: list[dict] = []
        kinds: list[str] = []
        book: dict = {}
        loop = asyncio.get_running_loop()

        async def consume() -> None:
            async for event in stream.events():
                kinds.append(event.kind)
                delivered.extend(event.trades)
                if event.channel == "book":
                    book["bids"], book["asks"] = event.bids, event.asks

        reader = asyncio.create_task(consume())
        await loop.run_in_executor(None, cross, validator, 30, 100)
        first = await loop.run_in_executor(None, lambda: wait_until(
            lambda: len(watched.get("/trades/BTC-USD?limit=10000")["trades"]), 15))
        await loop.run_in_executor(None, lambda: wait_until(lambda: len(delivered) >= first, 15,
                                                            message="the first trades streamed"))
        await loop.run_in_executor(None, watched.stop)                     # the node goes away mid-stream
        await loop.run_in_executor(None, cross, validator, 250, 200)        # more trades than a snapshot holds
        validator.api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "price": "50", "qty": "3",
                                          "account": "maker"})
        await loop.run_in_executor(None, restart_caught_up, watched, [validator], api_port)
        final_trades = watched.get("/trades/BTC-USD?limit=10000")["trades"]
        final_book = watched.get("/book/BTC-USD?depth=25")

        def caught_up() -> bool:
            return len(delivered) >= len(final_trades) and book.get("bids") == final_book["bids"] \
                and book.get("asks") == final_book["asks"]
        await loop.run_in_executor(None, lambda: wait_until(caught_up, 20, message="the stream caught up"))
        await stream.close()
        reader.cancel()
        assert "disconnected" in kinds and "reconnected" in kinds and "resnapshot" in kinds, kinds
        return stream, delivered, {"trades": final_trades, "book": final_book, "first": first}

    stream, delivered, final = asyncio.run(run())
    ids, first_count = [t["id"] for t in delivered], final["first"]
    assert len(ids) == len(set(ids)), "a trade was delivered twice"
    assert ids == [t["id"] for t in final["trades"]], "trades missing or out of order"
    assert stream.reconnects == 1 and stream.last_resume_s is not None
    assert stream.backfills == 1 and len(ids) - first_count > 100, "the gap was not larger than a snapshot"

    async def history() -> tuple[list[dict], list[dict], list[dict]]:
        async with AsyncClient(watched.api_url, watched.api_token) as client:
            return (await client.trade_history("BTC-USD"), await client.candles("BTC-USD", "1h"),
                    await client.peers())
    every, hourly, peers = asyncio.run(history())
    assert [t["id"] for t in every] == ids and sum(c["trades"] for c in hourly) == len(ids) and peers
