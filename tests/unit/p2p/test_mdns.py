"""MdnsDiscovery: TXT filtering, failure without multicast, and two instances on 127.0.0.1 finding
each other (and saying goodbye). mDNS here binds 127.0.0.1 only, never a real interface."""
from __future__ import annotations

import asyncio
import logging

import pytest

from p2p.discovery.base import Candidate
from p2p.discovery.mdns import (SERVICE_TYPE, MdnsDiscovery, mdns_announce_hosts, parse_txt,
                                real_interface_addresses, txt_properties)

A, B = "a" * 40, "b" * 40


def strategy(node_id=A, network="net-1", port=7000, interfaces=("127.0.0.1",), **kw) -> MdnsDiscovery:
    return MdnsDiscovery(node_id, network, port, interfaces=interfaces, retry_base=0.05, **kw)


def test_candidates_same_network_never_self():
    s = strategy()
    s.bound = ["127.0.0.1"]
    txt = parse_txt({k.encode(): v.encode() for k, v in txt_properties(B, "net-1", 7001).items()})
    assert s.candidates_from(txt, ["127.0.0.1"], 7001) == [Candidate("127.0.0.1", 7001, "mdns", B)]
    assert s.stats.found == 1
    s.candidates_from(txt, ["127.0.0.1"], 7001)
    assert s.stats.found == 1  # the same announcement again is not a new find
    assert s.candidates_from(txt | {"net": "other"}, ["127.0.0.1"], 7001) == []
    assert s.candidates_from(txt | {"id": A}, ["127.0.0.1"], 7001) == []
    assert s.candidates_from(txt | {"id": "short"}, ["127.0.0.1"], 7001) == []
    assert s.candidates_from(txt | {"proto": "0"}, ["127.0.0.1"], 7001) == []
    assert s.candidates_from(txt | {"port": "0"}, ["127.0.0.1"], 0) == []
    assert s.candidates_from(txt | {"port": "x"}, ["127.0.0.1"], 7001) == []


def test_loopback_addresses_only_when_we_do_mdns_on_loopback():
    s = strategy(interfaces=("10.1.0.1",))
    s.bound = ["10.1.0.1"]
    txt = txt_properties(B, "net-1", 7001)
    assert s.candidates_from(txt, ["127.0.0.1", "10.1.0.2"], 7001) == [Candidate("10.1.0.2", 7001, "mdns", B)]


def test_announce_hosts():
    assert mdns_announce_hosts(None, "0.0.0.0") == []
    assert mdns_announce_hosts(None, "127.0.0.1") == ["127.0.0.1"]
    assert mdns_announce_hosts("10.0.0.5", "0.0.0.0") == ["10.0.0.5"]
    assert mdns_announce_hosts("node.example", "0.0.0.0") == []


@pytest.mark.process     # ifaddr finds libc with ldconfig
def test_real_interface_addresses_excludes_loopback():
    for address in real_interface_addresses():
        assert not address.startswith("127.") and ":" not in address


@pytest.mark.process     # ifaddr finds libc with ldconfig
async def test_no_interfaces_warns_once_and_idles(caplog):
    s = strategy(interfaces=(), list_interfaces=lambda: [])
    with caplog.at_level(logging.WARNING, logger="p2p.discovery.mdns"):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.4):
                await s.run(lambda c: None)
    assert s.stats.last_error is not None and "no usable network interface" in s.stats.last_error
    assert len([r for r in caplog.records if "mDNS" in r.getMessage()]) == 1
    await s.close()


async def test_interface_without_multicast_is_a_warning_not_a_crash(caplog):
    s = strategy(interfaces=("192.0.2.77",))  # TEST-NET address that no interface has: join fails
    with caplog.at_level(logging.WARNING, logger="p2p.discovery.mdns"):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await s.run(lambda c: None)
    assert s.stats.last_error and "cannot start" in s.stats.last_error
    assert len([r for r in caplog.records if "mDNS" in r.getMessage()]) == 1
    await s.close()


@pytest.mark.process     # ifaddr finds libc with ldconfig
async def test_two_instances_on_loopback_find_each_other_and_say_goodbye():
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

    events: list[tuple[str, str]] = []
    watcher = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    browser = AsyncServiceBrowser(watcher.zeroconf, SERVICE_TYPE, handlers=[
        lambda zeroconf, service_type, name, state_change: events.append((name, state_change.name))])
    a, b, c = strategy(A, port=7001), strategy(B, port=7002), strategy("c" * 40, network="net-2", port=7003)
    found: dict[str, list[Candidate]] = {"a": [], "b": [], "c": []}
    tasks = [asyncio.create_task(s.run(found[k].append)) for k, s in (("a", a), ("b", b), ("c", c))]
    try:
        async with asyncio.timeout(5):
            while not (found["a"] and found["b"]):
                await asyncio.sleep(0.05)
        assert found["a"][0] == Candidate("127.0.0.1", 7002, "mdns", B)
        assert found["b"][0] == Candidate("127.0.0.1", 7001, "mdns", A)
        await asyncio.sleep(0.3)
        assert found["c"] == []  # another network: seen, never offered
        assert all(x.node_id != "c" * 40 for x in found["a"] + found["b"])
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a.close()
        await b.close()
        await c.close()
    try:
        async with asyncio.timeout(3):
            while (f"{A}.{SERVICE_TYPE}", ServiceStateChange.Removed.name) not in events:
                await asyncio.sleep(0.05)
    finally:
        await browser.async_cancel()
        await watcher.async_close()
    assert (f"{B}.{SERVICE_TYPE}", "Removed") in events  # goodbye packets were sent
