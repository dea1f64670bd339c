"""RPC over real peer links in one process: request/response, services in the handshake and on change,
timeouts, cancellation, error codes, in-flight bounds, retries on another peer."""
from __future__ import annotations

import asyncio

import pytest

from p2p.rpc import errors as e
from p2p.rpc.builtins import FaultSpec
from p2p.rpc.serve_budget import ServeLimits
from p2p.rpc.service import RpcConfig
from tests.unit.p2p.rpc_nodes import blocking_handler, eventually, link, nodes

pytestmark = pytest.mark.timeout(30)


async def test_request_peer_round_trip_and_services_in_handshake(tmp_path):
    async with nodes(tmp_path, {}, {"services": {"double": lambda p, peer: p * 2}}) as (a, b):
        await link(a, b)
        assert a.rpc.providers("double") == [b.node_id]
        assert set(a.peers.peers[b.node_id].services) >= {"ping", "double", "test.echo"}
        assert await a.rpc.request_peer(b.node_id, "double", 21) == 42
        pong = await a.rpc.request_peer(b.node_id, "ping")
        assert pong["pong"] is True and pong["node_id"] == b.node_id
        assert await a.rpc.request("double", 5) == 10
        # many concurrent requests on one link, answers matched by request id
        results = await asyncio.gather(*(a.rpc.request_peer(b.node_id, "double", i) for i in range(200)))
        assert results == [2 * i for i in range(200)]
        assert a.rpc.client.in_flight() == 0


async def test_services_update_is_sent_on_change(tmp_path):
    async with nodes(tmp_path, {}, {}) as (a, b):
        await link(a, b)
        assert a.rpc.providers("late") == []
        b.rpc.register("late", lambda p, peer: "here")
        await eventually(lambda: a.rpc.providers("late") == [b.node_id])
        assert "late" in a.peers.peers[b.node_id].services
        assert await a.rpc.request("late") == "here"
        b.rpc.unregister("late")
        await eventually(lambda: a.rpc.providers("late") == [])
        with pytest.raises(e.RpcError) as info:
            await a.rpc.request("late")
        assert info.value.code == e.NO_PEERS


async def test_error_codes_never_carry_remote_details(tmp_path):
    def boom(payload, peer):
        raise ValueError("secret database password")

    async def aboom(payload, peer):
        await asyncio.sleep(0)
        raise KeyError("secret key material")

    def coded(payload, peer):
        raise e.RpcError("insufficient_funds", "need 3 more")

    async with nodes(tmp_path, {}, {"services": {"boom": boom, "aboom": aboom, "coded": coded,
                                                 "unencodable": lambda p, peer: {1, 2}}}) as (a, b):
        await link(a, b)
        for service in ("boom", "aboom", "unencodable"):
            with pytest.raises(e.RpcError) as info:
                await a.rpc.request_peer(b.node_id, service)
            assert info.value.code == e.INTERNAL
            assert "secret" not in str(info.value) and "Traceback" not in str(info.value)
        with pytest.raises(e.RpcError) as info:
            await a.rpc.request_peer(b.node_id, "coded")
        assert (info.value.code, info.value.message) == ("insufficient_funds", "need 3 more")
        with pytest.raises(e.RpcError) as info:
            await a.rpc.request_peer(b.node_id, "nope")
        assert info.value.code == e.UNKNOWN_SERVICE
        with pytest.raises(e.RpcError) as info:
            await a.rpc.request_peer(b.node_id, "ping", {1, 2})       # our own payload cannot be encoded
        assert info.value.code == e.BAD_REQUEST
        # an application error code is an answer: not retried, not held against the peer
        with pytest.raises(e.RpcError) as info:
            await a.rpc.request("coded")
        assert info.value.code == "insufficient_funds" and info.value.attempts == 1
        assert a.rpc.routers["coded"].snapshot()[b.node_id]["breaker"] == "closed"
        # the link survived all of it
        assert b.node_id in a.peers.links


