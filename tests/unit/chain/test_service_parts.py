"""The chain service's parts that face its peers and its history, each driven alone through the narrow seam it
sees of the service (`ports.ChainHost`): what peers say of their chain (`peer_chains.py`), the RPCs it serves
(`serving.py`), the recovery of damaged history and its deadline (`history_recovery.py`), and the seat handed
back at stop (`seat_handback.py`)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from exchange.chain.boot import Recovering
from exchange.chain.seats.founding import Founding
from exchange.chain.recovery.history_recovery import HistoryRecovery
from exchange.chain.sync.peer_chains import CONFLICT_LOG_INTERVAL, CONFLICT_TTL, MAX_CONFLICTS, PeerChains
from exchange.chain.ports import CannotServe, NotReady, RpcHandler, RpcValue
from exchange.chain.seats.seat_handback import SeatHandback
from exchange.chain.sync.serving import ChainServing

OURS, THEIRS = "a" * 64, "b" * 64
# A SimpleNamespace standing in for a core, a store or a genesis: it holds only what the part under test reads.
Fake = Any
NO_STORE: Fake = SimpleNamespace()       # what serving transactions and the genesis never read


class Validators(list):
    faults = 1


class Host:
    """The service as its peer-facing parts see it (`ports.ChainHost`)."""

    def __init__(self, genesis: Fake = None, core: Fake = None) -> None:
        self.genesis = genesis
        self.core = core
        self.pumps = 0

    def usable_core(self) -> Fake:
        if self.core is None:
            raise NotReady("no_chain_yet", "no chain")
        return self.core

    def accepting_core(self) -> Fake:
        return self.usable_core()

    def schedule_pump(self) -> None:
        self.pumps += 1


class Net:
    """A ChainNetwork that writes down what is sent and penalised."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.penalties: list[tuple[str, str]] = []
        self.offered: dict[str, RpcHandler] = {}

    def send(self, node_id: str, message: dict) -> None:
        self.sent.append((node_id, message))

    def broadcast(self, message: dict) -> None:
        pass

    def penalize(self, node_id: str, points: float, reason: str) -> None:
        self.penalties.append((node_id, reason))

    def network_of(self, node_id: str) -> str | None:
        return None

    def hold_reading(self, node_id: str, seconds: float) -> None:
        pass

    def keep_linked(self, node_ids: set[str]) -> None:
        pass

    def linked_providers(self, service: str) -> list[str]:
        return []

    def offer(self, service: str, handler: RpcHandler) -> None:
        self.offered[service] = handler

    def withdraw(self, service: str) -> None:
        self.offered.pop(service, None)

    async def call(self, service: str, payload: RpcValue, timeout: float, peer: str | None = None) -> RpcValue:
        raise ConnectionError("no peers")


def _peer_chains(host: Host, clock: list[float]) -> tuple[PeerChains, Net, dict[str, int]]:
    net, counters = Net(), {"status_sent": 0, "status_received": 0}
    founding = Founding("me", b"k" * 32, found_after=3.0, started=clock[0])
    return PeerChains(host, founding, net, "testnet", lambda: clock[0], counters), net, counters


def test_a_peer_on_another_chain_is_not_linked_and_only_the_newest_conflicts_are_kept():
    clock = [100.0]
    peers, _, _ = _peer_chains(Host(genesis=SimpleNamespace(chain_id=OURS)), clock)
    for i in range(MAX_CONFLICTS + 5):
        assert peers.on_peer_info(f"n{i}", b"", THEIRS, i) is False
    assert len(peers.conflicts) == MAX_CONFLICTS
    assert "n0" not in peers.conflicts and peers.conflicts[f"n{MAX_CONFLICTS + 4}"]["height"] == MAX_CONFLICTS + 4
    assert peers.on_peer_info("friend", b"", OURS, 3) is True
    assert peers.on_peer_info("unsure", b"", None, 0) is True       # a peer with no chain yet is linked
    assert "friend" in peers.founding.peers and "friend" not in peers.conflicts
    peers.on_peer_gone("friend")
    assert "friend" not in peers.founding.peers


