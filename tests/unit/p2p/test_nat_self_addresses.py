"""Which of the addresses peers say they see us at we believe, and what dial-back answers make us private.

A hello's `observed_host` is a stranger's word: the node must not check, offer or publish a host until it
is its own (a link's local end, a port mapping) or observers in enough outside /24s name it, a dial-back
counts only for the host the server dialled, and one outside stranger's single `failed` among others is no
verdict of private.
The AutoNat tests drive the real client and server code through doubles of the links and the dialler."""
from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from p2p.connection import PeerLink
from p2p.nat.autonat import OK, REFUSED, REQUEST, RESPONSE, AutoNat
from p2p.nat.self_addresses import MAX_OUTSIDE_GROUPS, MAX_UNVOUCHED_PER_OBSERVER, Reachability, SelfAddresses
from p2p.peers import PeerManager
from tests.unit.p2p.rpc_nodes import local_peers

PORT = 7946


class _Transport:
    def __init__(self, local_host: str) -> None:
        self.local_host = local_host

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.local_host, PORT) if name == "sockname" else default


class _Link:
    """What AutoNat reads of a link: ids, both ends' addresses, the peer's hello, what was sent."""

    def __init__(self, node_id: str, host: str, sees_us_at: str | None, local_host: str) -> None:
        self.remote_id, self.remote_addr = node_id, (host, 40000)
        self.via: str | None = None
        self.transport = _Transport(local_host)
        self.remote_hello: dict[str, Any] = {} if sees_us_at is None else {"observed_host": sees_us_at}
        self.opened_at = time.time()
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> bool:
        self.sent.append(message)
        return True

    def requests(self) -> list[dict[str, Any]]:
        return [msg for msg in self.sent if msg["type"] == REQUEST]


class _Dialler:
    """The transport's dial-back: who answers at which address."""

    def __init__(self) -> None:
        self.listening: dict[tuple[str, int], str] = {}
        self.dialled: list[tuple[str, int]] = []

    async def probe(self, host: str, port: int, timeout: float) -> str:
        self.dialled.append((host, port))
        return self.listening.get((host, port), "nobody")


class _Peers:
    def __init__(self) -> None:
        self.listen_port = PORT
        self.links: dict[str, _Link] = {}
        self.transport = _Dialler()


def _autonat() -> tuple[AutoNat, _Peers]:
    peers = _Peers()
    return AutoNat(cast(PeerManager, peers)), peers


def _join(nat: AutoNat, peers: _Peers, link: _Link) -> PeerLink:
    """A link opens: AutoNat hears the peer's hello."""
    peers.links[link.remote_id] = link
    nat._on_open(cast(PeerLink, link))
    return cast(PeerLink, link)


def _answer(nat: AutoNat, link: _Link, status: str, host: str | None = "asked") -> None:
    """The peer answers each request it has: `host` is the IP it says it dialled ("asked": the one named in
    the request, None: a node that does not say)."""
    for request in link.requests():
        reply: dict[str, Any] = {"type": RESPONSE, "nonce": request["nonce"], "status": status}
        said = request.get("host") if host == "asked" else host
        if said is not None:
            reply["host"] = said
        nat._on_response(cast(PeerLink, link), reply)
    link.sent.clear()


# --- finding 5: a stranger's observed_host never becomes ours ----------------------------------------------

def test_hosts_strangers_in_one_network_name_are_never_checked_offered_or_published() -> None:
    """Six keys in one /24, each hello naming its own host and each answering every dial-back `ok`: none of
    those hosts is asked about, offered or published; our real address, which an honest peer sees and
    reaches, is."""
    nat, peers = _autonat()
    honest = _Link("a" * 40, "203.0.113.5", "192.0.2.10", local_host="192.0.2.10")
    strangers = [_Link(f"{i:040x}", f"198.51.100.{i}", f"100.66.0.{i}", local_host="192.0.2.10")
                 for i in range(1, 7)]
    for link in (honest, *strangers):
        _join(nat, peers, link)
    assert nat.ask() >= 1
    for stranger in strangers:
        _answer(nat, stranger, OK)
    _answer(nat, honest, OK)
    assert [(a.host, a.port) for a in nat.addresses.confirmed()] == [("192.0.2.10", PORT)]
    assert {a.host for a in nat.addresses.candidates()} == {"192.0.2.10"}
    assert nat.reachability == Reachability.PUBLIC


