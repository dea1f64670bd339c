"""Real processes (issue 25): one peer floods every validator with valid signed orders from fresh accounts,
as fast as its links take them, while an honest client places one order every 200 ms at a follower.

Each validator looks at no more of the flooder's transactions than its per-peer budget allows (past it,
the flooder's link is not read for a while: its excess waits in TCP), and what it admits waits in the flooder's own lane
of the mempool; blocks take from every lane in turn, so the honest orders stay final in about their
usual time while the flood is still queued. With a first-in-first-out pool and no budget they waited
behind the whole backlog (the attack measured honest p50 80 s).
"""
from __future__ import annotations

import asyncio
import threading
import time

from config import Settings
from exchange.app.txs import SignedTx
from node.identity import NodeIdentity
from tests.flood import HonestClient, p99, rss_mb, settled, spam_orders, stay_linked
from tests.harness import NodeProcess, converged, wait_until
from tests.redteam.attacker import envelope, linked
from tests.wire import RawPeer

FAST = {"heartbeat_interval": 0.2}
SPAM = 3_000                # signed one-order transactions, each sent to every validator (about 30 s at the budget)
INTERVAL = 0.2
RSS_GROWTH_MB = 64 + SPAM * 2 / 1024      # the mempool's byte cap, and twice a kilobyte per resting spam order


def _cut_off(node: NodeProcess, peer_id: str) -> bool:
    """Whether `node` closed its link to `peer_id` for what it sent (a ban or a flood limit)."""
    record = next((p for p in node.peers() if p["node_id"] == peer_id), None)
    return record is not None and (record["status"] == "banned" or record.get("penalty", 0) > 0)


def test_a_flood_of_valid_orders_waits_in_its_own_lane_and_honest_orders_stay_fast(cluster):
    # a budget the flood exceeds however slowly this machine lets the test send it
    validators = cluster.chain(4, seat_rule="any", peer_tx_rate=100, peer_tx_burst=200, **FAST)
    follower = cluster.node("honest", bootstrap_peers=validators[0].p2p_address, **FAST)
    wait_until(lambda: converged([*validators, follower]), 20)
    chain_id = validators[0].status()["chain_id"]
    spam = spam_orders(chain_id, SPAM)
    client = HonestClient(follower)
    client.start()
    rss_before = [rss_mb(node) for node in (*validators, follower)]
    try:
        time.sleep(4.0)                                     # the honest baseline, before any flood
        flood_start = time.monotonic()
        height_start = validators[0].status()["height"]
        flooder = NodeIdentity.generate()
        backlog, heaviest, closed, flood_end = asyncio.run(_flood(validators, flooder, chain_id, spam))
        heights_per_second = (validators[0].status()["height"] - height_start) / (time.monotonic() - flood_start)
        flooder_id = flooder.node_id
        time.sleep(6.0)                                     # and after it
    finally:
        client.stop.set()
        client.join(40)
    base = client.window(0, flood_start)
    during = client.window(flood_start, flood_end + 6.0)     # sending, the validators reading it, and after
    after = client.window(flood_end + 1.0, flood_end + 6.0)     # from 1 s after they have read the last of it
    assert base and during and after, (len(base), len(during), len(after))
    assert None not in base + during, f"honest orders not final: {client.samples}"
    throttled = [{t["peer"]: (t["held"], t["dropped"]) for t in node.status()["exchange"]["tx_budget"]["throttled"]}
                 for node in validators]
    cut_off = [i in closed or _cut_off(node, flooder_id) for i, node in enumerate(validators)]
    assert all(seen.get(flooder_id, (0, 0))[0] > 0 or cut for seen, cut in zip(throttled, cut_off)), \
        f"a validator let the flooder past its budget: (held, dropped) {throttled}, cut off {cut_off}"
    # held, never dropped: what a validator reads of the flood it admits, so all of them admit the same
    # transactions and the network orders one budget's worth, not the union of four different parts
    assert all(seen.get(flooder_id, (0, 0))[1] == 0 for seen in throttled), f"(held, dropped) {throttled}"
    # the flooder is at its budget all along: its transactions wait up to AT_BUDGET_WAIT for a height someone else
    # starts rather than each starting one, so the heights are the honest client's (5 a second), the empty
    # block's (1) and at most one per wait; starting at once, they ran back to back (docs/tradeoffs.md)
    most = 1 / Settings().at_budget_wait + 1 / INTERVAL + 1
    assert heights_per_second <= most, f"{heights_per_second:.1f} heights a second during the flood (bound {most:g})"
    queued = [i for i in range(len(validators)) if backlog[i] >= 50]
    assert all(heaviest[i] == flooder_id for i in queued), f"the backlog's lanes at its peak: {heaviest}"
    base_p99, during_p99, after_p99 = p99(base), p99(during), p99(after)       # type: ignore[arg-type]
    # The goal is 2x the baseline; here the flooder, its signing and its encryption share the same
    # two cores as the five nodes, and p99 over ~35 orders is their maximum, so the bound is 3x with a floor
    # of half a second (what this test measured with each design is in docs/tradeoffs.md).
    assert during_p99 <= max(3 * base_p99, 0.5), (f"honest p99 {during_p99 * 1000:.0f} ms during the flood vs "
                                                   f"{base_p99 * 1000:.0f} ms before; backlog {backlog}")
    assert after_p99 <= max(3 * base_p99, 0.25), (f"honest p99 {after_p99 * 1000:.0f} ms from 1 s after the flood was read vs "
                                                   f"{base_p99 * 1000:.0f} ms before")
    wait_until(lambda: converged([*validators, follower]), 60, message="the flood's orders were not all ordered")
    # memory: the mempool is bounded by bytes (64 MiB) and what the flood leaves is its orders resting on the
    # book (no collateral), about a kilobyte each at every node
    growth = [rss_mb(node) - before for node, before in zip((*validators, follower), rss_before)]
    assert max(growth) <= RSS_GROWTH_MB, f"RSS grew by {[round(g) for g in growth]} MB (bound {RSS_GROWTH_MB} MB)"


