"""Our node and real Grenache (grenache-nodejs-http, real grapes), both ways, through the node's RPC layer:
- our node calls Node.js workers announced on Grape, picked by the adaptive router, retried on another
  worker when one dies, worker error answers passed through as codes;
- Node.js PeerRPCClients call the services our node serves on its Grenache endpoint (announced on
  Grape), and get correct answers and errors, plain and gzipped."""
from __future__ import annotations

import socket
import time

import pytest

from tests.harness import wait_until
from tests.interop.grenache_harness import free_port, http_post_json, run_node_json

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


def grenache_call(node, service: str, payload, timeout: float = 5.0) -> tuple[int, dict]:
    return node.api("POST", f"/rpc/{service}", {"payload": payload, "grenache": True, "timeout": timeout})


def test_node_calls_nodejs_workers_through_the_router(grapes, node_worker, cluster):
    w1 = node_worker(grapes[0], "interop:rpc-echo", worker_id="w1")
    node_worker(grapes[1], "interop:rpc-echo", worker_id="w2")      # announced through the other grape
    node = cluster.node("py", grape_urls=grapes[0])
    answered_by = set()
    for i in range(30):
        status, body = grenache_call(node, "interop:rpc-echo", {"i": i})
        assert status == 200, body
        assert body["result"]["echo"] == {"i": i} and body["result"]["len"] == len('{"i":%d}' % i)
        answered_by.add(body["result"]["worker"])
    assert answered_by == {"w1", "w2"}                # the router explored and used both workers

    status, body = grenache_call(node, "interop:rpc-echo", "boom")   # the worker's own error answer
    assert status == 502 and body["error"]["code"] == "ERR_BOOM" and body["error"]["attempts"] == 1

    routing = node.get("/routing")["grenache"]["workers"]["services"]["interop:rpc-echo"]
    assert len(routing["workers"]) == 2 and all(row["breaker"] == "closed" for row in routing["peers"].values())

    w1.stop()                                          # a worker dies (its Grape record stays): nothing is lost
    for i in range(25):                                # over 2.5 s: the router explores w1 again, and retries
        status, body = grenache_call(node, "interop:rpc-echo", i)
        assert status == 200, body
        assert body["result"]["worker"] == "w2"
        time.sleep(0.1)
    counters = node.get("/routing")["grenache"]["workers"]["counters"]
    assert counters["failed"] == 1                     # only the "boom" answer
    assert counters["retries"] >= 1

    status, body = grenache_call(node, "interop:nobody-serves-this", 1)
    assert status == 503 and body["error"]["code"] == "no_peers"


def test_nodejs_clients_call_our_grenache_endpoint(grapes, cluster):
    port = free_port((socket.SOCK_STREAM,))
    node = cluster.node("py", grape_urls=grapes[0], grenache_rpc_port=port, grenache_services="ping,test.echo",
                        debug_api="true")
    wait_until(lambda: http_post_json(f"{grapes[1]}/lookup", "test.echo") == [f"127.0.0.1:{port}"], 10,
               message="our endpoint announced on Grape")
    assert node.get("/routing")["grenache"]["endpoint"]["port"] == port

    payloads = [{"a": [1, 2, {"b": None}]}, "text", 7, None, {"error": "insufficient_funds"}]
    for compress in (False, True):
        results = run_node_json("client.js", grape=grapes[1], service="test.echo", payloads=payloads,
                                compress=compress)
        assert results[:4] == [{"ok": True, "data": {"echo": p, "node_id": node.node_id}} for p in payloads[:4]]
        assert results[4] == {"ok": False, "error": "ERR_INSUFFICIENT_FUNDS"}

    pong = run_node_json("client.js", grape=grapes[1], service="ping", payloads=[None])
    assert pong[0]["ok"] is True and pong[0]["data"]["pong"] is True and pong[0]["data"]["node_id"] == node.node_id
    # services not in GRENACHE_SERVICES are neither announced nor served
    assert http_post_json(f"{grapes[1]}/lookup", "book.snapshot") == []
    started = time.monotonic()
    missing = run_node_json("client.js", grape=grapes[1], service="book.snapshot", payloads=[None])
    assert missing == [{"ok": False, "error": "ERR_GRAPE_LOOKUP_EMPTY"}] and time.monotonic() - started < 10