def test_a_dial_back_is_asked_only_of_peers_that_see_us_at_that_host_and_names_it() -> None:
    """A server dials the IP its link sees: asking a peer that sees us at our real IP about a host two
    observers named would credit that host with a dial that never went there."""
    nat, peers = _autonat()
    named = "100.66.0.1"
    honest = _Link("a" * 40, "203.0.113.5", "192.0.2.10", local_host="192.0.2.10")
    observers = [_Link("b" * 40, "198.51.100.5", named, local_host="10.0.0.2"),
                 _Link("c" * 40, "198.18.7.5", named, local_host="10.0.0.2")]
    for link in (honest, *observers):
        _join(nat, peers, link)
    nat.ask()
    assert [r.get("host") for r in honest.requests()] == ["192.0.2.10"]
    assert all([r.get("host") for r in o.requests()] == [named] for o in observers)
    _answer(nat, honest, OK)
    assert [a.host for a in nat.addresses.confirmed()] == ["192.0.2.10"]


def test_an_ok_counts_only_for_the_host_the_server_says_it_dialled() -> None:
    nat, peers = _autonat()
    host = "198.51.100.7"
    liar = _Link("a" * 40, "203.0.113.5", host, local_host="10.0.0.2")
    older = _Link("b" * 40, "192.0.2.5", host, local_host="10.0.0.2")
    for link in (liar, older):
        _join(nat, peers, link)
    nat.ask()
    _answer(nat, liar, OK, host="203.0.113.99")                  # it dialled somewhere else
    assert nat.addresses.confirmed() == [] and nat.counters["answers_other_host"] == 1
    _answer(nat, older, OK, host=None)      # a node that does not say dials what its link sees: our host
    assert [a.host for a in nat.addresses.confirmed()] == [host]


@pytest.mark.asyncio
async def test_a_server_answers_only_for_the_ip_its_link_sees_and_says_which() -> None:
    nat, peers = _autonat()
    requester = _Link("a" * 40, "203.0.113.5", None, local_host="192.0.2.10")
    peers.transport.listening[("203.0.113.5", 9000)] = requester.remote_id
    link = cast(PeerLink, requester)
    nat._on_request(link, {"type": REQUEST, "nonce": b"1" * 8, "port": 9000, "host": "100.66.0.1"})
    assert requester.sent == [{"type": RESPONSE, "nonce": b"1" * 8, "status": REFUSED, "reason": "other_host"}]
    assert peers.transport.dialled == []
    nat._on_request(link, {"type": REQUEST, "nonce": b"2" * 8, "port": 9000, "host": "203.0.113.5"})
    await asyncio.gather(*nat._tasks)
    assert requester.sent[-1] == {"type": RESPONSE, "nonce": b"2" * 8, "status": OK, "host": "203.0.113.5"}
    assert peers.transport.dialled == [("203.0.113.5", 9000)]


def test_a_host_becomes_a_candidate_once_two_outside_networks_other_than_its_own_see_it() -> None:
    addresses = SelfAddresses(PORT)
    for _ in range(6):
        addresses.observed("198.51.100.7", "203.0.113.0/24", "10.0.0.0/24")
    addresses.observed("198.51.100.7", "198.51.100.0/24", "10.0.0.0/24")     # the host's own /24
    addresses.observed("198.51.100.7", "10.0.0.0/24", "10.0.0.0/24")         # our own LAN
    assert addresses.candidates() == []
    # named first by the only outside network met then: checked (a failure there could make us private), but
    # its success neither confirms the host nor makes us public
    assert [e.host for e in addresses.to_check(300.0)] == ["198.51.100.7"]
    addresses.answered("198.51.100.7", PORT, True, "a" * 40, True, "203.0.113.0/24")
    assert addresses.confirmed() == [] and addresses.reachability == Reachability.UNKNOWN
    entry = addresses.observed("198.51.100.7", "192.0.2.0/24", "10.0.0.0/24")
    assert entry is not None and addresses.candidates() == [entry] and addresses.confirmed() == [entry]


def test_our_own_end_of_a_link_and_a_port_mapping_are_candidates_at_once() -> None:
    addresses = SelfAddresses(PORT)
    own = addresses.observed("192.0.2.10", "203.0.113.0/24", "192.0.2.0/24", local=True)
    mapped = addresses.mapped("198.51.100.7", 40001)
    assert own is not None and {(a.host, a.port) for a in addresses.candidates()} == {
        ("192.0.2.10", PORT), ("198.51.100.7", 40001)}
    assert [(a.host, a.port) for a in addresses.to_check(300.0)] == [(own.host, own.port), (mapped.host, mapped.port)]