async def test_timeout_cancels_the_remote_handler(tmp_path):
    started, cancelled, slow = blocking_handler()
    async with nodes(tmp_path, {}, {"services": {"slow": slow}}) as (a, b):
        await link(a, b)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(e.RpcError) as info:
            await a.rpc.request_peer(b.node_id, "slow", None, timeout=0.2)
        assert info.value.code == e.TIMEOUT and 0.19 <= loop.time() - t0 < 1.0
        await asyncio.wait_for(cancelled.wait(), 2)   # rpc_cancel reached the server
        assert a.rpc.client.in_flight() == 0
        await eventually(lambda: b.rpc.server.in_flight() == 0)


async def test_caller_cancellation_stops_the_remote_handler(tmp_path):
    started, cancelled, slow = blocking_handler()
    async with nodes(tmp_path, {}, {"services": {"slow": slow}}) as (a, b):
        await link(a, b)
        task = asyncio.create_task(a.rpc.request("slow", None, timeout=5))
        await asyncio.wait_for(started.wait(), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(cancelled.wait(), 2)
        assert a.rpc.client.in_flight() == 0 and a.rpc.client.counters["cancelled"] == 1
        # the router does not count it as in flight, nor as a failure
        row = a.rpc.routers["slow"].snapshot()[b.node_id]
        assert row["outstanding"] == 0 and row["error_rate"] == 0


async def test_in_flight_bounds_per_peer_client_and_server(tmp_path):
    gate = asyncio.Event()

    async def wait(payload, peer):
        await gate.wait()
        return payload

    client_cfg = RpcConfig(warmup_period=0, max_in_flight_per_peer=2)
    server_cfg = RpcConfig(warmup_period=0, serve_in_flight_per_peer=2)
    async with nodes(tmp_path, {"config": client_cfg}, {}, {"config": server_cfg, "services": {"wait": wait}},
                     {"services": {"wait": wait}}) as (a, free, bounded, unbounded):
        await link(free, bounded)
        await link(a, unbounded)
        # server side: a peer with 2 handlers running gets `overloaded` for the 3rd at once
        first = [asyncio.create_task(free.rpc.request_peer(bounded.node_id, "wait", i)) for i in range(3)]
        await eventually(lambda: bounded.rpc.server.in_flight(free.node_id) == 2)
        with pytest.raises(e.RpcError) as info:
            await first[2]
        assert info.value.code == e.OVERLOADED
        # client side: with 2 of ours in flight to a peer, the 3rd is refused without being sent
        second = [asyncio.create_task(a.rpc.request_peer(unbounded.node_id, "wait", i)) for i in range(2)]
        await eventually(lambda: a.rpc.client.in_flight(unbounded.node_id) == 2)
        sent = a.rpc.client.counters["sent"]
        with pytest.raises(e.RpcError) as info:
            await a.rpc.request_peer(unbounded.node_id, "wait", 4)
        assert info.value.code == e.OVERLOADED and a.rpc.client.counters["sent"] == sent
        gate.set()
        assert await asyncio.gather(*first[:2], *second) == [0, 1, 0, 1]
        assert a.rpc.client.in_flight() == 0 and free.rpc.client.in_flight() == 0


async def test_link_closed_fails_requests_in_flight(tmp_path):
    async def slow(payload, peer):
        await asyncio.sleep(10)

    async with nodes(tmp_path, {}, {"services": {"slow": slow}}) as (a, b):
        await link(a, b)
        task = asyncio.create_task(a.rpc.request_peer(b.node_id, "slow", None, timeout=5))
        await eventually(lambda: b.rpc.server.in_flight() == 1)
        a.peers.links[b.node_id].close("test")
        with pytest.raises(e.RpcError) as info:
            await task
        assert info.value.code == e.LINK_CLOSED
        await eventually(lambda: b.rpc.server.in_flight() == 0)   # the server stopped the handler too
        with pytest.raises(e.RpcError) as info:
            await a.rpc.request_peer(b.node_id, "ping")
        assert info.value.code == e.UNREACHABLE


async def test_request_retries_on_another_peer(tmp_path):
    calls: dict[str, int] = {}

    def make(name, fail):
        def handler(payload, peer):
            calls[name] = calls.get(name, 0) + 1
            if fail:
                raise RuntimeError("broken")
            return name
        return handler

    cfg = RpcConfig(warmup_period=0, max_attempts=3, retry_base=0.001)
    async with nodes(tmp_path, {"config": cfg}, {"services": {"svc": make("bad", True)}},
                     {"services": {"svc": make("good1", False)}}, {"services": {"svc": make("good2", False)}}) as ns:
        a, bad = ns[0], ns[1]
        for other in ns[1:]:
            await link(a, other)
        results = [await a.rpc.call("svc", i) for i in range(60)]
        assert all(r.result in ("good1", "good2") for r in results)      # every request succeeded
        retried = [r for r in results if r.attempts > 1]
        assert calls.get("bad", 0) >= 1 and retried                         # the bad peer was tried ...
        assert all(r.peer != bad.node_id for r in results)                 # ... and never answered
        assert a.rpc.counters["retries"] == len(retried)
        assert calls["bad"] <= 12                                           # ... and quickly avoided
        snap = a.rpc.snapshot()["services"]["svc"]["peers"][bad.node_id]
        assert snap["error_rate"] > 0.5


async def test_killed_peer_is_retried_elsewhere_and_dropped_from_providers(tmp_path):
    async def slowish(payload, peer):
        await asyncio.sleep(0.05)
        return "ok"

    async with nodes(tmp_path, {}, {"services": {"s": slowish}}, {"services": {"s": slowish}}) as (a, b, c):
        await link(a, b)
        await link(a, c)
        tasks = [asyncio.create_task(a.rpc.call("s", i, timeout=3)) for i in range(20)]
        await eventually(lambda: b.rpc.server.in_flight() > 0)
        b.peers.transport._server.close() if getattr(b.peers.transport, "_server", None) else None
        for link_ in list(b.peers.links.values()):
            link_.transport.abort()          # like a killed process: the socket just goes away
        results = await asyncio.gather(*tasks)
        assert all(r.result == "ok" for r in results)
        assert any(r.attempts > 1 for r in results)
        await eventually(lambda: a.rpc.providers("s") == [c.node_id])


async def test_breaker_transitions_are_logged_and_shown(tmp_path, caplog):
    def broken(payload, peer):
        if payload == "fail":
            raise e.RpcError(e.UNAVAILABLE, "down")
        return "ok"

    cfg = RpcConfig(warmup_period=0, max_attempts=1)
    async with nodes(tmp_path, {"config": cfg}, {"services": {"svc": broken}}) as (a, b):
        await link(a, b)
        for _ in range(20):           # some accepted requests first, so client throttling stays quiet
            await a.rpc.request("svc")
        with caplog.at_level("INFO", logger="p2p.rpc"):
            for _ in range(a.rpc.config.router.breaker.consecutive_failures + 2):
                with pytest.raises(e.RpcError):
                    await a.rpc.request("svc", "fail")
        assert any("breaker svc peer" in r.getMessage() and "closed -> open" in r.getMessage()
                   for r in caplog.records)
        snap = a.rpc.snapshot()
        assert snap["breaker_transitions"][0]["to"] == "open"
        assert snap["services"]["svc"]["peers"][b.node_id]["breaker_trips"] >= 1


async def test_client_throttling_sheds_load_when_peers_keep_failing(tmp_path):
    """Every attempt fails at the peer: after a while most requests are refused here (THROTTLED)
    without being sent; application errors (answers) would not count against the peer."""
    def broken(payload, peer):
        raise e.RpcError(e.UNAVAILABLE, "down")

    cfg = RpcConfig(warmup_period=0, max_attempts=1)
    async with nodes(tmp_path, {"config": cfg}, {"services": {"svc": broken}}) as (a, b):
        await link(a, b)
        codes = []
        for _ in range(200):
            with pytest.raises(e.RpcError) as info:
                await a.rpc.request("svc")
            codes.append(info.value.code)
        assert codes[0] == e.UNAVAILABLE
        assert codes[-100:].count(e.THROTTLED) > 60          # p -> ~(R - 2A) / R with A = 0
        assert a.rpc.snapshot()["throttle"]["reject_probability"] > 0.9
        assert a.rpc.counters["throttled"] == codes.count(e.THROTTLED)


async def test_throttle_and_no_peers(tmp_path):
    async with nodes(tmp_path, {}) as (a,):
        with pytest.raises(e.RpcError) as info:
            await a.rpc.request("ping")
        assert info.value.code == e.NO_PEERS


async def test_warmup_paces_requests(tmp_path):
    cfg = RpcConfig(warmup_period=2.0, warmup_rate=100.0)   # starts at 10/s
    async with nodes(tmp_path, {"config": cfg}, {}) as (a, b):
        await link(a, b)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(*(a.rpc.request("ping") for _ in range(12)))
        assert loop.time() - t0 >= 0.2                       # a burst above the ramp had to wait
        assert a.rpc.counters["warmup_waits"] > 0
        with pytest.raises(e.RpcError) as info:               # cannot wait past its deadline
            await asyncio.gather(*(a.rpc.request("ping", timeout=0.05) for _ in range(30)))
        assert info.value.code == e.THROTTLED


def test_fault_spec_parsing():
    assert FaultSpec.parse("") == FaultSpec()
    assert FaultSpec.parse("delay=0.05, fail=0.5") == FaultSpec(delay=0.05, fail=0.5)
    for bad in ("delay", "fail=2", "speed=1", "delay=x"):
        with pytest.raises(ValueError):
            FaultSpec.parse(bad)



async def test_a_requester_past_its_serving_budget_is_told_to_wait_and_its_handler_never_runs(tmp_path):
    calls: list[str] = []

    def count(payload, peer):
        calls.append(peer)
        return "x" * 1000

    serve = ServeLimits(rate=5.0, bytes=1 << 20, total_rate=1000.0, total_bytes=1 << 24)
    async with nodes(tmp_path, {}, {"config": RpcConfig(warmup_period=0, serve=serve),
                                    "services": {"count": count}}) as (a, b):
        await link(a, b)
        outcomes = await asyncio.gather(*(a.rpc.request_peer(b.node_id, "count") for _ in range(20)),
                                        return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, e.RpcError)]
        assert len(calls) == 10 == 20 - len(refused), "a burst of 2 s at 5/s, no more"
        assert {o.code for o in refused} == {e.RATE_LIMITED}
        assert all(0.0 < (o.retry_after or 0.0) <= 0.2 for o in refused), [o.retry_after for o in refused]
        assert b.rpc.server.counters["rate_limited"] == 10
        view = b.rpc.serving()
        assert view["budget"] is not None and view["budget"]["throttled_requesters"][0]["node_id"] == a.node_id
        assert b.node_id not in {row["node_id"] for row in a.rpc.serving()["budget"]["throttled_requesters"]}


