"""Real processes (issue 25, "one burst halts the chain"): 9,800 ordinary signed one-order transactions at once,
from sixteen peers (each a lane of every validator's mempool) and from the validators' own APIs, while an honest
client orders every 200 ms at a follower.

As filed, 3,400 such transactions sent to every validator made every proposal `block_too_large`: the proposer
filled a block to its byte limit counting each transaction's own encoding, validation counted the wrapping and
the header too, and no block was made for ~115 s per burst while `/ready` said 200. Now the proposer measures
its block with validation's function, so a backlog of the burst is ordered in full blocks, each decided, and the
common criteria hold (`tests/flood.py` `assert_fair`). Validators reading more of a burst than their CPU handles
keep deciding heights meanwhile (p2p/link_reading.py ReadTurns). With the production defaults a crowd's burst is
paced by the validators' total budget, and blocks by what the network decides within BLOCK_SECONDS_TARGET
(block_pace.py).
"""
from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, NamedTuple, Sequence

from config import Settings
from exchange.app.txs import SignedTx
from exchange.chain.state.chainstate import encode_item
from exchange.chain.types.codec import pack
from exchange.chain.consensus.block_check import BLOCK_OVERHEAD
from node.configs import core_config
from node.identity import NodeIdentity
from tests.flood import (ChainWatch, HonestClient, assert_fair, attacker_links, honest_after, honest_baseline,
                         send_paced, spam_orders)
from tests.harness import Cluster, NodeProcess, converged, wait_until
from tests.redteam.attacker import envelope

PEERS = 16                  # lanes at every validator: with its API's, more than a block's worth of lane shares
PER_PEER = 600              # each peer's burst, all of it sent at once
FRAME_BYTES = 600_000       # MAX_FRAME_BYTES where blocks must reach their byte limit: blocks of 360,000 bytes
PACED_PER_PEER = 120        # each peer's burst against production budgets: past its share of the total's first second
PER_API = 50                # signed orders posted to each validator's API
READ_STALL = 2.0            # s: the longest a validator's height may stand still while validators read a burst
READ_WAIT = 4.0             # s: the longest an honest order may wait meanwhile (p99), or the follower's height
STALL_BOUND = 8.0           # s: the longest a height may stand still in the backlog test, its pause included
PAUSE_SECONDS = 2.0         # at most, two validators stopped while a backlog builds (under CoreConfig.live_after)
PACED_WAIT = 0.1            # of the crowd's burst, what an honest order may wait at most (p99)
RSS_GROWTH_MB = 96          # the burst's 9,800 resting orders, about a kilobyte each, and the mempool's bytes


class Burst(NamedTuple):
    """What a burst left: the honest client, the watch, its span, the API's answers, the blocks' sizes."""
    client: HonestClient
    watch: ChainWatch
    span: tuple[float, float]
    posted: dict[int, int]
    blocks: list[int]
    finals: list[float]             # when each of those blocks became final at the follower (its clock)
    nodes: list[NodeProcess]
    validators: list[NodeProcess]
    attackers: list[str]
    pause: str                      # how long two validators were stopped, and what the others held meanwhile


def _capacity(chain_id: str) -> int:
    """The smallest orders a block holds at its byte limit (FRAME_BYTES frames)."""
    one_order = len(pack(encode_item(spam_orders(chain_id, 1)[0])))
    return (core_config(Settings(max_frame_bytes=FRAME_BYTES)).max_block_bytes + BLOCK_OVERHEAD) // one_order


