"""Red team on followers deciding from the precommits validators send them (exchange/chain/consensus/precommit_quorum.py), on
three honest validators, a fourth validator the test plays (a Byzantine member of the set, quorum 3 of 4) and a
follower, all real processes but the liar.

The liar, linked to everyone as a validator, sends the follower for each of its next heights: proposals of
made-up blocks (rounds 0 and 1, new ones each time), its own valid precommits for them at rounds up to the
highest, malformed `chain_block` and `chain_precommit` bodies, and precommits under the honest validators' keys
with signatures it cannot make. What must hold: the follower decides nothing the honest validators did not (one
state with them), keeps deciding at their pace and from their precommits, is not halted, blames no honest
validator, and logs no traceback.
"""
from __future__ import annotations

import os
import time

import pytest

from exchange.chain.types.blocks import MAX_ROUND, PRECOMMIT, Block, Header, Proposal, Vote
from node.identity import NodeIdentity
from tests.byzantine import ByzantinePeer, identity_not_smallest
from tests.harness import Cluster, NodeProcess, converged, wait_until
from tests.integration.chain_nodes import node_ids, pinned_loopback
from tests.redteam.attacker import penalties_logged
from tests.redteam.rt_honest import Honest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

ATTACK_SECONDS = 6.0


def _made_up(chain_id: str, height: int, proposer: bytes) -> Block:
    header = Header(chain_id, height, int(time.time() * 1000), os.urandom(32), proposer, os.urandom(32),
                    os.urandom(32), Block.txs_hash([]), None)
    return Block(header, [])


def _heights(node: NodeProcess, seconds: float) -> tuple[int, int]:
    """(heights made final, of them from precommits) on `node` over `seconds`."""
    before = _counts(node)
    time.sleep(seconds)
    after = _counts(node)
    return after[0] - before[0], after[1] - before[1]


def _counts(node: NodeProcess) -> tuple[int, int]:
    status = node.status()
    return status["height"], status["exchange"]["decided_from_precommits"]


def _lie(liar: ByzantinePeer, follower: NodeProcess, chain_id: str, honest_keys: list[bytes]) -> \
        tuple[int, float, tuple[int, int]]:
    """ATTACK_SECONDS of lies to every node the liar links to, for the follower's next height each time: rounds
    sent, seconds taken, and the follower's (heights, from precommits) meanwhile."""
    def lie(kind: str, body: object) -> None:
        liar._loop.call_soon_threadsafe(liar._send_all, kind, body)

    sent = 0
    start = time.monotonic()
    before = _counts(follower)
    while time.monotonic() - start < ATTACK_SECONDS:
        height = follower.status()["height"] + 1
        for round_ in (0, 1):
            block = _made_up(chain_id, height, liar.public_key)
            proposal = Proposal.create(chain_id, height, round_, -1, block, liar.public_key, liar.identity.sign)
            lie("chain_block", proposal.wire())
            for vote_round in (round_, MAX_ROUND):
                lie("chain_precommit", Vote.create(chain_id, PRECOMMIT, height, vote_round, block.id,
                                                   liar.public_key, liar.identity.sign).wire())
            for key in honest_keys:             # the honest validators' keys, signatures it cannot make
                lie("chain_precommit", Vote(PRECOMMIT, height, round_, block.id, key, os.urandom(64)).wire())
        for junk in ("x", [1, 2], None, {"a": 1}, [height, 0, -1, "block", b"", b""]):
            lie("chain_block", junk)
            lie("chain_precommit", junk)
        sent += 1
        time.sleep(0.05)
    after = _counts(follower)
    return sent, time.monotonic() - start, (after[0] - before[0], after[1] - before[1])


def test_a_lying_validator_cannot_make_a_follower_decide_or_stall(tmp_path):
    cluster = Cluster(tmp_path)
    honest_ids = node_ids(cluster.base, ["v0", "v1", "v2"])
    honest_keys = [NodeIdentity.load_or_create(cluster.base / name).public_key_bytes for name in ("v0", "v1", "v2")]
    liar = ByzantinePeer(identity_not_smallest(honest_ids))
    try:
        validators, (follower,) = pinned_loopback(cluster, 3, 1, outsiders=(liar.node_id,), heartbeat_interval=0.2,
                                                  on_started=lambda nodes: [liar.link(n.p2p_address) for n in nodes])
        chain_id = validators[0].status()["chain_id"]
        liar.announce(chain_id, validators[0].status()["height"])
        wait_until(lambda: follower.node_id in liar.linked(), 10, message="the liar links to the follower")
        wait_until(lambda: follower.status()["height"] >= validators[0].status()["height"] - 1 > 2, 20,
                   message="the follower follows")
        with Honest(follower) as honest:      # an order at a time through the follower, each until final there
            base_heights, base_fast = _heights(follower, 3.0)
            t1 = time.monotonic()
            sent, elapsed, (attack_heights, attack_fast) = _lie(liar, follower, chain_id, honest_keys)
            t2 = time.monotonic()
        base_p99, attack_p99 = honest.p99(honest.started_at, t1), honest.p99(t1, t2)
        report = (f"follower before: {base_heights} heights in 3 s ({base_fast} from precommits), honest p99 "
                  f"{base_p99:.3f} s; during {sent} rounds of lies over {elapsed:.1f} s: {attack_heights} heights "
                  f"({attack_fast} from precommits), honest p99 {attack_p99:.3f} s; honest failed {honest.failed}")
        print(report)
        wait_until(lambda: converged([*validators, follower]), 20, interval=0.2, message="one state everywhere")
        assert attack_heights / elapsed >= 0.5 * base_heights / 3.0, report
        assert attack_fast > 0, report
        assert attack_p99 <= max(2 * base_p99, 0.5) and honest.failed == 0, report
        status = follower.status()
        assert status["exchange"].get("halted") in (None, False, ""), status["exchange"]
        for node_id in honest_ids:
            assert penalties_logged(follower, node_id) == [], penalties_logged(follower, node_id)
        for node in (*validators, follower):
            assert "Traceback" not in node.log_path.read_text(errors="replace"), node.log_tail(60)
    finally:
        liar.close()
        cluster.close()
