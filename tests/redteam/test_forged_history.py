"""Promise 1 (final stays final), attacked on three real validators by a peer that first downloads the genuine
certified history (a `chain_sync_request`, as any follower may send) and then plays it back and bends it:

- genuine old blocks replayed as decisions and sync answers, genuine old precommits (rebuilt from the
  commits' signatures) replayed as votes: nothing moves, nobody is penalised for them;
- a block for the next height certified by signatures lifted from another block's commit (`bad_commit`);
- a genuine commit attached to a different block (`commit_not_for_block`);
- one genuine signature repeated to look like a quorum (`duplicate_commit_signer`);
- a sync answer claiming height 2^61 with no blocks (`claimed_height_not_backed`).

Each forgery is blamed on its sender, by name, and the honest validators keep one final history."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, Vote
from node.identity import NodeIdentity
from tests.harness import wait_until
from tests.redteam.attacker import envelope, honest_nodes_intact, linked, penalties_logged, read_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def genuine_history(target, identity: NodeIdentity, chain_id: str) -> list[tuple[Block, Commit]]:
    peer = await linked(target, identity, chain_id)
    try:
        peer.send(envelope("chain_sync_request", identity.node_id, target.node_id, [1, 100]))
        answer = await read_until(peer, "chain_sync_response")
    finally:
        peer.close()
    return [(Block.from_wire(b), Commit.from_wire(c)) for b, c in answer["body"][0]]


def forged_next(template: Block, height: int) -> Block:
    h = template.header
    header = Header(h.chain_id, height, h.time_ms + 1, template.id, h.proposer, h.app_hash, h.validators_hash,
                    Block.txs_hash([]), h.last_commit)
    return Block(header, [])


def test_replayed_and_forged_certified_history_is_refused_and_blamed_on_its_sender(chain3):
    nodes = chain3
    target = nodes[2]
    chain_id = target.status()["chain_id"]
    wait_until(lambda: target.status()["height"] >= 5, 15, message="a few certified blocks to steal")
    history = asyncio.run(genuine_history(target, NodeIdentity.generate(), chain_id))
    assert len(history) >= 5 and all(c.block_id == b.id for b, c in history)
    keys = sorted(bytes.fromhex(k) for k in target.status()["validator_keys"].values())
    replayer, lifter, mismatcher, duplicator, boaster = (NodeIdentity.generate() for _ in range(5))

    async def attack() -> None:
        # replays of genuine history: decisions, an unsolicited sync answer, and the old precommits as votes
        peer = await linked(target, replayer, chain_id)
        for block, commit in history:
            peer.send(envelope("chain_decision", replayer.node_id, target.node_id, [block.wire(), commit.wire()]))
            for index, sig in commit.sigs:
                vote = Vote(PRECOMMIT, commit.height, commit.round, commit.block_id, keys[index], sig)
                peer.send(envelope("chain_vote", replayer.node_id, target.node_id, vote.wire()))
        peer.send(envelope("chain_sync_response", replayer.node_id, target.node_id,
                           [[[b.wire(), c.wire()] for b, c in history], history[-1][0].height, 1]))
        await asyncio.sleep(0)

        async def until_blamed(identity: NodeIdentity, reason: str, items_at: Any) -> None:
            """Send `items_at(next height)` as a sync answer until the node names `reason` (the chain moves on
            about once a second, so a block for the next height may arrive one height late)."""
            peer = await linked(target, identity, chain_id)
            deadline = time.monotonic() + 15
            while reason not in penalties_logged(target, identity.node_id):
                assert time.monotonic() < deadline, f"{reason} never judged"
                height = (await asyncio.to_thread(target.status))["height"] + 1
                peer.send(envelope("chain_sync_response", identity.node_id, target.node_id,
                                   [items_at(height), height, 1]))
                await asyncio.sleep(0.2)
            peer.close()

        block, commit = history[-1]

        def lifted(height: int) -> list:      # a next block "certified" by another block's signatures
            forged = forged_next(block, height)
            return [[forged.wire(), Commit(height, 0, forged.id, commit.sigs).wire()]]

        def mismatched(height: int) -> list:  # a genuine commit attached to a block it does not certify
            return [[forged_next(block, height).wire(), commit.wire()]]

        await until_blamed(lifter, "bad_commit", lifted)
        await until_blamed(mismatcher, "commit_not_for_block", mismatched)

        # one genuine signature three times over, to look like a quorum of three
        peer = await linked(target, duplicator, chain_id)
        index, sig = commit.sigs[0]
        repeated = [commit.height, commit.round, commit.block_id, [[index, sig]] * len(keys)]
        peer.send(envelope("chain_sync_response", duplicator.node_id, target.node_id,
                           [[[block.wire(), repeated]], commit.height, 1]))

        # a claim of height 2^61 that hands over no block
        peer = await linked(target, boaster, chain_id)
        peer.send(envelope("chain_sync_response", boaster.node_id, target.node_id, [[], 1 << 61, 1]))
        await asyncio.sleep(0)

    asyncio.run(attack())
    expected = {lifter: "bad_commit", mismatcher: "commit_not_for_block",
                duplicator: "malformed_sync_response:duplicate_commit_signer", boaster: "claimed_height_not_backed"}
    for identity, reason in expected.items():
        wait_until(lambda: reason in penalties_logged(target, identity.node_id), 10,
                   message=f"{reason} blamed on its sender (logged: {penalties_logged(target, identity.node_id)})")
    assert penalties_logged(target, replayer.node_id) == [], penalties_logged(target, replayer.node_id)
    honest_nodes_intact(nodes)
    # every node still serves the genuine blocks it certified
    for node in nodes:
        served = asyncio.run(genuine_history(node, NodeIdentity.generate(), chain_id))
        assert [b.id for b, _ in served[:len(history)]] == [b.id for b, _ in history], node.name