def _burst(cluster: Cluster, per_peer: int = PER_PEER, backlog_blocks: int = 0, **budgets: Any) -> Burst:
    """Four validators (with `budgets`) and a follower, sixteen peers linked to every validator: the burst of
    `per_peer` transactions from each and PER_API at each validator's API, until every one is final; with
    `backlog_blocks`, met by a chain that cannot decide until that many full blocks wait (`_scenario`)."""
    # production heartbeats (HEARTBEAT_INTERVAL 1 s, a link silent for 3 s is dropped): checking and applying a
    # full block of ~2,900 orders keeps a validator's event loop busy for over a second on two shared cores
    validators = cluster.chain(4, seat_rule="any", debug_api="true", **budgets)
    follower = cluster.node("honest", bootstrap_peers=validators[0].p2p_address, debug_api="true")
    nodes = [*validators, follower]
    wait_until(lambda: converged(nodes), 20)
    chain_id = validators[0].status()["chain_id"]
    by_peers = [spam_orders(chain_id, per_peer) for _ in range(PEERS)]
    by_api = [spam_orders(chain_id, PER_API) for _ in validators]
    total = sum(map(len, by_peers)) + sum(map(len, by_api))
    attackers = [NodeIdentity.generate() for _ in range(PEERS)]
    client = HonestClient(follower, open_loop=True)
    try:
        with ChainWatch(nodes) as watch:
            flood_start, flood_end, posted, pause = asyncio.run(
                _scenario(client, attackers, validators, follower, chain_id, by_peers, by_api, total,
                          backlog_blocks * _capacity(chain_id)))
    finally:
        client.stop.set()
        client.join(40)
    commits = follower.get("/debug/chain/commits")["commits"]
    blocks, finals = [ops for _, _, ops in commits], [when for _, when, _ in commits]
    return Burst(client, watch, (flood_start, flood_end), posted, blocks, finals, nodes, validators,
                 [attacker.node_id for attacker in attackers], pause)


def test_a_burst_of_small_transactions_over_many_lanes_is_ordered_in_full_valid_blocks(cluster):
    # Blocks at their byte limit come from a backlog: transactions arriving faster than the network decides them.
    # Validators reading a burst still decide a height every few tenths of a second (the next test), each with
    # what was read meanwhile, so here the burst meets a chain that cannot decide: two of the four validators
    # stopped (SIGSTOP, PAUSE_SECONDS at most) while the other two read it, until each holds two full blocks'
    # worth, as the filed "honest backlog" would. Budgets cover the burst, and blocks are not paced
    # (BLOCK_SECONDS_TARGET 0), as a proposer whose recent heights were quick makes them. Blocks of 360,000 bytes
    # (~1,680 orders) still show the filed bug: their items' wrapping alone, 3 bytes each, is more than the
    # BLOCK_OVERHEAD validation allows beyond the limit.
    burst = _burst(cluster, backlog_blocks=2, peer_tx_burst=PER_PEER, peer_tx_total_rate=PEERS * PER_PEER,
                   block_seconds_target=0, max_frame_bytes=FRAME_BYTES)
    assert set(burst.posted) <= {201, 202}, burst.posted
    capacity = _capacity(burst.validators[0].status()["chain_id"])
    assert 3 * capacity > BLOCK_OVERHEAD, capacity
    blocks = burst.blocks
    assert max(blocks) >= 0.95 * capacity, f"no block reached its byte limit ({capacity} orders): {sorted(blocks)[-8:]}"
    # Every height is decided and no proposal refused. The honest order placed while the chain cannot decide waits
    # for the two validators' return and for full blocks (each checked and applied by all five nodes, on two
    # cores shared with the attacker), so this row cannot meet the 2x. Beside the rest of the real-process
    # tier the longest stall, the pause included, measured 2.0-3.5 s and the honest p99 2.4-4.7 s. The bounds are
    # against the halt (as filed: no block for ~115 s, until the burst expired), with room for a busier machine:
    # no height still for STALL_BOUND s, every honest order final within as long (p99), /ready 200 throughout
    # (the two stopped are back before the others stop counting them live), back to baseline 5 s after.
    report = assert_fair(burst.client, burst.watch, burst.span, honest=burst.nodes, attackers={},
                         p99_floor=STALL_BOUND, rss_growth_mb=RSS_GROWTH_MB, late_blocks=None, max_stall=STALL_BOUND)
    print(f"\n{sum(blocks)} orders in {burst.span[1] - burst.span[0]:.1f} s, largest blocks {sorted(blocks)[-5:]} ops "
          f"(byte limit {capacity}); {burst.pause}; {report.line()}")