def test_one_observer_network_cannot_fill_the_table_of_our_addresses() -> None:
    """The table is bounded in all; a /24 naming host after host keeps only its share of unvouched ones, so
    hosts other networks name still get in (and can gather the observers that make them candidates)."""
    addresses = SelfAddresses(PORT)
    assert addresses.observed("192.0.2.10", "203.0.113.0/24", "10.0.0.0/24") is not None   # two networks met
    kept = [addresses.observed(f"100.66.0.{i}", "198.51.100.0/24", "10.0.0.0/24") for i in range(1, 40)]
    assert sum(entry is not None for entry in kept) == MAX_UNVOUCHED_PER_OBSERVER
    assert addresses.observed("192.0.2.10", "198.18.0.0/24", "10.0.0.0/24") is not None
    assert [a.host for a in addresses.candidates()] == ["192.0.2.10"]


@pytest.mark.asyncio
async def test_hole_punch_offers_name_only_candidate_hosts(tmp_path) -> None:
    from p2p.nat.holepunch import HolePuncher
    _, _, peers = local_peers(tmp_path, "punch")
    addresses = SelfAddresses(PORT)
    addresses.observed("100.66.0.1", "198.51.100.0/24", "10.0.0.0/24")
    for group in ("198.51.100.0/24", "203.0.113.0/24"):
        addresses.observed("192.0.2.10", group, "10.0.0.0/24")
    puncher = HolePuncher(peers, addresses, enabled=True)
    assert puncher._our_addrs(5000) == [["192.0.2.10", 5000]]
    await puncher.stop()


# --- finding 6: one stranger's `failed` does not make us private ------------------------------------------

def _three_observers(nat: AutoNat, peers: _Peers, host: str) -> list[_Link]:
    links = [_Link("a" * 40, "203.0.113.5", host, local_host="10.0.0.2"),
             _Link("b" * 40, "192.0.2.5", host, local_host="10.0.0.2"),
             _Link("c" * 40, "100.64.5.5", host, local_host="10.0.0.2")]
    for link in links:
        _join(nat, peers, link)
    assert nat.ask() == 3
    return links


def test_one_outside_strangers_failed_is_no_verdict_of_private() -> None:
    nat, peers = _autonat()
    first, second, stranger = _three_observers(nat, peers, "198.51.100.7")
    _answer(nat, stranger, "failed")
    assert nat.reachability == Reachability.UNKNOWN
    _answer(nat, first, OK)
    assert nat.reachability == Reachability.PUBLIC
    _answer(nat, second, "failed")
    assert nat.reachability == Reachability.PUBLIC                  # a success outweighs failures


def test_failures_from_two_outside_networks_make_us_private_and_a_success_outweighs_them() -> None:
    nat, peers = _autonat()
    first, second, third = _three_observers(nat, peers, "198.51.100.7")
    _answer(nat, first, "failed")
    assert nat.reachability == Reachability.UNKNOWN
    _answer(nat, second, "failed")
    assert nat.reachability == Reachability.PRIVATE
    _answer(nat, third, OK)
    assert nat.reachability == Reachability.PUBLIC


