"""GrapeClient against FakeGrape: every answer shape a grape (or the network) can give, and failover."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.fake_grape import FakeDHT, FakeGrape
from p2p.grenache.grape import GrapeClient, GrapeError, GrapeUnavailable, normalize_grape_url, parse_address
from tests.harness import closed_port

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def client(grape):
    c = GrapeClient([grape.url], timeout=0.5)
    try:
        yield c
    finally:
        await c.close()


async def test_announce_lookup_put_get_roundtrip(client):
    await client.announce("svc:orders", 1337)
    await client.announce("svc:orders", 1338)
    assert sorted(await client.lookup("svc:orders")) == [("127.0.0.1", 1337), ("127.0.0.1", 1338)]
    assert await client.lookup("svc:none") == []
    digest = await client.put("hello")
    assert len(digest) == 40
    assert await client.get(digest) == "hello"


async def test_get_unknown_hash_empty_body_is_none(client):
    assert await client.get("0" * 40) is None


@pytest.mark.parametrize("verb", ["announce", "lookup", "put", "get"])
async def test_http200_error_string_is_grape_error(client, grape, verb):
    grape.fault, grape.error_code = "error", "ERR_GRAPE_LOOKUP"
    with pytest.raises(GrapeError) as info:
        await _call(client, verb)
    assert type(info.value) is GrapeError
    assert info.value.code == "ERR_GRAPE_LOOKUP"


async def test_error_string_with_spaces_keeps_code(client, grape):
    grape.fault, grape.error_code = "error", "All queries failed"
    with pytest.raises(GrapeError) as info:
        await client.lookup("svc")
    assert info.value.code == "All queries failed"


async def test_put_too_large_reported_by_grape(client):
    with pytest.raises(GrapeError) as info:
        await client.put("x" * 1500)
    assert "1000 bytes" in info.value.code


@pytest.mark.parametrize("verb", ["announce", "lookup", "put"])
async def test_empty_body_where_a_value_is_expected_is_unavailable(client, grape, verb):
    grape.fault = "empty"
    with pytest.raises(GrapeUnavailable):
        await _call(client, verb)


async def test_http500_is_unavailable(client, grape):
    grape.fault = "http500"
    with pytest.raises(GrapeUnavailable) as info:
        await client.lookup("svc")
    assert "500" in str(info.value)


async def test_http413_is_payload_size_error(client, grape):
    grape.fault = "http413"
    with pytest.raises(GrapeError) as info:
        await client.announce("svc", 1)
    assert not isinstance(info.value, GrapeUnavailable)
    assert info.value.code == "ERR_GRAPE_PAYLOAD_SIZE"


async def test_real_oversized_body_gets_413():
    fake = FakeGrape(max_body=256)
    await fake.start()
    c = GrapeClient([fake.url], timeout=1)
    try:
        with pytest.raises(GrapeError) as info:
            await c.lookup("s" * 1000)
        assert info.value.code == "ERR_GRAPE_PAYLOAD_SIZE"
    finally:
        await c.close()
        await fake.stop()


@pytest.mark.parametrize("fault", ["garbage", "object"])
async def test_malformed_reply_is_unavailable(client, grape, fault):
    grape.fault = fault
    with pytest.raises(GrapeUnavailable):
        await client.lookup("svc")


async def test_connection_refused_is_unavailable():
    c = GrapeClient([f"127.0.0.1:{closed_port()}"], timeout=0.5)
    try:
        for verb in ("announce", "lookup", "put", "get"):
            with pytest.raises(GrapeUnavailable):
                await _call(c, verb)
    finally:
        await c.close()


async def test_slow_answer_past_timeout_is_unavailable(client, grape):
    grape.fault, grape.slow_seconds = "slow", 3.0
    started = time.monotonic()
    with pytest.raises(GrapeUnavailable) as info:
        await client.lookup("svc")
    assert time.monotonic() - started < 1.5
    assert "timed out" in str(info.value)


async def test_failover_to_second_url_and_remember_it():
    dht = FakeDHT()
    first, second = FakeGrape(dht), FakeGrape(dht)
    await first.start()
    await second.start()
    c = GrapeClient([first.url, second.url], timeout=0.5)
    try:
        await c.announce("svc", 9000)
        assert c.current_url == first.url
        first.fault = "http500"
        assert await c.lookup("svc") == [("127.0.0.1", 9000)]
        assert c.current_url == second.url
        first.fault = None
        before = first.count("lookup")
        await c.lookup("svc")
        assert first.count("lookup") == before  # sticks with the last good grape
        await second.stop()
        assert await c.lookup("svc") == [("127.0.0.1", 9000)]
        assert c.current_url == first.url
    finally:
        await c.close()
        await first.stop()
        await second.stop()


async def test_failover_from_refused_and_from_error_string():
    good = FakeGrape()
    bad = FakeGrape()
    await good.start()
    await bad.start()
    bad.fault = "error"
    c = GrapeClient([f"127.0.0.1:{closed_port()}", bad.url, good.url], timeout=0.5)
    try:
        await c.announce("svc", 1)
        assert c.current_url == good.url
    finally:
        await c.close()
        await good.stop()
        await bad.stop()


async def test_all_grapes_fail_prefers_grape_error_over_unavailable():
    bad = FakeGrape()
    await bad.start()
    bad.fault, bad.error_code = "error", "ERR_GRAPE_ANNOUNCE"
    c = GrapeClient([f"127.0.0.1:{closed_port()}", bad.url], timeout=0.5)
    try:
        with pytest.raises(GrapeError) as info:
            await c.announce("svc", 1)
        assert info.value.code == "ERR_GRAPE_ANNOUNCE"
    finally:
        await c.close()
        await bad.stop()


async def test_recovers_after_outage_same_port(client, grape):
    await client.announce("svc", 7)
    await grape.stop()
    with pytest.raises(GrapeUnavailable):
        await client.lookup("svc")
    await grape.start()
    assert await client.lookup("svc") == [("127.0.0.1", 7)]


async def test_lookup_skips_invalid_entries_and_dedups(client, grape):
    grape.dht.services["svc"] = {a: time.monotonic() + 60 for a in [
        "127.0.0.1:1", "127.0.0.1:1", "nonsense", "127.0.0.1:0", "127.0.0.1:70000", "::1:5", "[::1]:6", ":7"]}
    assert await client.lookup("svc") == [("127.0.0.1", 1), ("::1", 5), ("::1", 6)]


async def test_closed_client_raises_typed(client):
    await client.close()
    with pytest.raises(GrapeUnavailable):
        await client.lookup("svc")


async def test_cancellation_propagates(client, grape):
    grape.fault = "slow"
    task = asyncio.create_task(client.lookup("svc"))
    async with asyncio.timeout(5):                  # cancel while the grape is holding the request
        while grape.count("lookup") == 0:
            await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_argument_validation():
    with pytest.raises(ValueError):
        GrapeClient([])
    with pytest.raises(ValueError):
        GrapeClient(["127.0.0.1:1"], timeout=0)
    assert GrapeClient("127.0.0.1:30001").urls == ["http://127.0.0.1:30001"]
    assert normalize_grape_url("http://127.0.0.1:30001/") == "http://127.0.0.1:30001"


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:1337", ("127.0.0.1", 1337)),
    (" 10.0.0.2:80 ", ("10.0.0.2", 80)),
    ("[::1]:1337", ("::1", 1337)),
    ("::1:1337", ("::1", 1337)),
    ("fe80::1:2:3:4:443", ("fe80::1:2:3:4", 443)),
    ("[0:0:0:0:0:0:0:1]:8", ("::1", 8)),
    ("::ffff:127.0.0.1:9", ("127.0.0.1", 9)),
    ("node-1.example:42", ("node-1.example", 42)),
    ("127.0.0.1", None), ("127.0.0.1:", None), (":80", None), ("127.0.0.1:0", None),
    ("127.0.0.1:65536", None), ("127.0.0.1:-1", None), ("127.0.0.1:８０", None), ("[::1]1337", None),
    ("[::1:1337", None), ("999.1.1.1:80", None), ("bad host:80", None), ("", None), (None, None), (1337, None),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


async def _call(client: GrapeClient, verb: str):
    if verb == "announce":
        return await client.announce("svc", 1)
    if verb == "lookup":
        return await client.lookup("svc")
    if verb == "put":
        return await client.put("v")
    return await client.get("a" * 40)