def test_heights_keep_being_decided_while_validators_read_a_burst_beyond_their_cpu(cluster):
    # Budgets wide enough to admit all 9,800 at once (a node on a machine slower or busier than its budgets assume)
    # and blocks not paced (BLOCK_SECONDS_TARGET 0, as a proposer whose recent heights were quick makes them): what
    # paces the burst is each validator's CPU, reading sixteen networks' links in turns (p2p/link_reading.py
    # ReadTurns). Their turns together take at most SHARED_TURNS_SECONDS of each event-loop turn, so a validator's
    # votes and proposals wait for a short event-loop turn, not behind sixteen networks' turns: heights go on every
    # few tenths of a second, each with what was read meanwhile, and the honest order waits for one or two of them.
    # Beside the rest of the real-process tier: longest stall 0.6-0.8 s, honest p99 0.9-1.6 s, every height in
    # round 0. With every network's turn in every event-loop turn a height waited for the whole burst to be read:
    # stalls of 3.7-5.4 s beside a busy-looping process, 3-9 s beside the tier, 15.2 s once in a clean-clone run.
    burst = _burst(cluster, peer_tx_burst=PER_PEER, peer_tx_total_rate=PEERS * PER_PEER, block_seconds_target=0)
    assert set(burst.posted) <= {201, 202}, burst.posted
    # The follower checks every signature of each block (none of the burst reached its mempool) on the same two
    # cores, so it may apply them later than the validators decide them: its heights are bounded by READ_WAIT
    # (2.4 s once in a clean-clone run, the validators' 1.0-1.2 s), the validators' by READ_STALL.
    report = assert_fair(burst.client, burst.watch, burst.span, honest=burst.nodes, attackers={},
                         p99_floor=READ_WAIT, rss_growth_mb=RSS_GROWTH_MB, late_blocks=None, max_stall=READ_WAIT)
    deciding = {node.name: round(report.stalls[node.name], 2) for node in burst.validators}
    assert max(deciding.values()) <= READ_STALL, f"a validator's height stood still for {deciding} s"
    print(f"\n{sum(burst.blocks)} orders in {burst.span[1] - burst.span[0]:.1f} s, largest blocks "
          f"{sorted(burst.blocks)[-5:]} ops; {report.line()}")