def test_outside_networks_that_link_while_an_address_is_undecided_are_asked_at_once() -> None:
    """A NATed node asks its relay (the only peer so far), and a second outside peer links before the relay's
    answer: two failures now make the verdict, and the newcomer's /24 is asked at once, not when the address
    is next due (the failed pace, 15 s and more, left the node neither private nor relayed all that while).
    A /24 asked since the address was due (answering, refused, answered) is not asked again, nor a peer inside
    our own /24, nor more than `fanout` at once; once the verdict is in, nobody is asked until it is due."""
    nat, peers = _autonat()
    host = "198.51.100.7"
    relay = _Link("a" * 40, "203.0.113.5", host, local_host="10.0.0.2")
    _join(nat, peers, relay)
    assert nat.ask() == 1
    neighbour = _Link("d" * 40, "10.0.0.9", host, local_host="10.0.0.2")       # our LAN: says nothing of outside
    second = _Link("b" * 40, "192.0.2.5", host, local_host="10.0.0.2")
    _join(nat, peers, neighbour)
    _join(nat, peers, second)
    assert nat.ask() == 1 and len(second.requests()) == 1 and not neighbour.requests()
    assert nat.ask() == 0, "a /24 already asked is not asked again while its answer is pending"
    _answer(nat, second, REFUSED)
    assert nat.ask() == 0 and not second.requests(), "nor after it refused: it waits for the address's next round"
    second = _Link("b" * 40, "192.0.2.5", host, local_host="10.0.0.2")      # it links again
    _join(nat, peers, second)
    assert nat.ask() == 0, "a /24 asked this round is not asked again on a new link"
    third, fourth, fifth = (_Link(c * 40, f"198.18.{i}.5", host, local_host="10.0.0.2")
                            for i, c in enumerate("cef"))
    for link in (third, fourth, fifth):
        _join(nat, peers, link)
    assert nat.ask() == 2 and third.requests() and fourth.requests() and not fifth.requests(), \
        "three questions out at most"
    _answer(nat, relay, "failed")
    assert nat.reachability == Reachability.UNKNOWN and nat._wake.is_set()
    assert nat.ask() == 1 and len(fifth.requests()) == 1
    _answer(nat, third, "failed")
    assert nat.reachability == Reachability.PRIVATE
    for link in (fourth, fifth):
        _answer(nat, link, "failed")
    late = _Link("9" * 40, "198.19.5.5", host, local_host="10.0.0.2")
    _join(nat, peers, late)
    assert nat.ask() == 0 and not relay.requests() and not late.requests(), "a verdict waits for its recheck"


def test_silent_networks_hold_an_undecided_address_only_until_their_questions_expire() -> None:
    """Three strangers' /24s link first and never answer: they hold the three questions out, and an honest
    outside peer that links meanwhile is asked once their questions expire, not the silent ones again (they
    were asked again at every expiry, first in line as the oldest links, and the honest peer never was)."""
    nat, peers = _autonat()
    host = "198.51.100.7"
    silent = [_Link(c * 40, f"100.64.{i}.5", host, local_host="10.0.0.2") for i, c in enumerate("abc")]
    for link in silent:
        _join(nat, peers, link)
    assert nat.ask() == 3
    honest = _Link("d" * 40, "192.0.2.5", host, local_host="10.0.0.2")
    _join(nat, peers, honest)
    assert nat.ask() == 0 and not honest.requests()
    _expire_all(nat)
    for link in silent:
        link.sent.clear()
    assert nat.ask() == 1 and len(honest.requests()) == 1 and not any(link.requests() for link in silent)
    _expire_all(nat)
    assert nat.ask() == 3, "every linked /24 asked and none answered: the round starts over"


def _expire_all(nat: AutoNat) -> None:
    """Every question out was asked longer ago than an answer may take."""
    nat._asked = {nonce: q._replace(at=q.at - nat.answer_timeout - 1) for nonce, q in nat._asked.items()}
    nat._expire_questions()


def test_an_undecided_round_asks_a_bounded_number_of_networks() -> None:
    """Strangers linking from one /24 after another, each refusing: the round asks at most MAX_OUTSIDE_GROUPS
    of them, and what it remembers stays that size."""
    nat, peers = _autonat()
    host = "198.51.100.7"
    _join(nat, peers, _Link("a" * 40, "203.0.113.5", host, local_host="10.0.0.2"))
    assert nat.ask() == 1
    asked = 1
    for i in range(MAX_OUTSIDE_GROUPS + 20):
        stranger = _Link(f"{i + 1:040x}", f"100.{64 + i // 200}.{i % 200}.5", host, local_host="10.0.0.2")
        _join(nat, peers, stranger)
        asked += nat.ask()
        _answer(nat, stranger, REFUSED)
    assert asked == MAX_OUTSIDE_GROUPS and all(len(groups) <= MAX_OUTSIDE_GROUPS for groups in nat._round.values())


def test_one_network_failing_twice_is_a_verdict_a_second_network_that_never_answers_cannot_hold_off() -> None:
    """A small network's relay fails our address once after a second outside network linked: that is no verdict
    yet, but the relay failing it again is, though the second network never answers (old nodes, a stranger
    keeping us `unknown` and unrelayed); any outside success still outweighs the failures."""
    addresses = SelfAddresses(PORT)
    addresses.mapped("198.51.100.7", PORT)
    addresses.observed("198.51.100.7", "192.0.2.0/24", "10.0.0.0/24")       # a second outside network met
    addresses.answered("198.51.100.7", PORT, False, "a" * 40, True, "203.0.113.0/24", now=1000.0)
    assert addresses.reachability == Reachability.UNKNOWN, "one stranger's single failure among others"
    addresses.answered("198.51.100.7", PORT, False, "a" * 40, True, "203.0.113.0/24", now=1015.0)
    assert addresses.reachability == Reachability.PRIVATE
    addresses.answered("198.51.100.7", PORT, True, "b" * 40, True, "192.0.2.0/24", now=1020.0)
    assert addresses.reachability == Reachability.PUBLIC


