"""GrapeDiscovery against FakeGrape: periodic announce, candidates, outage, recovery, logging once."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from p2p.discovery.base import Candidate
from p2p.discovery.grape import GrapeDiscovery
from tests.fake_grape import FakeDHT, FakeGrape
from p2p.resilience.backoff import Backoff

pytestmark = pytest.mark.timeout(20)
SERVICE = "exchange-node:test"
LOGGER = "p2p.discovery.grape"


def make(urls, **kwargs) -> GrapeDiscovery:
    kwargs.setdefault("announce_interval", 0.2)
    kwargs.setdefault("lookup_interval", 0.1)
    kwargs.setdefault("client_timeout", 0.3)
    kwargs.setdefault("backoff", Backoff(base=0.05, cap=0.2))
    return GrapeDiscovery(urls, SERVICE, kwargs.pop("port", 4000), **kwargs)


@contextlib.asynccontextmanager
async def running(discovery: GrapeDiscovery):
    found: list[Candidate] = []
    task = asyncio.create_task(discovery.run(found.append))
    try:
        yield found
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await discovery.close()


async def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def announce_other(grape: FakeGrape, *addresses: str) -> None:
    for address in addresses:
        grape.dht.announce(SERVICE, address)


async def test_lookup_at_once_and_feeds_candidates_skipping_self(grape):
    announce_other(grape, "127.0.0.1:5001", "10.1.2.3:5002", "[::1]:5003", "192.0.2.9:7777", "garbage")
    discovery = make([grape.url], own_addresses={("192.0.2.9", 7777)}, lookup_interval=10, announce_interval=10)
    started = time.monotonic()
    async with running(discovery) as found:
        await wait_for(lambda: len(found) >= 3)
        assert time.monotonic() - started < 1.0
        assert {c.address for c in found} == {("127.0.0.1", 5001), ("10.1.2.3", 5002), ("::1", 5003)}
        assert all(c.source == "grape" and c.node_id is None for c in found)
        assert [data for verb, data in grape.requests if verb == "announce"] == [[SERVICE, 4000]]
        assert discovery.stats.found == 3
    assert ("127.0.0.1:4000" in grape.dht.lookup(SERVICE))  # we announced ourselves, but were not fed


async def test_announces_periodically_and_refeeds(grape):
    announce_other(grape, "127.0.0.1:5001")
    discovery = make([grape.url], announce_interval=0.1, lookup_interval=0.05)
    async with running(discovery) as found:
        await wait_for(lambda: grape.count("announce") >= 4 and grape.count("lookup") >= 6)
        assert all(data == [SERVICE, 4000] for verb, data in grape.requests if verb == "announce")
        assert len(found) >= 6 and discovery.stats.found == 1  # repeats fed, counted once
        assert discovery.healthy and discovery.stats.last_error is None


async def test_outage_logs_once_backs_off_and_resumes(grape, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    announce_other(grape, "127.0.0.1:5001")
    discovery = make([grape.url])
    async with running(discovery) as found:
        await wait_for(lambda: len(found) >= 1)
        await grape.stop()
        await wait_for(lambda: not discovery.healthy)
        assert discovery.stats.last_error and "ERR_GRAPE_UNAVAILABLE" in discovery.stats.last_error
        assert discovery.stats.last_error_at is not None
        await asyncio.sleep(0.8)  # several failed retries, each backed off
        assert discovery.backoff.attempts >= 3
        assert discovery.backoff.attempts < 40  # not a hot loop
        # the grape comes back empty (restarted) on the same port
        grape.dht = FakeDHT()
        announce_other(grape, "127.0.0.1:6001")
        before = len(found)
        await grape.start()
        await wait_for(lambda: discovery.healthy)
        await wait_for(lambda: any(c.port == 6001 for c in found[before:]))
        assert "127.0.0.1:4000" in grape.dht.lookup(SERVICE)  # re-announced at once after recovery
        assert discovery.backoff.attempts == 0
        # a second, short outage: logged again, once
        await grape.stop()
        await wait_for(lambda: not discovery.healthy)
        await asyncio.sleep(0.3)
        await grape.start()
        await wait_for(lambda: discovery.healthy)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    assert len(warnings) == 2 and len(infos) == 2
    assert "reachable again" in infos[0].getMessage()


async def test_grape_error_answers_count_as_outage(grape, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    grape.fault, grape.error_code = "error", "ERR_GRAPE_LOOKUP"
    discovery = make([grape.url])
    async with running(discovery) as found:
        await wait_for(lambda: not discovery.healthy)
        await asyncio.sleep(0.3)
        assert discovery.stats.last_error is not None and "ERR_GRAPE_LOOKUP" in discovery.stats.last_error
        announce_other(grape, "127.0.0.1:5005")
        grape.fault = None
        await wait_for(lambda: any(c.port == 5005 for c in found))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_slow_grape_times_out_and_never_raises(grape):
    grape.fault, grape.slow_seconds = "slow", 2.0
    discovery = make([grape.url], client_timeout=0.2)
    async with running(discovery):
        await wait_for(lambda: not discovery.healthy)
        assert discovery.stats.last_error is not None and "timed out" in discovery.stats.last_error


async def test_fails_over_to_second_grape():
    dht = FakeDHT()
    first, second = FakeGrape(dht), FakeGrape(dht)
    await first.start()
    await second.start()
    announce_other(first, "127.0.0.1:5001")
    discovery = make([first.url, second.url])
    try:
        async with running(discovery) as found:
            await wait_for(lambda: len(found) >= 1)
            await first.stop()
            before = len(found)
            await wait_for(lambda: len(found) > before + 2)
            assert discovery.healthy and discovery.client.current_url == second.url
    finally:
        await first.stop()
        await second.stop()


async def test_nothing_running_at_start_then_grape_appears(grape, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = grape.url
    await grape.stop()
    discovery = make([url])
    async with running(discovery) as found:
        await wait_for(lambda: not discovery.healthy)
        announce_other(grape, "127.0.0.1:5009")
        await grape.start()
        await wait_for(lambda: len(found) >= 1)
    assert [r.levelname for r in caplog.records if r.name == LOGGER] == ["WARNING", "INFO"]


async def test_faulty_sink_does_not_stop_discovery(grape):
    announce_other(grape, "127.0.0.1:5001")
    discovery = make([grape.url])
    calls = []

    def sink(candidate):
        calls.append(candidate)
        raise RuntimeError("bug in sink")

    task = asyncio.create_task(discovery.run(sink))
    try:
        await wait_for(lambda: len(calls) >= 3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await discovery.close()


def test_constructor_validation():
    with pytest.raises(ValueError):
        GrapeDiscovery(["127.0.0.1:1"], "", 4000)
    with pytest.raises(ValueError):
        GrapeDiscovery(["127.0.0.1:1"], "s", 0)
    with pytest.raises(ValueError):
        GrapeDiscovery(["127.0.0.1:1"], "s", 4000, lookup_interval=0)
    with pytest.raises(ValueError):
        GrapeDiscovery([], "s", 4000)
    d = GrapeDiscovery(["127.0.0.1:1"], "s", 4000, own_addresses={("10.0.0.1", 4000)})
    assert {("10.0.0.1", 4000), ("127.0.0.1", 4000), ("::1", 4000)} <= d.own_addresses
    assert d.name == "grape" and d.announce_interval == 30.0 and d.lookup_interval == 5.0