def test_a_burst_from_a_crowd_of_peers_is_paced_by_the_validators_total_budget(cluster):
    # Production budgets: sixteen peers sending, each from a network of its own, are each an equal share of
    # PEER_TX_TOTAL_RATE, a burst of a second's share at most, so the crowd is admitted at the total's pace instead
    # of a full block at once. Each sent a transaction seconds before and has its whole (shared) burst: the worst
    # case for the total. The default total is what one neighbour alone may send (PEER_TX_RATE): sixteen networks
    # together take no more than one peer would
    burst = _burst(cluster, PACED_PER_PEER)
    assert set(burst.posted) <= {201, 202}, burst.posted
    settings = Settings()
    total_rate = settings.peer_tx_total_rate
    assert total_rate <= settings.peer_tx_rate, "the default total is more than one neighbour's rate"
    took = burst.span[1] - burst.span[0]
    crowd = PEERS * PACED_PER_PEER      # a second of the total at once (each one's burst), the rest at its pace
    assert took >= (crowd - total_rate) / total_rate * 0.8, f"{crowd} orders admitted in {took:.1f} s"
    # at most a second of the total at once (the crowd's bursts, each its share) and the APIs', beyond what the total
    # admits while a block is decided: with the total at 1,000, measured 1,083-1,196 orders in the largest block alone,
    # 1,596-1,929 beside another flood test (blocks decided slower, each holding more of the paced rest), against full
    # blocks of 2,929 in the test above; at 200, 128 (the block pace's first limit)
    excess = max(ops - total_rate * (when - before)
                 for ops, when, before in zip(burst.blocks[1:], burst.finals[1:], burst.finals))
    assert excess <= 1.2 * total_rate + len(burst.validators) * PER_API, \
        f"a block held {excess:.0f} orders past the total's pace: largest {sorted(burst.blocks)[-5:]}"
    # Blocks holding all that arrived while the last was decided made the honest orders that met them wait for
    # it. With the total at 1,000 a second, above what five nodes on two cores apply within 2x, the honest p99 was
    # 146-729 ms on a faster day, 3.5-3.7 s on a day when this machine ran Python at half the speed, and with
    # paced blocks (block_pace.py) 0.81-1.17 s alone and 1.75 s in the suite; at 1,000 this test with this crowd
    # measured 1,073 ms (p50 437 ms) against 47 ms before, the crowd admitted in under 3 s. At the default, 200, the
    # crowd takes 9-10 s and the honest p99 was 149 ms (p50 64 ms) against 47 ms before: the honest order waits a
    # short block or two, not for the crowd. The bound is a share of the crowd's own length in this run (on a
    # slower or busier machine both grow together), PACED_WAIT of it: under it at 200, over it at 1,000.
    # A validator that reads the crowd slower than its budgets (beside another flood test, on two cores: 61 and 64
    # of the 64 pairs unheld in two runs, none alone) needs no hold: its turns, one per network, pace them alike and
    # `excess` above bounds what they took together (crowd=True)
    report = assert_fair(burst.client, burst.watch, burst.span, honest=burst.nodes,
                         attackers={key: burst.validators for key in burst.attackers}, p99_floor=PACED_WAIT * took,
                         rss_growth_mb=RSS_GROWTH_MB, crowd=True)
    print(f"\n{sum(burst.blocks)} orders in {took:.1f} s, largest blocks {sorted(burst.blocks)[-5:]} ops, "
          f"{excess:.0f} past the total's pace; "
          f"{report.line()}")