class _Paths:
    """A MessageRouter stand-in: who is reachable, and what was sent (with `answer`)."""

    def __init__(self, reachable: set[str]) -> None:
        self.reach = reachable
        self.sent: list[tuple[str, dict, bool]] = []

    def send_to_peer(self, node_id, message, *, answer=False):
        self.sent.append((node_id, message, answer))
        return True

    def reachable(self, node_id):
        return node_id in self.reach

    def subscribe(self, msg_type, handler):
        pass


async def test_a_relayed_request_nobody_could_answer_is_not_run_and_an_answer_is_never_held(tmp_path):
    calls: list[str] = []

    def snap(payload, peer):
        calls.append(peer)
        return "chunk"

    async with nodes(tmp_path, {"services": {"snap": snap}}) as (a,):
        paths = _Paths({"r" * 40})
        a.rpc.use_router(paths)
        request = {"type": "rpc_request", "rid": 1, "svc": "snap", "id": "i1", "origin": "f" * 40, "dst": a.node_id,
                   "ts": 0.0, "hops": 1}
        a.rpc._on_routed_request(request, "n" * 40)            # a fresh key's, through a neighbour
        assert calls == [] and paths.sent == [] and a.rpc.server.counters["unroutable"] == 1
        a.rpc._on_routed_request(dict(request, origin="r" * 40), "n" * 40)
        assert calls == ["r" * 40]
        ((to, answer, now_or_never),) = paths.sent
        assert to == "r" * 40 and answer["r"] == "chunk" and now_or_never
