"""Public read-only routes are rate-limited per address, per subnet and in all; the operator's token, exempt
networks and private routes are not counted; the maps stay bounded."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config import load_settings
from node.api.auth import install_auth
from node.api.server import build_app
from node.api.rate import RATE_LIMIT, PublicRateLimit, install_public_rate_limit
from p2p.public.rate import BURST_SECONDS, MAX_TRACKED, NEWCOMERS_PER_GROUP, NEWCOMERS_PER_SECOND

API_TOKEN = "operator-token-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_address_gets_its_own_burst_then_its_rate():
    clock = Clock()
    limit = PublicRateLimit(per_address=10, total=1000, clock=clock)
    assert all(limit.check("203.0.113.5") is None for _ in range(20))          # two seconds' worth at once
    held = limit.check("203.0.113.5")
    assert held is not None
    which, wait = held
    assert which == "per_address" and 0 < wait <= 0.1
    assert limit.check("198.51.100.7") is None                                 # someone else is not held up
    clock.now += 0.5
    assert [limit.check("203.0.113.5") is None for _ in range(6)] == [True] * 5 + [False]


def test_one_subnet_cannot_rotate_addresses_around_the_limit():
    clock = Clock()
    limit = PublicRateLimit(per_address=10, total=10_000, clock=clock)
    admitted = sum(limit.check(f"203.0.113.{host}") is None for host in range(1, 255) for _ in range(20))
    assert admitted == 10 * 4 * 2                                              # the /24's burst, not 254 bursts
    assert limit.refused["per_subnet"] > 0
    assert limit.check("198.51.100.7") is None
    # networks new to the total come in at NEWCOMERS_PER_SECOND, at most NEWCOMERS_PER_GROUP of them from one /32 (the
    # clock stands still: that group's two seconds' burst), each with its own burst; another group's are let in still
    newcomers = int(NEWCOMERS_PER_GROUP * BURST_SECONDS)
    assert sum(limit.check(f"2001:db8:{i:x}::1") is None for i in range(100) for _ in range(20)) == newcomers * 20
    assert limit.check("2001:db9::1") is None
    clock.now += 10
    assert sum(limit.check(f"2001:db8:ffff:{i:x}::1") is None for i in range(100) for _ in range(20)) == 80


def test_one_ipv6_host_rotating_addresses_in_its_64_is_one_client():
    clock = Clock()
    limit = PublicRateLimit(per_address=10, total=10_000, clock=clock)
    admitted = sum(limit.check(f"2001:db8:1:2::{i:x}") is None for i in range(1, 200))
    assert admitted == 20 and limit.refused["per_address"] == 179                # one /64: one address's burst
    assert limit.check("2001:db8:1:3::1") is None, "the next /64 is another client of the same network"


def test_the_total_caps_everyone_together_and_the_maps_stay_bounded():
    clock = Clock()
    limit = PublicRateLimit(per_address=10, total=100, clock=clock)
    admitted = sum(limit.check(f"10.{i // 256}.{i % 256}.1") is None for i in range(1000))
    assert admitted == NEWCOMERS_PER_SECOND * BURST_SECONDS, "networks new to the total come in at a pace"
    assert limit.refused["total"] == 1000 - admitted
    for i in range(3 * MAX_TRACKED):
        limit.check(f"172.16.{i // 256 % 256}.{i % 256}")
    assert len(limit.by_address) <= MAX_TRACKED and len(limit.by_subnet) <= MAX_TRACKED
    assert len(limit.parts) <= MAX_TRACKED and limit.parts.networks(clock.now) <= MAX_TRACKED


def test_exempt_networks():
    limit = PublicRateLimit(per_address=1, total=1, exempt=("127.0.0.0/8", "::1/128"))
    assert limit.is_exempt("127.0.0.2") and limit.is_exempt("::1") and not limit.is_exempt("10.0.0.1")
    assert limit.is_exempt("::ffff:127.0.0.1"), "a dual-stack listener's IPv4 loopback client"
    assert not limit.is_exempt("not an address")


def _node(tmp_path: Path, exempt: str):
    from node.app import ExchangeNode

    settings = load_settings(env={}, cli={"data_dir": str(tmp_path), "p2p_port": 0, "api_port": 0,
                                          "discovery_mdns": "false", "api_token": API_TOKEN,
                                          "api_public_rate": "5", "api_rate_exempt": exempt})
    return ExchangeNode(settings)


async def test_the_app_answers_429_with_retry_after_to_an_anonymous_flood_only(tmp_path):
    node = _node(tmp_path, "192.0.2.0/24")          # the test client's 127.0.0.1 is not exempt here
    app = build_app(node)
    async with TestClient(TestServer(app)) as client:
        statuses = [(await client.get("/health")).status for _ in range(12)]
        assert statuses[:10] == [200] * 10 and statuses[10:] == [429, 429]
        refused = await client.get("/health")
        assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
        assert (await refused.json())["error"]["code"] == "rate_limited"
        with_token = [(await client.get("/health", headers={"Authorization": f"Bearer {API_TOKEN}"})).status
                      for _ in range(20)]
        assert with_token == [200] * 20
        private = await client.get("/peers")
        assert private.status == 401                  # private routes answer as before (and are not counted)
    assert app[RATE_LIMIT].view()["refused"]["per_address"] >= 3


async def test_this_machine_is_exempt_by_default(tmp_path):
    from node.app import ExchangeNode

    settings = load_settings(env={}, cli={"data_dir": str(tmp_path), "p2p_port": 0, "api_port": 0,
                                          "discovery_mdns": "false", "api_public_rate": "1"})
    app = build_app(ExchangeNode(settings))
    async with TestClient(TestServer(app)) as client:
        assert [(await client.get("/health")).status for _ in range(30)] == [200] * 30


async def _trades_answer(request: web.Request) -> web.Response:
    """A public answer of `size` bytes that takes `busy` seconds of the event loop."""
    done = time.thread_time() + float(request.query.get("busy", "0"))
    while time.thread_time() < done:
        pass
    return web.Response(body=b"[" + b"0," * (int(request.query.get("size", "1")) // 2) + b"0]")


@pytest.mark.parametrize("query", ["size=1048576", "busy=0.04", "size=60000&busy=0.0005"])
async def test_a_public_answer_costs_its_bytes_or_its_cpu_not_one_request(tmp_path, query: str):
    """A megabyte of answer, or 40 ms of the event loop, costs 16 or 40 requests' worth, on credit: the
    address's next requests wait. An answer under a unit of either costs one request, as before."""
    limit = PublicRateLimit(per_address=10, total=1000)
    app = web.Application()
    install_public_rate_limit(app, limit, install_auth(app, tmp_path, API_TOKEN))
    app.router.add_get("/trades/{market}", _trades_answer)
    async with TestClient(TestServer(app)) as client:
        statuses = [(await client.get(f"/trades/X?{query}")).status for _ in range(20)]
    if query.startswith("size=60000"):
        assert statuses == [200] * 20, "cheap answers: the burst of two seconds' worth"
    else:
        assert statuses[0] == 200 and statuses[2:] == [429] * 18, statuses
        assert limit.refused["per_address"] >= 18