def test_conflicting_networks_are_forgotten_once_unheard_and_warned_of_once_in_a_while(caplog):
    clock = [100.0]
    peers, _, _ = _peer_chains(Host(genesis=SimpleNamespace(chain_id=OURS)), clock)
    with caplog.at_level("WARNING", logger="exchange.chain"):
        for i in range(3000):                               # fresh keys, each naming a chain of its own
            clock[0] = 100.0 + i * 0.001
            peers.on_peer_info(f"n{i}", b"", f"{i:064x}", 1)
    warnings = [r.getMessage() for r in caplog.records if "another network" in r.getMessage()]
    assert len(warnings) == 1 and len(peers.conflict_view()) == MAX_CONFLICTS
    clock[0] += CONFLICT_LOG_INTERVAL
    peers.on_peer_info("late", b"", THEIRS, 1)
    assert "(2999 other networks heard since the last warning)" in caplog.records[-1].getMessage()
    clock[0] += CONFLICT_TTL - 1
    assert list(peers.conflict_view()) == ["late"], "those unheard for CONFLICT_TTL are forgotten"
    peers.note_conflict("founding", {"chain_id": THEIRS, "reason": "its MARKETS differ"})
    clock[0] += 2
    assert list(peers.conflict_view()) == ["founding"] and peers.conflicts["founding"]["seen"] == clock[0] - 2


def test_before_a_chain_we_state_none_and_link_every_peer():
    peers, _, _ = _peer_chains(Host(), [100.0])
    assert peers.chain_info() == {"chain_id": "", "height": 0}
    assert peers.on_peer_info("n1", b"", THEIRS, 9) is True and not peers.conflicts


def test_a_peer_at_our_chain_tells_the_core_its_height():
    heights: list[tuple[str, int]] = []
    core = SimpleNamespace(height=7, peer_height=lambda node, height, now: heights.append((node, height)))
    host = Host(genesis=SimpleNamespace(chain_id=OURS), core=core)
    peers, _, _ = _peer_chains(host, [100.0])
    assert peers.chain_info() == {"chain_id": OURS, "height": 7}
    assert peers.on_peer_info("n1", b"", OURS, 12) is True
    assert heights == [("n1", 12)] and host.pumps == 1


def test_a_grenache_peers_chain_status_is_heard_when_well_formed():
    peers, _, counters = _peer_chains(Host(genesis=SimpleNamespace(chain_id=OURS)), [100.0])
    for body in (["short", 1], [THEIRS, -1], [THEIRS], "x", None):
        peers.on_status(body, "g1")
    assert counters["status_received"] == 5 and not peers.conflicts and not peers.founding.peers
    peers.on_status([THEIRS, 4], "g1")
    assert counters["status_received"] == 6 and peers.conflicts["g1"]["chain_id"] == THEIRS


def test_our_chain_goes_to_the_grenache_members_once_a_second():
    clock = [100.0]
    peers, net, counters = _peer_chains(Host(genesis=SimpleNamespace(chain_id=OURS)), clock)
    peers.tell_grenache_members()
    assert net.sent == []                               # nobody reached only over Grenache
    peers.grenache_members = lambda: {"g1"}
    clock[0] = 101.0
    peers.tell_grenache_members()
    clock[0] = 101.5
    peers.tell_grenache_members()
    assert net.sent == [("g1", {"type": "chain_status", "body": [OURS, 0]})] and counters["status_sent"] == 1


def test_serving_without_a_chain():
    net, store = Net(), NO_STORE
    serving = ChainServing(Host(), net, store, lambda: 100.0)
    serving.offer()
    assert sorted(net.offered) == ["chain.genesis", "chain.snapshot"]
    with pytest.raises(CannotServe):
        serving.serve_genesis(None, "p")
    assert serving.serve_submit([], "p") == {"error": "not_validator"}


