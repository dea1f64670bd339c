"""A link held for a component's budget (PeerManager.hold_reading) stays alive: the liveness check,
which sees no bytes from it while it is held, counts its silence from the hold's end."""
from __future__ import annotations

import asyncio

import pytest

from p2p.link_reading import TURN_MESSAGES, LinkReading, ReadTurns
from tests.unit.p2p.rpc_nodes import link, nodes

pytestmark = pytest.mark.timeout(30)


async def test_a_held_link_is_not_dropped_as_silent_under_fast_heartbeats(tmp_path):
    async with nodes(tmp_path, {}, {}) as (a, b):     # heartbeats every 0.2 s: silent for 0.6 s is dead
        await link(a, b)
        held = a.peers.links[b.node_id]
        a.peers.hold_reading(b.node_id, 1.0)            # the budget's longest hold
        assert held.reading.held
        await asyncio.sleep(0.8)
        assert held.reading.held, "the hold is as long as asked"
        await asyncio.sleep(0.5)
        assert a.peers.links.get(b.node_id) is held and held.is_open, held.close_reason
        await a.rpc.request_peer(b.node_id, "ping")     # and it is read again


async def test_a_penalty_says_why_in_the_peer_row(tmp_path):
    """/status and the console show who is penalised and for what (the last reason given)."""
    async with nodes(tmp_path, {}, {}) as (a, b):
        await link(a, b)
        a.peers.penalize(b.node_id, 5.0, "bad_tx_signature")
        row = a.peers.peers[b.node_id].as_dict()
        assert row["penalty"] == 5.0 and row["penalty_reason"] == "bad_tx_signature"


async def test_a_link_we_are_behind_on_is_not_dropped_as_silent(tmp_path):
    """Issue 25: under a burst a validator leaves a link's messages in its backlog (socket paused) for as long as its
    loop is busy elsewhere, and the liveness check, seeing no bytes from it, dropped the link as silent though it
    was us who had not read it. A link whose socket we stop reading (its backlog waiting, or a circuit on it
    blocking it) counts as heard until we read it again."""
    async with nodes(tmp_path, {}, {}) as (a, b):     # heartbeats every 0.2 s: silent for 0.6 s is dead
        await link(a, b)
        behind = a.peers.links[b.node_id]
        behind.reading.block("a circuit carried on it")
        await asyncio.sleep(1.2)
        assert a.peers.links.get(b.node_id) is behind and behind.is_open, behind.close_reason
        behind.reading.unblock("a circuit carried on it")
        await a.rpc.request_peer(b.node_id, "ping")     # and it is read again
        assert a.peers.links.get(b.node_id) is behind


def test_silence_is_ours_while_a_backlog_waits_and_until_it_empties():
    class Loop:
        now = 10.0

        def time(self) -> float:
            return self.now

        def call_soon(self, callback: object, *args: object) -> None:
            return None

    loop = Loop()
    dispatched: list[list[dict]] = []
    reading = LinkReading(loop, lambda: None, dispatched.append, lambda exc: None,  # type: ignore[arg-type]
                          lambda: True, (1e9, 1e9), ReadTurns(), lambda: "net")
    assert reading.ours_until == 0.0
    reading.deliver([{"type": "x"}] * (TURN_MESSAGES + 1))      # one turn's worth handed over, one waits
    loop.now = 15.0
    assert reading.backlog and reading.ours_until == 15.0
    reading._next_turn()
    assert not reading.backlog and reading.ours_until == 15.0
    loop.now = 20.0
    assert reading.ours_until == 15.0, "from the moment it emptied, the peer's silence is its own again"


def test_silence_is_ours_until_the_last_blocker_leaves():
    """What the peer sent while a circuit blocked its link waits in our socket until the loop's next turn: the
    liveness check must not count that time as the peer's silence (a race the link test above hit)."""
    class Loop:
        now = 10.0

        def time(self) -> float:
            return self.now

    loop = Loop()
    reading = LinkReading(loop, lambda: None, lambda messages: None, lambda exc: None,  # type: ignore[arg-type]
                          lambda: True, (1e9, 1e9), ReadTurns(), lambda: "net")
    reading.block("circuit a")
    reading.block("circuit b")
    loop.now = 15.0
    assert reading.ours_until == 15.0
    reading.unblock("circuit a")
    loop.now = 16.0
    assert reading.ours_until == 16.0, "one blocker left: still ours"
    reading.unblock("circuit b")
    loop.now = 20.0
    assert reading.ours_until == 16.0, "from the moment the last blocker left, the silence is the peer's again"
    reading.unblock("circuit b")
    assert reading.ours_until == 16.0, "unblocking again by what no longer blocks moves nothing"