async def _scenario(client: HonestClient, attackers: list[NodeIdentity], validators: list[NodeProcess],
                    follower: NodeProcess, chain_id: str, by_peers: list[list[SignedTx]], by_api: list[list[SignedTx]],
                    total: int, backlog: int = 0) -> tuple[float, float, dict[int, int], str]:
    """Link every attacker to every validator, send each one's first transaction, take the honest baseline, then
    the burst: the rest of every peer's transactions
    to every validator at once (each peer its own set, as the filed attack sent one set to all) while each
    validator's API takes its own set; then the burst ordered in full and the honest client's time after it.
    With a `backlog`, the burst meets a chain that cannot decide: two of the four validators are stopped (SIGSTOP)
    while it goes to the other two, until each holds `backlog` transactions or PAUSE_SECONDS have passed, and it
    goes to the stopped two once they are back.
    Returns (the burst's start, when its last order was final at the follower, API answers by status, the pause)."""
    # each peer from a /24 of its own (127.0.20.1, 127.0.21.1, ...): sixteen networks, the crowd that its keys alone
    # cannot make smaller. From the honest nodes' 127.0.0.1 they would be one network with them, sharing its part of
    # the total and one network's read turns (p2p/link_reading.py ReadTurns) with the validators' own links.
    sources = [f"127.0.{20 + index}.1" for index, _ in enumerate(attackers) for _ in validators]
    async with attacker_links([(attacker, node) for attacker in attackers for node in validators], chain_id,
                              sources) as peers:
        batches = [[envelope("chain_tx", attacker.node_id, node.node_id, tx.wire()) for tx in txs]
                   for attacker, txs in zip(attackers, by_peers) for node in validators]
        # each peer's first transaction before the baseline: each is then a neighbour that sends, and has earned its
        # whole burst (a neighbour not sending lately is admitted a tenth of a second's worth at first)
        await send_paced(peers, [batch[:1] for batch in batches], rate=1e9)
        flood_start = await honest_baseline(client)
        stopped = validators[2:] if backlog else []
        pause = "no validator stopped"
        running = [index for index, _ in enumerate(batches) if validators[index % len(validators)] not in stopped]
        _signal(stopped, signal.SIGSTOP)
        try:
            api = asyncio.create_task(asyncio.to_thread(
                _post_all, *zip(*[(node, txs) for node, txs in zip(validators, by_api) if node not in stopped])))
            sending = asyncio.create_task(send_paced([peers[i] for i in running], [batches[i][1:] for i in running],
                                                     rate=1e9))
            if stopped:
                pause = await asyncio.to_thread(_until_held, [node for node in validators if node not in stopped],
                                                backlog)
        finally:
            _signal(stopped, signal.SIGCONT)
        await sending
        posted = await api
        if stopped:
            later = [index for index, _ in enumerate(batches) if index not in running]
            api = asyncio.create_task(asyncio.to_thread(
                _post_all, *zip(*[(node, txs) for node, txs in zip(validators, by_api) if node in stopped])))
            await send_paced([peers[i] for i in later], [batches[i][1:] for i in later], rate=1e9)
            for code, count in (await api).items():
                posted[code] = posted.get(code, 0) + count
        try:
            await asyncio.to_thread(wait_until, lambda: _spam_final(follower) >= total, 60, 0.2)
        except AssertionError:
            refused = [node.status()["exchange"]["refused_proposals"] for node in validators]
            raise AssertionError(f"the burst's {total} orders not final at the follower within 60 s "
                                 f"({_spam_final(follower)} are); proposals refused by the validators: {refused}") from None
        flood_end = time.monotonic()
        await honest_after(client, flood_end)
        return flood_start, flood_end, posted, pause


def _signal(nodes: list[NodeProcess], signum: signal.Signals) -> None:
    for node in nodes:
        assert node.proc is not None
        node.proc.send_signal(signum)


def _until_held(nodes: list[NodeProcess], backlog: int) -> str:
    """Until every one of `nodes` holds `backlog` transactions in its mempool, or PAUSE_SECONDS have passed: a
    validator stopped for longer is not live to the others (CoreConfig.live_after, 3 s), and /ready would say the
    quorum is lost, as it is. Returns what they held when, for the report."""
    started = time.monotonic()
    while True:
        held = [node.status()["exchange"]["mempool"] for node in nodes]
        waited = time.monotonic() - started
        if min(held) >= backlog or waited >= PAUSE_SECONDS:
            return f"stopped two validators {waited:.1f} s, the others holding {held} of {backlog}"
        time.sleep(0.1)


def _post_all(validators: Sequence[NodeProcess], by_api: Sequence[list[SignedTx]]) -> dict[int, int]:
    """Each validator's set posted to its API as signed orders, eight at a time; how many got each status."""
    def post(node: NodeProcess, tx: SignedTx) -> int:
        request = urllib.request.Request(node.api_url + "/orders?wait=0", method="POST",
                                         data=json.dumps({"signed": tx.as_json()}).encode(),
                                         headers={"Content-Type": "application/json", **node.auth_headers()})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda item: post(*item), [(node, tx) for node, txs in zip(validators, by_api)
                                                          for tx in txs]))
    return {code: codes.count(code) for code in set(codes)}


def _spam_final(node: NodeProcess) -> int:
    """Spam orders resting on the final book: each buys 0.01 at 1, a price no honest order uses."""
    book = node.get("/book/BTC-USD?depth=1000")
    level = next((qty for price, qty in book["bids"] if Decimal(price) == 1), "0")
    return int(Decimal(level) / Decimal("0.01"))
