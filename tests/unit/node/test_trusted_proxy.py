"""Clients behind a trusted reverse proxy (API_TRUSTED_PROXIES): each is limited as itself, never as the proxy,
and a header from anyone else names nobody (per-client limits behind nginx or a load balancer)."""
from __future__ import annotations

import ipaddress

import pytest

from p2p.public.guard import ConnectionGuard
from p2p.public.sources import forwarded_client, parse_networks

PROXIES = parse_networks(("127.0.0.1/32", "10.0.0.0/8"))


@pytest.mark.parametrize("remote, header, client", [
    ("127.0.0.1", ["198.51.100.7"], "198.51.100.7"),                     # the proxy names its client
    ("203.0.113.5", ["198.51.100.7"], "203.0.113.5"),                    # nobody else is believed
    ("127.0.0.1", [], "127.0.0.1"),                                      # the proxy's own request
    ("127.0.0.1", ["127.0.0.1, 198.51.100.7"], "198.51.100.7"),          # a client claiming to be local
    ("127.0.0.1", ["192.0.2.1, 198.51.100.7, 10.1.2.3"], "198.51.100.7"),  # through two trusted proxies
    ("127.0.0.1", ["192.0.2.1", "198.51.100.7"], "198.51.100.7"),        # the header twice: one list
    ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),                   # every hop a proxy: the left-most
    ("127.0.0.1", [" ::ffff:198.51.100.7 "], "198.51.100.7"),            # an IPv4-mapped client as IPv4
    ("127.0.0.1", ["2001:db8::1"], "2001:db8::1"),
    ("::ffff:127.0.0.1", ["198.51.100.7"], "198.51.100.7"),              # a dual-stack listener's proxy
    ("127.0.0.1", ["garbage, 198.51.100.7"], "198.51.100.7"),            # what is left of the client is not read
    ("127.0.0.1", ["198.51.100.7:4431"], "198.51.100.7"),                # a proxy that appends the client's port
    ("127.0.0.1", ["[2001:db8::1]:4431"], "2001:db8::1"),
    ("127.0.0.1", ["[2001:db8::1]"], "2001:db8::1"),
])
def test_the_client_is_the_right_most_address_that_is_no_trusted_proxy(remote, header, client):
    assert forwarded_client(remote, header, PROXIES) == client


@pytest.mark.parametrize("header", [["unknown"], ["198.51.100.7, "], ["[2001:db8::1"], ["1.2.3.4:80:90"], [""],
                                    ["198.51.100.7:"], ["198.51.100.7:http"], ["[2001:db8::1]junk"],
                                    ["[2001:db8::1]:"]])
def test_a_trusted_proxy_naming_no_address_where_it_is_read_is_an_error(header):
    with pytest.raises(ValueError, match="not an IP address"):
        forwarded_client("127.0.0.1", header, PROXIES)


@pytest.mark.parametrize("header", [["127.0.0.1"], ["::1"], ["::ffff:127.0.0.1"], ["198.51.100.7, 127.0.0.5"]])
def test_a_client_behind_a_proxy_is_never_this_machine(header):
    """A proxy that passes on the header its client wrote (no `proxy_set_header`) would let the client claim to be
    local, and so exempt: a loopback client named by a proxy is an error, not an exemption."""
    with pytest.raises(ValueError, match="loopback"):
        forwarded_client("127.0.0.1", header, PROXIES)


def test_a_proxy_listed_as_an_ipv4_mapped_network_is_trusted_as_its_ipv4_network():
    mapped = parse_networks(("::ffff:127.0.0.1/128", "::ffff:10.0.0.0/104", "2001:db8::/32"))
    assert [str(net) for net in mapped] == ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"]
    assert forwarded_client("::ffff:127.0.0.1", ["198.51.100.7"], mapped) == "198.51.100.7"


def test_with_no_proxy_trusted_the_header_is_never_read():
    assert forwarded_client("127.0.0.1", ["198.51.100.7"], ()) == "127.0.0.1"
    assert forwarded_client("127.0.0.1", ["unknown"], ()) == "127.0.0.1"


def test_a_trusted_proxy_holds_connections_past_an_address_share_within_the_total():
    guard = ConnectionGuard(per_address=2, per_subnet=3, total=6, proxies=PROXIES)
    assert all(guard.admit("127.0.0.1") for _ in range(6)), "the proxy carries many clients"
    assert not guard.admit("127.0.0.1") and guard.counters["refused_total"] == 1, "the total still binds it"
    guard = ConnectionGuard(per_address=2, per_subnet=3, total=6, proxies=PROXIES)
    assert [guard.admit("198.51.100.7") for _ in range(3)] == [True, True, False], "anyone else: its share"
    assert guard.counters["refused_per_address"] == 1
    assert ipaddress.ip_address("127.0.0.1") in PROXIES[0]


def test_a_trusted_proxys_slow_readers_are_bound_by_the_total_only():
    """Many clients' slow answers pass through one proxy address: one slow reader behind it must not take the whole
    address's share from the proxy's other clients (nginx does not buffer /ws)."""
    mib = 1024 * 1024
    guard = ConnectionGuard(write_timeout=1.0, write_min_rate=1, slow_answer_bytes=mib, proxies=PROXIES)
    assert guard.keep_slow_reader("127.0.0.1", 10, 3 * mib, 0) is None
    assert guard.keep_slow_reader("127.0.0.1", 10, 10 * mib, 0) is None
    assert guard.keep_slow_reader("127.0.0.1", 10, 4 * mib, 0) == "slow_answers_total", "16 MiB in all"
    assert guard.keep_slow_reader("198.51.100.7", 10, 2 * mib, 0) == "slow_answers_per_address"


def test_an_ipv4_mapped_exempt_network_matches_as_the_trusted_proxies_do():
    """API_RATE_EXEMPT is read like API_TRUSTED_PROXIES: a network listed IPv4-mapped once never matched a client."""
    from node.api.rate import PublicRateLimit
    limit = PublicRateLimit(20, 1000, ("::ffff:192.0.2.0/120",))
    assert limit.is_exempt("192.0.2.9") and limit.is_exempt("::ffff:192.0.2.9") and not limit.is_exempt("192.0.3.1")
