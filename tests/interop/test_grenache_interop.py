"""Our Grape and Grenache HTTP code against the real Node.js Grenache (grapes, Link, PeerRPC client/worker)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import pytest

from grenache_harness import arun_node_json
from p2p.discovery.grape import GrapeDiscovery
from p2p.grenache.grape import GrapeClient, GrapeError
from p2p.grenache.limits import GrenacheLimits, ServerLimits
from p2p.grenache.rpc import GrenacheHTTPClient, GrenacheHTTPServer, GrenacheRemoteError
from p2p.resilience.backoff import Backoff

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


async def test_our_announce_is_visible_to_node_lookup(grapes):
    client = GrapeClient([grapes[0]])
    try:
        await client.announce("interop:announce", 47001)
        await client.announce("interop:announce", 47002)
        assert sorted(await client.lookup("interop:announce")) == [("127.0.0.1", 47001), ("127.0.0.1", 47002)]
    finally:
        await client.close()
    found = await arun_node_json("lookup.js", grape=grapes[1], service="interop:announce")
    assert found["ok"] is True
    assert sorted(found["addresses"]) == ["127.0.0.1:47001", "127.0.0.1:47002"]
    missing = await arun_node_json("lookup.js", grape=grapes[1], service="interop:nobody")
    assert missing == {"ok": False, "error": "ERR_GRAPE_LOOKUP_EMPTY"}


async def test_real_grape_answer_shapes(grapes):
    client = GrapeClient(list(grapes))
    try:
        digest = await client.put("interop value")
        assert await client.get(digest) == "interop value"
        assert await client.get("0" * 40) is None
        with pytest.raises(GrapeError) as info:
            await client.put("x" * 20000)
        assert info.value.code == "ERR_GRAPE_PAYLOAD_SIZE"
    finally:
        await client.close()


def test_grapes_stop_and_start_on_same_ports(grapes):
    urls, pids = list(grapes), grapes.pids
    grapes.stop()
    assert not grapes.running
    grapes.start()
    assert list(grapes) == urls and grapes.pids != pids and grapes.running


async def test_our_client_calls_node_worker_found_through_our_lookup(grapes, node_worker):
    worker = await asyncio.to_thread(node_worker, grapes[0], "interop:node-worker", worker_id="w1")
    grape = GrapeClient([grapes[1]])
    client = GrenacheHTTPClient(timeout=5)
    try:
        addresses = await grape.lookup("interop:node-worker")
        assert addresses == [("127.0.0.1", worker.port)]
        for compress in (False, True):
            for payload in ["hi", {"a": [1, 2, 3]}, None, 12.5, "ü" * 3000]:
                expected = {"echo": payload, "len": len(json.dumps(payload, ensure_ascii=False, separators=(",", ":"))),
                            "worker": "w1"}
                assert await client.request(addresses[0], "interop:node-worker", payload, compress=compress) == expected
            with pytest.raises(GrenacheRemoteError) as info:
                await client.request(addresses[0], "interop:node-worker", "boom", compress=compress)
            assert info.value.code == "ERR_BOOM"
            with pytest.raises(GrenacheRemoteError) as info:
                await client.request(addresses[0], "interop:node-worker", {"fail": "ERR_CUSTOM"}, compress=compress)
            assert info.value.code == "ERR_CUSTOM"
        results = await asyncio.gather(*(client.request(addresses[0], "interop:node-worker", i) for i in range(100)))
        assert [r["echo"] for r in results] == list(range(100))
    finally:
        await client.close()
        await grape.close()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
async def test_node_client_calls_our_server_announced_by_our_client(grapes, compress):
    async def price(payload):
        if payload == "boom":
            raise RuntimeError("must not leak")
        if isinstance(payload, dict) and "fail" in payload:
            raise GrenacheRemoteError(payload["fail"])
        return {"echo": payload, "from": "python"}

    server = GrenacheHTTPServer({"interop:py-worker": price}, host="127.0.0.1", port=0)
    port = await server.start()
    grape = GrapeClient([grapes[0]])
    try:
        await grape.announce("interop:py-worker", port)
        payloads = ["hi", {"n": [1, 2]}, None, "boom", {"fail": "ERR_NOPE"}, "x" * 5000]
        results = await arun_node_json("client.js", grape=grapes[1], service="interop:py-worker",
                                       payloads=payloads, compress=compress)
        assert results == [
            {"ok": True, "data": {"echo": "hi", "from": "python"}},
            {"ok": True, "data": {"echo": {"n": [1, 2]}, "from": "python"}},
            {"ok": True, "data": {"echo": None, "from": "python"}},
            {"ok": False, "error": "ERR_SERVICE_FAILED"},
            {"ok": False, "error": "ERR_NOPE"},
            {"ok": True, "data": {"echo": "x" * 5000, "from": "python"}},
        ]
        unknown = await arun_node_json("client.js", grape=grapes[1], service="interop:py-worker-unannounced",
                                       payloads=["hi"], compress=compress)
        assert unknown == [{"ok": False, "error": "ERR_GRAPE_LOOKUP_EMPTY"}]
    finally:
        await grape.close()
        await server.stop()


async def _echo(payload):
    return payload


async def node_client_calls(grape_url: str, server: GrenacheHTTPServer, service: str, payloads: list) -> tuple[list, float]:
    """Serve `server` as `service` on the grape and let the Node client call it with each payload in turn (a
    5 s timeout each): its results, and how long they took."""
    port = await server.start()
    grape = GrapeClient([grape_url])
    try:
        await grape.announce(service, port)
        started = time.monotonic()
        results = await arun_node_json("client.js", grape=grape_url, service=service, payloads=payloads,
                                       timeout=5000)
        return results, time.monotonic() - started
    finally:
        await grape.close()
        await server.stop()


async def test_node_client_gets_fast_error_for_oversized_request(grapes):
    server = GrenacheHTTPServer({"interop:small": _echo}, max_body_bytes=1024)
    results, seconds = await node_client_calls(grapes[0], server, "interop:small", ["x" * 4000, "ok"])
    assert seconds < 4
    assert results[0]["ok"] is False and "ERR_REQUEST_TOO_LARGE" in results[0]["error"]
    assert results[1] == {"ok": True, "data": "ok"}


async def test_node_client_fails_at_once_on_a_busy_refusal(grapes):
    """Past its share a client gets 429 "ERR_BUSY" before its request is read; the Node client fails on it at
    once (a 200 with a null rid would leave it waiting for its timeout)."""
    limits = GrenacheLimits(rate_per_address=1.0, rate_total=100.0, max_connections_per_address=64,
                            max_connections_per_subnet=256, max_connections=1024, header_timeout=10.0,
                            body_timeout=10.0)
    server = GrenacheHTTPServer({"interop:limited": _echo}, limits=ServerLimits(limits, "grenache_rpc", "requests"))
    results, seconds = await node_client_calls(grapes[0], server, "interop:limited", ["a", "b", "c"])
    assert seconds < 4
    assert results[:2] == [{"ok": True, "data": "a"}, {"ok": True, "data": "b"}]     # a burst of two
    assert results[2]["ok"] is False and "ERR_BUSY" in results[2]["error"], results


async def test_discovery_survives_both_grapes_restarting_on_same_ports(grapes, caplog):
    caplog.set_level(logging.INFO, logger="p2p.discovery.grape")
    other = GrapeClient([grapes[1]])
    discovery = GrapeDiscovery(list(grapes), "interop:discovery", 45001, announce_interval=0.5,
                               lookup_interval=0.2, client_timeout=0.5, backoff=Backoff(base=0.1, cap=0.5))
    found: list = []
    task = asyncio.create_task(discovery.run(found.append))
    try:
        await other.announce("interop:discovery", 45002)
        await _until(lambda: ("127.0.0.1", 45002) in {c.address for c in found})
        assert ("127.0.0.1", 45001) not in {c.address for c in found}  # never ourselves
        seen = await arun_node_json("lookup.js", grape=grapes[1], service="interop:discovery")
        assert "127.0.0.1:45001" in seen["addresses"]

        await asyncio.to_thread(grapes.stop)
        await _until(lambda: not discovery.healthy)
        await asyncio.sleep(1.0)
        assert not task.done()
        await asyncio.to_thread(grapes.start)  # same ports, empty DHT
        await _until(lambda: discovery.healthy, timeout=5)
        # we re-announced on recovery, without a restart of the strategy
        await _until_async(lambda: _node_sees(grapes[1], "interop:discovery", "127.0.0.1:45001"))
        before = len(found)
        await other.announce("interop:discovery", 45003)
        await _until(lambda: ("127.0.0.1", 45003) in {c.address for c in found[before:]})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await discovery.close()
        await other.close()
    levels = [r.levelname for r in caplog.records if r.name == "p2p.discovery.grape"]
    assert levels == ["WARNING", "INFO"]


async def _node_sees(grape_url: str, service: str, address: str) -> bool:
    seen = await arun_node_json("lookup.js", grape=grape_url, service=service)
    return address in seen.get("addresses", [])


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _until_async(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)
