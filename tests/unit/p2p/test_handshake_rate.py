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


def crowd_and_newcomer(rate: HandshakeRate, now: list[float], seconds: float = 10.5) -> tuple[list[bool], list[int]]:
    """40 /24s, four addresses each, dialling as fast as each may (every 10 ms), and one newcomer from another /24
    dialling every half second from 0.25 s on: (whether each of the newcomer's tries was let in, how many were let
    in each second)."""
    crowd = [f"10.{n}.0.{i}" for n in range(40) for i in range(1, 5)]
    newcomer: list[bool] = []
    each_second = [0] * (int(seconds) + 1)
    for step in range(int(seconds * 100)):
        now[0] = step / 100
        each_second[step // 100] += sum(rate.allow(host) for host in crowd)
        if step % 50 == 25:
            newcomer.append(rate.allow("192.0.2.77"))
            each_second[step // 100] += newcomer[-1]
    return newcomer, each_second


def test_the_total_is_shared_by_netgroup_so_a_crowd_of_networks_cannot_take_a_newcomers_turn():
    """A single bucket for everyone let the 40 networks that got there first take it: the newcomer had 5 of its 21
    handshakes (0 of 21 here). Shared by network, the newcomer's network asks for less than its part and is let in
    every time once its network has had its turn among the networks new to the total (the crowd's 40 arrived at
    once, so its first try, at 0.25 s, waits for it), while the total still holds everyone once the bursts of the
    first seconds are spent."""
    now = [0.0]
    rate = HandshakeRate(per_ip=5.0, total=100.0, limit_loopback=True, clock=lambda: now[0])
    newcomer, each_second = crowd_and_newcomer(rate, now)
    assert len(newcomer) == 21 and all(newcomer[1:]), newcomer
    assert sum(each_second[5:10]) <= 100 * 5 * 1.1, each_second


def test_loopback_is_exempt_unless_asked():
    now = [0.0]
    rate = HandshakeRate(per_ip=1.0, total=1.0, clock=lambda: now[0])
    assert all(rate.allow("127.0.0.1") for _ in range(50))
    limited = HandshakeRate(per_ip=1.0, total=100.0, limit_loopback=True, clock=lambda: now[0])
    assert [limited.allow("127.0.0.1") for _ in range(3)] == [True, True, False]
    assert [limited.allow("127.0.7.1") for _ in range(3)] == [True, True, False], "another /24 of loopback: its own"


def test_an_address_that_broke_the_protocol_owes_handshakes_before_its_next_and_so_does_its_network():
    """A fresh key is free, so the points a violating key gets do not stop the next one: its address and network pay
    too: what their buckets hold, and ten handshakes more (two seconds of the address's rate, half a second of its
    network's)."""
    now = [0.0]
    rate = HandshakeRate(per_ip=5.0, total=100.0, clock=lambda: now[0])
    assert rate.allow("203.0.113.7")
    rate.charge("203.0.113.7", 10)
    assert not rate.allow("203.0.113.7"), "in debt"
    now[0] = 1.9
    assert not rate.allow("203.0.113.7")
    now[0] = 2.3
    assert rate.allow("203.0.113.7"), "repaid"
    rate.charge("203.0.113.8", 10)
    rate.charge("203.0.113.9", 10)
    rate.charge("203.0.113.10", 10)
    rate.charge("203.0.113.11", 10)
    assert not rate.allow("203.0.113.12"), "the network owes what its addresses broke"
    assert rate.allow("198.51.100.1"), "another network does not"
    exempt = HandshakeRate(per_ip=5.0, total=100.0, clock=lambda: now[0])
    exempt.charge("127.0.0.1", 1000)
    assert exempt.allow("127.0.0.1")
