"""GrenacheWorkers and GrenacheEndpoint against a FakeGrape and Python Grenache HTTP workers: routing,
retries on worker faults, application errors passed through, lookup cache and stale fallback, the
endpoint's announcements and error-code mapping."""
from __future__ import annotations

import asyncio
import random

import pytest

from tests.fake_grape import FakeGrape
from p2p.grenache.grape import GrapeClient
from p2p.grenache.limits import GrenacheLimits
from p2p.grenache.rpc import GrenacheHTTPClient, GrenacheHTTPServer, GrenacheRemoteError
from p2p.grenache.workers import GrenacheEndpoint, GrenacheWorkers, grenache_code
from p2p.rpc import errors as e
from p2p.rpc.router import RouterConfig
from p2p.rpc.server import RpcServer

pytestmark = pytest.mark.timeout(30)


def worker(name: str, fail_with: str | None = None):
    async def handle(payload):
        if payload == "app-error":
            raise GrenacheRemoteError("ERR_INSUFFICIENT_FUNDS")
        if fail_with:
            raise GrenacheRemoteError(fail_with)
        return {"worker": name, "echo": payload}
    return handle


async def test_workers_are_routed_retried_and_errors_passed_through():
    async with FakeGrape() as grape_server, GrapeClient([grape_server.url]) as grape, \
            GrenacheHTTPServer({"svc": worker("good")}) as good, \
            GrenacheHTTPServer({"svc": worker("broken", fail_with="ERR_SERVICE_FAILED")}) as broken:
        for server in (good, broken):
            await grape.announce("svc", server.port)
        workers = GrenacheWorkers(grape, GrenacheHTTPClient(), lookup_ttl=60.0, rng=random.Random(4),
                                  router_config=RouterConfig(tau=0.3))
        try:
            results = [await workers.call("svc", i) for i in range(30)]
            assert all(r[0] == {"worker": "good", "echo": i} for i, r in enumerate(results))   # nothing lost
            assert any(r[2] > 1 for r in results) and workers.counters["retries"] >= 1
            broken_name = f"127.0.0.1:{broken.port}"
            snap = workers.snapshot()["services"]["svc"]
            assert snap["peers"][broken_name]["error_rate"] > 0.5 and len(snap["workers"]) == 2
            with pytest.raises(e.RpcError) as info:         # the worker's own answer: not retried
                await workers.request("svc", "app-error")
            assert info.value.code == "ERR_INSUFFICIENT_FUNDS" and info.value.attempts == 1
            assert grape_server.count("lookup") == 1       # cached
            grape_server.fault = "http500"                 # Grape down: the last list still serves
            workers.lookup_ttl = 0.0
            assert (await workers.request("svc", "x"))["worker"] == "good"
            assert workers.counters["lookup_failures"] == 1
            with pytest.raises(e.RpcError) as info:        # never looked up, Grape down
                await workers.request("other", 1)
            assert info.value.code == e.UNAVAILABLE
            grape_server.fault = None
            with pytest.raises(e.RpcError) as info:
                await workers.request("nobody", 1)
            assert info.value.code == e.NO_PEERS
        finally:
            await workers.close()


async def test_endpoint_serves_registered_services_announces_and_maps_error_codes():
    server = RpcServer()
    server.register("echo", lambda payload, peer: {"echo": payload, "peer": peer})

    async def slow(payload, peer):
        await asyncio.sleep(0.01)
        raise e.RpcError("insufficient_funds", "need more")

    server.register("slow", slow)
    server.register("hidden", lambda payload, peer: "not exposed")
    async with FakeGrape() as grape_server, GrapeClient([grape_server.url]) as grape:
        limits = GrenacheLimits(rate_per_address=100.0, rate_total=2000.0, max_connections_per_address=64,
                                max_connections_per_subnet=256, max_connections=1024, header_timeout=10.0,
                                body_timeout=10.0)
        endpoint = GrenacheEndpoint(server, grape, ("echo", "slow", "later"), announce_interval=0.05, limits=limits)
        port = await endpoint.start()
        client = GrenacheHTTPClient()
        try:
            assert await client.request(("127.0.0.1", port), "echo", [1]) == {"echo": [1], "peer": "grenache"}
            with pytest.raises(GrenacheRemoteError) as info:
                await client.request(("127.0.0.1", port), "slow", None, compress=True)
            assert info.value.code == "ERR_INSUFFICIENT_FUNDS"
            for key in ("hidden", "later"):                 # not exposed / not registered (yet)
                with pytest.raises(GrenacheRemoteError) as info:
                    await client.request(("127.0.0.1", port), key, None)
                assert info.value.code == "ERR_SERVICE_UNKNOWN"
            server.register("later", lambda payload, peer: "now here")
            assert await client.request(("127.0.0.1", port), "later", None) == "now here"
            assert sorted(await grape.lookup("echo")) == [("127.0.0.1", port)]
            before = grape_server.count("announce")
            async with asyncio.timeout(2):                  # re-announced periodically (every 0.05 s)
                while grape_server.count("announce") <= before:
                    await asyncio.sleep(0.01)
        finally:
            await client.close()
            await endpoint.stop()


def test_grenache_codes():
    assert grenache_code("insufficient_funds") == "ERR_INSUFFICIENT_FUNDS"
    assert grenache_code("ERR_X") == "ERR_X"
    assert grenache_code("book.snapshot failed") == "ERR_BOOK_SNAPSHOT_FAILED"