def test_failures_of_different_addresses_do_not_add_up() -> None:
    """The verdict is per address: one /24 failing our mapping and another failing our observed host says
    of neither that two networks could not reach it."""
    addresses = SelfAddresses(PORT)
    addresses.mapped("198.51.100.7", 40001)
    addresses.observed("192.0.2.10", "203.0.113.0/24", "192.0.2.0/24", local=True)
    addresses.observed("192.0.2.10", "198.18.0.0/24", "192.0.2.0/24", local=True)     # two outside networks met
    addresses.answered("198.51.100.7", 40001, False, "a" * 40, True, "203.0.113.0/24")
    addresses.answered("192.0.2.10", PORT, False, "b" * 40, True, "198.18.0.0/24")
    assert addresses.reachability == Reachability.UNKNOWN
    addresses.answered("198.51.100.7", 40001, False, "c" * 40, True, "198.18.0.0/24")
    assert addresses.reachability == Reachability.PRIVATE


def test_with_one_outside_network_met_its_word_is_all_there_is() -> None:
    """A small network with one public node (the relay NATed nodes link out to): its observation makes the host
    a candidate and its failed dial-back makes us private, or NATed nodes would never reserve a relay. Once a
    second outside network is met, two must agree on a new host, but the verdict given stands."""
    addresses = SelfAddresses(PORT)
    entry = addresses.observed("198.51.100.7", "203.0.113.0/24", "10.0.0.0/24")
    assert entry is not None and entry.candidate
    addresses.answered("198.51.100.7", PORT, False, "a" * 40, True, "203.0.113.0/24")
    assert addresses.reachability == Reachability.PRIVATE
    addresses.observed("198.51.100.7", "192.0.2.0/24", "10.0.0.0/24")
    stranger = addresses.observed("100.66.0.1", "192.0.2.0/24", "10.0.0.0/24")
    assert stranger is not None and not stranger.candidate, "one of two outside networks is no longer enough"
    # the relay's verdict stands: the other NATed node linking must not make us `unknown` until it answers
    assert addresses.reachability == Reachability.PRIVATE
    addresses.answered("198.51.100.7", PORT, True, "b" * 40, True, "192.0.2.0/24")
    assert addresses.reachability == Reachability.PUBLIC, "an outside success outweighs the relay's failure"


def test_a_stranger_naming_another_host_cannot_keep_a_small_networks_nated_node_unknown() -> None:
    """The public node (the only outside network met) sees us at our router's host; then a stranger in a second
    /24 links and names another host, so neither host has two outside networks behind it. The router's host is
    still asked about, and the public node failing it twice makes us private (it was asked again at the failed
    pace); it is never offered or published on that one word, and the stranger's host is never asked about."""
    nat, peers = _autonat()
    router, named = "198.51.100.7", "100.66.0.1"
    relay = _Link("a" * 40, "203.0.113.5", router, local_host="10.0.0.2")
    _join(nat, peers, relay)
    stranger = _Link("b" * 40, "192.0.2.5", named, local_host="10.0.0.2")
    _join(nat, peers, stranger)
    assert nat.addresses.candidates() == [], "one word each: neither host is ours"
    assert nat.ask() == 1 and [r["host"] for r in relay.requests()] == [router] and not stranger.requests()
    _answer(nat, relay, "failed")
    assert nat.reachability == Reachability.UNKNOWN, "one failure, with another network met: no verdict yet"
    address = nat.addresses.addresses[(router, PORT)]
    address.answers[-1].at -= nat.recheck_failed          # the failed pace has passed
    assert nat.ask() == 1 and [r["host"] for r in relay.requests()] == [router] and not stranger.requests()
    _answer(nat, relay, "failed")
    assert nat.reachability == Reachability.PRIVATE
    assert nat.addresses.candidates() == [] and nat.addresses.confirmed() == []
