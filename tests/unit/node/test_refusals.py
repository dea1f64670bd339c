"""Who the public surfaces refused and why: by address and by network, the most refused first,
bounded in count and in age whoever floods; the console's rows; and the control API as the node serves it
(guard, keep-alive timeout, /status) wired from the settings."""
from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from config import load_settings
from node.refusals import grenache_refusals, refused_rows
from p2p.public.refusals import RefusalLog
from tests.unit.node.test_api_rate import Clock


def test_sources_are_ranked_by_refusals_with_their_reasons_by_address_and_by_network():
    clock = Clock()
    log = RefusalLog(clock=clock)
    for _ in range(5):
        log.record("203.0.113.7", "api_connections_per_address")
    log.record("203.0.113.7", "api_header_timeout")
    for host in range(1, 4):                        # one network rotating its addresses
        log.record(f"198.51.100.{host}", "ws_clients_per_subnet")
        log.record(f"198.51.100.{host}", "ws_clients_per_subnet")
    clock.now = 3.0
    view = log.view(top=2)
    assert view["addresses"] == [
        {"source": "203.0.113.7", "refused": 6, "reasons": {"api_connections_per_address": 5, "api_header_timeout": 1},
         "last_s_ago": 3.0},
        {"source": "198.51.100.1", "refused": 2, "reasons": {"ws_clients_per_subnet": 2}, "last_s_ago": 3.0}]
    assert [(row["source"], row["refused"]) for row in view["subnets"]] == [("203.0.113.0/24", 6),
                                                                          ("198.51.100.0/24", 6)]
    rows = refused_rows(view)
    assert rows[0] == {"peer": "203.0.113.7", "what": "API/stream client",
                       "why": "refused 6 times (api_connections_per_address 5, api_header_timeout 1), last 3.0 s ago"}
    assert len(rows) == 4 and refused_rows(None) == [] and refused_rows({"addresses": "not a list"}) == []
    grenache = refused_rows(grenache_refusals({"unit": "frames", "refused_by": view}), "Grenache message client")
    assert grenache[0] == {**rows[0], "what": "Grenache message client"}
    assert grenache_refusals(None) is None and grenache_refusals({"refused_by": 3}) is None


def test_the_log_is_bounded_in_count_and_forgets_sources_not_refused_lately():
    clock = Clock()
    log = RefusalLog(capacity=100, recent=60.0, clock=clock)
    for n in range(10_000):                          # a flood from ever new addresses and networks
        log.record(f"10.{n // 256 % 256}.{n % 256}.1", "api_rate_per_address")
    assert len(log.addresses.entries) == 100 and len(log.subnets.entries) == 100
    clock.now = 30.0
    log.record("192.0.2.1", "ws_slow_consumer")
    clock.now = 61.0
    view = log.view()
    assert [row["source"] for row in view["addresses"]] == ["192.0.2.1"], "the old flood has aged out"
    assert len(log.addresses.entries) == 1


def test_the_api_as_the_node_serves_it_shows_whom_it_cut_in_status(tmp_path: Path):
    from node.app import ExchangeNode

    settings = load_settings(env={}, cli={"data_dir": str(tmp_path), "p2p_port": 0, "api_port": 0,
                                          "discovery_mdns": "false", "api_header_timeout": "0.3",
                                          "api_keepalive_timeout": "0.6", "api_max_connections_per_subnet": "3"})
    node = ExchangeNode(settings)

    async def run() -> tuple[bytes, bytes, dict]:
        await node._start_api()
        assert node.api_address is not None
        host, port = node.api_address
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")            # never finished
            cut = await asyncio.wait_for(reader.read(), 5)
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answered_then_idle = await asyncio.wait_for(reader.read(), 5)   # closed by the keep-alive timeout
            held = [await asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0)) for _ in range(3)]
            refused_reader, _ = await asyncio.open_connection(host, port, local_addr=("127.0.0.3", 0))
            assert await asyncio.wait_for(refused_reader.read(), 5) == b""
            for _, w in held:
                w.close()
            return cut, answered_then_idle, orjson.loads(orjson.dumps(node.status(), default=str))
        finally:
            await node._stop_api()

    cut, answered_then_idle, status = asyncio.run(run())
    assert cut.startswith(b"HTTP/1.1 408")
    assert answered_then_idle.startswith(b"HTTP/1.1 200") and b"408" not in answered_then_idle
    guard = status["api_connections"]
    assert guard["max_per_subnet"] == 3 and guard["header_timeout_s"] == 0.3
    assert guard["counters"]["header_timeouts"] == 1 and guard["counters"]["refused_per_subnet"] == 1
    reasons = {row["source"]: row["reasons"] for row in status["public_refused"]["addresses"]}
    assert reasons == {"127.0.0.1": {"api_header_timeout": 1}, "127.0.0.3": {"api_connections_per_subnet": 1}}