def _read_through(validators: list[NodeProcess]) -> float:
    """When the validators have read what the flooder sent: its last send only put bytes in the kernel's
    buffers (megabytes on loopback), which a validator reads at its budget's pace long after. That moment is
    when no validator has held or dropped anything of it for a second."""
    return settled(lambda: [(b["holds"], b["dropped_total"])
                            for b in (v.status()["exchange"]["tx_budget"] for v in validators)], limit=90.0)


async def _flood(validators: list[NodeProcess], flooder: NodeIdentity, chain_id: str,
                 spam: list[SignedTx]) -> tuple[list[int], list[str | None], set[int], float]:
    """Every spam transaction to every validator, as fast as the links take them, the links kept open until the
    validators have read all of it (closed with a backlog unread, a link is reset and the backlog lost); returns
    the largest mempool backlog each validator reported while it ran, its heaviest lane then (sampled by the API
    in a thread), which validators closed the flooder's link, and when they had read it all."""
    peers = [await linked(node, flooder, chain_id) for node in validators]
    alive = [asyncio.create_task(stay_linked(peer)) for peer in peers]
    backlog = [0] * len(validators)
    heaviest: list[str | None] = [None] * len(validators)
    sampling = True

    def sample() -> None:
        while sampling:
            for i, node in enumerate(validators):
                lanes = node.status()["exchange"]["mempool_lanes"]
                if lanes["transactions"] > backlog[i]:
                    backlog[i] = lanes["transactions"]
                    heaviest[i] = lanes["heaviest"][0]["lane"] if lanes["heaviest"] else None

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    open_links = dict(zip(peers, validators))

    async def drain(peer: RawPeer) -> None:
        try:
            await peer.writer.drain()
        except ConnectionError:
            open_links.pop(peer, None)      # cut off by the validator: counted as stopped by the caller

    try:
        for index, tx in enumerate(spam):
            for peer, node in list(open_links.items()):
                if peer.writer.is_closing():
                    open_links.pop(peer, None)
                    continue
                peer.send(envelope("chain_tx", flooder.node_id, node.node_id, tx.wire()))
            if index % 100 == 99:
                await asyncio.gather(*(drain(peer) for peer in list(open_links)))
        read_through = await asyncio.to_thread(_read_through, validators)
    finally:
        sampling = False
        await asyncio.to_thread(sampler.join, 30)
        for task in alive:
            task.cancel()
        for peer in peers:
            peer.close()
    closed = {validators.index(node) for peer, node in zip(peers, validators) if peer not in open_links}
    return backlog, heaviest, closed, read_through


