"""PeerExchange against a stand-in PeerManager: what is sent, what is taken, rate limits."""
from __future__ import annotations

import random
import time

import pytest

from p2p import messages as m
from p2p.address_book import AddressBook
from p2p.discovery.base import Candidate
from p2p.discovery.pex import MAX_CLAIMED, MAX_ENTRIES, MSG_TYPE, PEX_SCHEMAS, PeerExchange


PEX_ONLY = m.Schemas(PEX_SCHEMAS)


def nid(i: int) -> str:
    return f"{i:040x}"


class FakeLink:
    def __init__(self, remote_id: str, remote_addr=("127.0.0.1", 50000), listen=None) -> None:
        self.remote_id = remote_id
        self.remote_addr = remote_addr
        self.listen = listen
        self.is_open = True
        self.sent: list[dict] = []

    def send(self, message: dict) -> bool:
        PEX_ONLY.validate(message)  # what we send must pass the receiver's schema
        self.sent.append(message)
        return True


class Record:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port


class FakePeers:
    def __init__(self) -> None:
        self.node_id = nid(0)
        self.schemas = m.Schemas()
        self.book = AddressBook()
        self.links: dict[str, FakeLink] = {}
        self.peers: dict[str, Record] = {}
        self.link_message_handlers: dict = {}      # what PeerManager.attach wires, kept for the tests to call
        self.open_listeners: list = []
        self.close_listeners: list = []
        self.penalties: list[tuple[str, float]] = []

    def attach(self, component):
        hooks = component.peer_hooks()
        self.schemas.add(hooks.schemas)
        self.link_message_handlers.update(hooks.handlers)
        self.open_listeners += hooks.on_open
        self.close_listeners += hooks.on_close
        return component

    def _listen_address(self, link: FakeLink):
        return link.listen

    def add_candidate(self, candidate: Candidate, *, reporter=None, reporter_group=None) -> bool:
        if candidate.node_id == self.node_id:
            return False
        return self.book.add(candidate, reporter=reporter, reporter_group=reporter_group)

    def penalize(self, node_id: str, points: float, reason: str) -> None:
        self.penalties.append((node_id, points))

    def connect(self, i: int, host: str = "127.0.0.1", port: int | None = None, dialled: bool = True) -> FakeLink:
        """A link to peer `i`; `dialled=False`: it dialled us, its address is only its claim."""
        port = port or 40000 + i
        link = FakeLink(nid(i), (host, 55555), (host, port))
        self.links[link.remote_id] = link
        self.peers[link.remote_id] = Record(host, port)
        if dialled:
            self.book.mark_connected((host, port), link.remote_id, "bootstrap")
        for listener in self.open_listeners:
            listener(link)
        return link


@pytest.fixture
def pm() -> FakePeers:
    return FakePeers()


def test_sends_on_connect_without_receiver_itself(pm):
    pex = pm.attach(PeerExchange(pm, rng=random.Random(1)))
    a = pm.connect(1)
    assert a.sent == []  # nothing to tell the first peer but itself
    b = pm.connect(2)
    assert b.sent[-1]["peers"] == [["127.0.0.1", 40001, nid(1)]]
    pex.tick(now=time.monotonic() + 5)
    assert a.sent[-1]["peers"] == [["127.0.0.1", 40002, nid(2)]]
    assert pm.link_message_handlers[MSG_TYPE] == pex._on_message


def test_bounded_to_50_live_first_and_recent_verified(pm):
    pm.attach(PeerExchange(pm, rng=random.Random(2)))
    for i in range(1, 40):
        pm.connect(i)
    for i in range(100, 130):  # verified earlier, not connected now
        pm.book.mark_connected(("127.0.0.1", 30000 + i), nid(i))
    old = pm.book.mark_connected(("127.0.0.1", 29999), nid(999))
    old.last_connected = time.time() - 3600  # not recent: never shared
    receiver = pm.connect(200)
    entries = receiver.sent[-1]["peers"]
    assert len(entries) == MAX_ENTRIES
    ids = [e[2] for e in entries]
    assert len(set(ids)) == MAX_ENTRIES and nid(200) not in ids and nid(999) not in ids
    assert set(ids) >= {nid(i) for i in range(1, 40)}  # all live links made the cut