def test_a_malformed_submit_is_penalised():
    core = SimpleNamespace(is_validator=True, intake=SimpleNamespace(within_tx_budget=lambda peer, now: True),
                           holds_wire=lambda body: False)
    net = Net()
    serving = ChainServing(Host(core=core), net, NO_STORE, lambda: 100.0)
    answer = serving.serve_submit(["not a tx"], "p")
    assert answer.get("error") and net.penalties and net.penalties[0][0] == "p"
    core.intake.within_tx_budget = lambda peer, now: False
    assert serving.serve_submit(["not a tx"], "p") == {"error": "sender_quota"}


def test_a_submit_of_a_transaction_held_already_spends_no_budget():
    """A follower hands each transaction to two upcoming proposers; the first relays it to the second, naming the
    follower's lane and charging its budget there: the follower's own copy must not be charged again."""
    spent: list[str] = []

    def within_tx_budget(peer: str, now: float) -> bool:
        spent.append(peer)
        return False
    core = SimpleNamespace(is_validator=True, holds_wire=lambda body: True,
                           intake=SimpleNamespace(within_tx_budget=within_tx_budget))
    serving = ChainServing(Host(core=core), Net(), NO_STORE, lambda: 100.0)
    assert serving.serve_submit(["held"], "p") == {"ok": True, "error": None}
    assert spent == []


def _recovering(since: float, need_height: int, tail_damaged: bool = False) -> Recovering:
    return {"since": since, "need_height": need_height, "missing": "heights 5-9", "tail_damaged": tail_damaged,
            "damage": "a torn block"}


def test_damaged_history_not_back_in_time_is_fatal_once():
    clock = [100.0]
    store: Fake = SimpleNamespace(missing_heights=[range(5, 10)], root=Path("/data/chain"))
    history = HistoryRecovery(store, lambda: clock[0], timeout=60.0)
    history.recovering = _recovering(100.0, 10)
    stopped: list[str] = []
    history.fatal_listeners.append(stopped.append)
    core: Fake = SimpleNamespace(height=4)
    history.progress(core, 0)
    assert history.fatal is None
    clock[0] = 161.0
    history.progress(core, 0)
    history.progress(core, 0)
    assert history.fatal is not None and "heights 5-9 of /data/chain/blocks" in history.fatal
    assert stopped == [history.fatal] and history.recovering is not None


def test_history_back_from_peers_lets_orders_in_again():
    store: Fake = SimpleNamespace(missing_heights=[], root=Path("/data/chain"))
    history = HistoryRecovery(store, lambda: 100.0, timeout=60.0)
    history.recovering = _recovering(100.0, 10)
    core: Fake = SimpleNamespace(height=10)
    history.progress(core, 0)
    assert history.recovering is None and history.fatal is None


async def test_a_kept_seat_is_not_handed_back():
    leaves: list[float] = []
    core: Fake = SimpleNamespace(state=SimpleNamespace(validators=Validators([1, 2, 3, 4])),
                                genesis=SimpleNamespace(pinned=False),
                                seat_requests=SimpleNamespace(request_leave=leaves.append))
    await SeatHandback(lambda: 100.0, keep_seat=True, timeout=0.1).give_back(core, lambda: None)
    assert leaves == []


async def test_without_a_standby_the_only_validator_keeps_its_seat():
    pumps: list[int] = []
    seats = SimpleNamespace(leave_safe=lambda validators, key: True)
    core: Fake = SimpleNamespace(state=SimpleNamespace(validators=Validators([1]), seats=seats),
                                genesis=SimpleNamespace(pinned=False),
                                seat_requests=SimpleNamespace(request_leave=lambda now: None),
                                is_validator=True, public_key=b"me")
    await SeatHandback(lambda: 100.0, keep_seat=False, timeout=0.1).give_back(core, lambda: pumps.append(1))
    assert pumps == []
