"""New inbound connections are paced per address, per netgroup and in all, before any handshake work
(p2p/admission.py HandshakeRate)."""
from __future__ import annotations

from p2p.admission import HandshakeRate


def test_each_address_and_netgroup_gets_its_own_pace_and_everyone_a_cap_behind():
    now = [0.0]
    rate = HandshakeRate(per_ip=1.0, total=10.0, clock=lambda: now[0])
    assert [rate.allow("203.0.113.7") for _ in range(3)] == [True, True, False]     # a burst of two seconds' worth
    assert rate.allow("203.0.113.8") and rate.allow("203.0.113.8")      # another address of the /24: its own pace
    assert rate.allow("203.0.113.9") and rate.allow("203.0.113.9")
    assert rate.allow("203.0.113.10") and rate.allow("203.0.113.10")
    assert not rate.allow("203.0.113.11"), "the /24 had its eight (four times an address's, two seconds' worth)"
    assert rate.allow("198.51.100.1"), "another /24 is untouched"
    now[0] += 1.0
    assert rate.allow("203.0.113.7") and not rate.allow("203.0.113.7")        # refilled one a second
    assert rate.refused == 3
    many = HandshakeRate(per_ip=100.0, total=2.0, clock=lambda: now[0])
    assert [many.allow(f"192.0.2.{i}") for i in range(5)] == [True] * 4 + [False], "the cap behind everyone"


def test_loopback_is_exempt_unless_asked_and_the_maps_stay_bounded():
    now = [0.0]
    rate = HandshakeRate(per_ip=1.0, total=1.0, clock=lambda: now[0], max_sources=16)
    assert all(rate.allow("127.0.0.1") for _ in range(50))
    limited = HandshakeRate(per_ip=1.0, total=100.0, limit_loopback=True, clock=lambda: now[0], max_sources=16)
    assert [limited.allow("127.0.0.1") for _ in range(3)] == [True, True, False]
    for i in range(1000):
        limited.allow(f"10.{i // 250}.{i % 250}.1")
    assert len(limited._by_ip) <= 16 and len(limited._by_group) <= 16