SUBMITS = 1_600             # chain.submit requests from one neighbour of one validator, SUBMIT_RATE a second: twice
SUBMIT_RATE = 200.0         # its budget (PEER_TX_RATE 100 here) for 8 s, so it is at its budget all along


def test_a_neighbours_submits_at_its_budget_wait_for_a_height_at_every_validator_not_only_the_one_it_reached(cluster):
    """A follower hands transactions to one validator by RPC (`chain.submit`) past its budget; that validator
    relays each to the others. Its relays say the sender is at its budget (`paced`), so every validator's
    heights wait for work as the first one's do: the heights are one per AT_BUDGET_WAIT and the empty block's,
    and each validator counts heights that waited. Unpaced, a relay started a height at once wherever it
    arrived, and three proposers in four started one per transaction (docs/tradeoffs.md)."""
    validators = cluster.chain(4, seat_rule="any", peer_tx_rate=100, peer_tx_burst=200, **FAST)
    wait_until(lambda: converged(validators), 20)
    chain_id = validators[0].status()["chain_id"]
    spam = spam_orders(chain_id, SUBMITS)
    waited_before = [node.status()["exchange"]["heights_after_at_budget_wait"] for node in validators]
    started, height_start = time.monotonic(), validators[0].status()["height"]
    submitter = NodeIdentity.generate()
    answers = asyncio.run(_submit_flood(validators, submitter, chain_id, spam))
    heights_per_second = (validators[0].status()["height"] - height_start) / (time.monotonic() - started)
    waited = [node.status()["exchange"]["heights_after_at_budget_wait"] - before
              for node, before in zip(validators, waited_before)]
    print(f"\n{SUBMITS} submits at one validator: answers {answers}; {heights_per_second:.1f} heights a second; "
          f"heights after an at-budget wait at each validator {waited}")
    assert answers.get("sender_quota", 0) + answers.get("ok", 0) == SUBMITS, answers
    held = {t["peer"]: t["held"] for t in validators[0].status()["exchange"]["tx_budget"]["throttled"]}
    assert held.get(submitter.node_id, 0) > 0, f"the submitter was never held at its budget: {held}"
    most = 1 / Settings().at_budget_wait + 1
    assert heights_per_second <= most, f"{heights_per_second:.1f} heights a second during the submits (bound {most:g})"
    assert all(count > 0 for count in waited), f"a validator never waited for a height: {waited}"
    wait_until(lambda: converged(validators), 60, message="the submitted orders were not all ordered")


async def _submit_flood(validators: list[NodeProcess], submitter: NodeIdentity, chain_id: str,
                        spam: list[SignedTx]) -> dict[str, int]:
    """Every transaction of `spam` to the first validator by `chain.submit` over one link, SUBMIT_RATE a second,
    until every request is answered; how many got each answer ("ok", or the error)."""
    peer = await linked(validators[0], submitter, chain_id)
    answers: dict[str, int] = {}
    done = asyncio.Event()

    async def read() -> None:
        while (message := await peer.next_message(30.0)) is not None:
            if message.get("type") == "rpc_response":
                result = message.get("r")
                if not isinstance(result, dict):
                    result = {}
                key = "ok" if result.get("ok") else str(result.get("error") or message.get("err"))
                answers[key] = answers.get(key, 0) + 1
                if sum(answers.values()) == len(spam):
                    done.set()
                    return

    async def beat() -> None:
        while True:
            peer.send({"type": "heartbeat", "ts": time.time()})
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(read()), asyncio.create_task(beat())]
    try:
        start = time.monotonic()
        for rid, tx in enumerate(spam, 1):
            peer.send({"type": "rpc_request", "rid": rid, "svc": "chain.submit", "p": tx.wire(), "ttl": 30.0})
            if rid % 20 == 0:
                await peer.writer.drain()
                await asyncio.sleep(max(0.0, start + rid / SUBMIT_RATE - time.monotonic()))
        await asyncio.wait_for(done.wait(), 60.0)
    finally:
        for task in tasks:
            task.cancel()
        peer.close()
    return answers
