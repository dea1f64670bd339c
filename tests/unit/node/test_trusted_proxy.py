"""Clients behind a trusted reverse proxy (API_TRUSTED_PROXIES): each is limited as itself, never as the proxy,
and a header from anyone else names nobody (issue 25's per-client limits, behind nginx or a load balancer)."""
from __future__ import annotations

import ipaddress

import pytest

from node.api.forwarded import proxy_networks
from p2p.public.guard import ConnectionGuard
from p2p.public.sources import forwarded_client

PROXIES = proxy_networks(("127.0.0.1/32", "10.0.0.0/8"))


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
])
def test_the_client_is_the_right_most_address_that_is_no_trusted_proxy(remote, header, client):
    assert forwarded_client(remote, header, PROXIES) == client


@pytest.mark.parametrize("header", [["unknown"], ["198.51.100.7, "], ["198.51.100.7:4431"], ["[2001:db8::1]"]])
def test_a_trusted_proxy_naming_no_address_where_it_is_read_is_an_error(header):
    with pytest.raises(ValueError, match="not an IP address"):
        forwarded_client("127.0.0.1", header, PROXIES)


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