def test_addresses_only_linked_peers_claim_are_a_bounded_share_of_what_is_sent(pm):
    """Fifty inbound peers each claiming a made-up address cannot make up the list: the peers we dialled come
    first, and claims fill at most MAX_CLAIMED places."""
    pm.attach(PeerExchange(pm, rng=random.Random(3)))
    for i in range(1, 6):
        pm.connect(i)
    for i in range(300, 350):
        pm.connect(i, dialled=False)
    receiver = pm.connect(200)
    ids = [e[2] for e in receiver.sent[-1]["peers"]]
    assert {nid(i) for i in range(1, 6)} <= set(ids)
    assert len([i for i in ids if i not in {nid(i) for i in range(1, 6)}]) == MAX_CLAIMED


def test_an_inbound_peer_is_passed_on_only_at_the_ip_it_came_from(pm):
    """A peer that dialled us may listen on another port than its source port, so its claimed port at the IP
    its link came from is passed on; a host it names but did not come from is not (ten short handshakes naming
    one made-up host had honest nodes dial it hundreds of times)."""
    pm.attach(PeerExchange(pm, rng=random.Random(4)))
    pm.connect(1, host="10.9.0.1", port=7946)
    for i, (source, claimed) in enumerate([("10.9.0.2", "10.9.0.2"), ("10.9.0.3", "10.66.0.1"),
                                           ("::ffff:10.9.0.4", "10.9.0.4")], start=2):
        link = FakeLink(nid(i), (source, 55555), (claimed, 7946))
        pm.links[link.remote_id] = link
        pm.peers[link.remote_id] = Record(claimed, 7946)
    receiver = pm.connect(200, host="10.9.0.200", port=7946)
    hosts = {entry[0] for entry in receiver.sent[-1]["peers"]}
    assert hosts == {"10.9.0.1", "10.9.0.2", "10.9.0.4"}, hosts


def test_loopback_addresses_not_sent_to_remote_peer(pm):
    pm.attach(PeerExchange(pm))
    pm.connect(1)  # on loopback
    pm.connect(2, host="10.9.0.2", port=7946)
    remote = pm.connect(3, host="10.9.0.3", port=7946)
    assert remote.sent[-1]["peers"] == [["10.9.0.2", 7946, nid(2)]]


def test_received_entries_unverified_and_filtered(pm):
    pex = pm.attach(PeerExchange(pm))
    link = pm.connect(1)
    entries = [["127.0.0.1", 41000, nid(5)],
               ["127.0.0.1", 41001, pm.node_id],          # ourselves
               ["127.0.0.1", 41002, nid(1)],              # the reporter itself
               ["224.0.0.1", 41003, None],                # multicast
               ["0.0.0.0", 41004, None],                  # unspecified
               ["127.0.0.1", 0, None],                    # no port
               ["evil.example", 41005, None]]            # hostname: never resolved for a peer
    message = {"type": MSG_TYPE, "peers": entries}
    PEX_ONLY.validate(message)
    pm.link_message_handlers[MSG_TYPE](link, message)
    entry = pm.book.get(("127.0.0.1", 41000))
    assert entry is not None and not entry.verified and entry.source == "pex" and entry.node_id == nid(5)
    assert len(pm.book) == 2  # the connected peer + one new
    assert pex.stats.found == 1 and pex.stats.skipped == 6


def test_loopback_entries_from_remote_peer_skipped(pm):
    pex = pm.attach(PeerExchange(pm))
    link = pm.connect(1, host="10.9.0.2", port=7946)
    pex._on_message(link, {"type": MSG_TYPE, "peers": [["127.0.0.1", 41000, None], ["10.9.0.5", 7946, None]]})
    assert pm.book.get(("127.0.0.1", 41000)) is None and pm.book.get(("10.9.0.5", 7946)) is not None


