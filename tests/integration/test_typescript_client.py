"""Real processes: the TypeScript client library (clients/typescript) on Node.js against real nodes.

- With its own key: place, replace, cancel, cancel-all and a typed error; then its dead-man's switch fires
  after the node it used is killed -9.
- A stream whose node is stopped and restarted mid-stream, with more trades than a snapshot holds made
  meanwhile, ends with exactly the node's book and every trade once, in order.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any


from tests.crossing import cross, open_ids, restart_caught_up
from tests.harness import Cluster, converged, free_ports, wait_until
from tests.typescript_client import needs_build, run, start

pytestmark = needs_build
FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def test_a_node_program_trades_with_its_own_key_and_its_switch_fires_after_its_node_dies(cluster: Cluster):
    (validator,) = cluster.chain(1, **FAST)
    near = cluster.node("near", bootstrap_peers=validator.p2p_address, **FAST)
    wait_until(lambda: converged([validator, near]), 20)
    seen = run("trade", near.api_url, near.api_token or "")
    assert all(seen["final"]) and seen["first"]["account"] == seen["account"]
    assert (seen["moved"]["price"], seen["moved"]["qty"]) == ("91.00", "2.0000")
    assert seen["gone"]["status"] == "cancelled" and seen["refused"] == {"status": 422, "code": "unknown_market"}
    assert seen["swept"]["status"] == "done" and seen["swept"]["cancelled"] == 1
    assert seen["armed"]["status"] == "armed"
    assert seen["named"]["client_id"] == "ts-desk-1" and seen["found"]["id"] == seen["named"]["id"]
    assert seen["unnamed"]["status"] == "cancelled"
    assert {r["error"]["code"] for r in seen["batch"]} == {"unknown_order"}      # refused whole: nothing placed
    wait_until(lambda: open_ids(validator, seen["account"]) == set(seen["quotes"]), 5)
    near.kill()
    assert time.time() * 1000 < seen["armed"]["at"]
    wait_until(lambda: not open_ids(validator, seen["account"]), 15, message="the switch fires from block time")
    assert {validator.get(f"/orders/{q}")["order"]["reason"] for q in seen["quotes"]} == {"scheduled_cancel"}


def test_a_stream_whose_node_restarts_ends_with_the_nodes_book_and_every_trade_once(cluster: Cluster):
    (validator,) = cluster.chain(1, **FAST)
    validator.new_accounts("maker", "taker")
    api_port = free_ports(1)[0]
    watched = cluster.node("watched", bootstrap_peers=validator.p2p_address, api_port=api_port, **FAST)
    wait_until(lambda: converged([validator, watched]), 20)


    streamer = start("stream", watched.api_url)
    lines: list[dict] = []

    def read() -> None:
        assert streamer.stdout is not None
        for line in streamer.stdout:
            lines.append(json.loads(line))
    threading.Thread(target=read, daemon=True).start()
    try:
        wait_until(lambda: any(e.get("kind") == "snapshot" for e in lines), 15, message="the stream subscribed")
        cross(validator, 30, 100)
        first = len(watched.get("/trades/BTC-USD?limit=10000")["trades"])
        wait_until(lambda: lines and lines[-1].get("trades", 0) >= first, 10, message="the first trades streamed")
        watched.stop()
        cross(validator, 250, 200)
        validator.api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "price": "50", "qty": "3",
                                          "account": "maker"})
        restart_caught_up(watched, [validator], api_port)
        trades = watched.get("/trades/BTC-USD?limit=10000")["trades"]
        book = watched.get("/book/BTC-USD?depth=25")
        expected_book = {"bids": book["bids"], "asks": book["asks"]}
        wait_until(lambda: lines and lines[-1].get("trades", 0) >= len(trades) and lines[-1].get("book") == expected_book,
                   20, message="the stream caught up")
        assert streamer.stdin is not None
        streamer.stdin.write("done\n")
        streamer.stdin.flush()
        wait_until(lambda: lines and lines[-1].get("final"), 10, message="the stream's final copy")
        final = lines[-1]
    finally:
        streamer.kill()
    assert len(final["trades"]) == len(set(final["trades"])), "a trade was delivered twice"
    assert final["trades"] == [t["id"] for t in trades], ("trades missing or out of order", len(final["trades"]),
                                                          len(trades), final["kinds"], final["backfills"])
    assert final["book"] == {"bids": book["bids"], "asks": book["asks"]}
    assert final["reconnects"] == 1 and final["backfills"] == 1 and "resnapshot" in final["kinds"], final["kinds"]
    assert final["lastResumeMs"] is not None
    assert final["history"] == final["trades"] and final["hourlyTrades"] == len(trades)