def test_schema_caps_list_and_checks_entries():
    PEX_ONLY.validate({"type": MSG_TYPE, "peers": [["127.0.0.1", 1, None]] * 50})
    for bad in ([["127.0.0.1", 1, None]] * 51, [["127.0.0.1", 70000, None]], [["127.0.0.1", 1, "short"]],
                [["127.0.0.1", 1]], [[1, 1, None]], "x"):
        with pytest.raises(m.ProtocolError):
            PEX_ONLY.validate({"type": MSG_TYPE, "peers": bad})


def test_receive_rate_limit_drops_and_penalizes(pm):
    pex = pm.attach(PeerExchange(pm, recv_rate=1.0, recv_burst=3))
    link = pm.connect(1)
    for i in range(20):
        pex._on_message(link, {"type": MSG_TYPE, "peers": [["127.0.0.1", 42000 + i, None]]})
    assert pex.stats.received == 3 and pex.stats.dropped == 17
    assert len(pm.penalties) == 17 and all(p[0] == nid(1) for p in pm.penalties)


def test_periodic_and_change_driven_sends_respect_min_gap(pm):
    pex = pm.attach(PeerExchange(pm, fast_interval=2.0, fast_period=30.0, slow_interval=30.0, min_gap=1.0))
    t0 = time.monotonic()
    pex._started = t0
    a = pm.connect(1)
    pm.connect(2)  # a's view changed, but a was just sent to
    sends = len(a.sent)
    pex.tick(now=t0 + 0.2)
    assert len(a.sent) == sends  # within min gap
    pex.tick(now=t0 + 1.1)
    assert len(a.sent) == sends + 1  # links changed, gap passed
    pex.tick(now=t0 + 2.0)
    assert len(a.sent) == sends + 1  # nothing changed, interval not passed
    pex.tick(now=t0 + 3.2)
    assert len(a.sent) == sends + 2  # fast interval
    pex.tick(now=t0 + 40)
    pex.tick(now=t0 + 45)
    assert len(a.sent) == sends + 3  # slow interval after the fast period
    assert pex.interval(t0 + 40) == 30.0


def test_closed_link_forgotten(pm):
    pex = pm.attach(PeerExchange(pm))
    link = pm.connect(1)
    del pm.links[link.remote_id]
    for listener in pm.close_listeners:
        listener(link)
    pex._on_message(link, {"type": MSG_TYPE, "peers": [["127.0.0.1", 42000, None]]})
    assert pex.stats.received == 0


def test_change_driven_send_carries_only_news(pm):
    pex = pm.attach(PeerExchange(pm, fast_interval=2.0, min_gap=1.0))
    t0 = time.monotonic()
    pex._started = t0
    a = pm.connect(1)
    pm.connect(2)
    pex.tick(now=t0 + 1.1)
    assert a.sent[-1]["peers"] == [["127.0.0.1", 40002, nid(2)]]
    pm.connect(3)
    pex.tick(now=t0 + 2.2)
    assert a.sent[-1]["peers"] == [["127.0.0.1", 40003, nid(3)]]  # 2 was told already
    sends = len(a.sent)
    link2 = pm.links.pop(nid(2))
    for listener in pm.close_listeners:
        listener(link2)
    pex.tick(now=t0 + 3.3)
    assert len(a.sent) == sends  # our links changed but there is nothing new to tell a
    pex.tick(now=t0 + 4.0)
    assert len(a.sent) == sends  # the periodic send is due 2 s after the last real send (2.2)
    pex.tick(now=t0 + 4.3)
    assert len(a.sent) == sends + 1  # periodic: the full sample, recently verified 2 included
    assert sorted(e[2] for e in a.sent[-1]["peers"]) == [nid(2), nid(3)]
