"""What a node serves peers that catch up is budgeted (a sync request of a few bytes asks for a block's
worth): per peer, requests a second and bytes a second, with a global cap behind for all but the validators;
over budget a request is ignored and counted, never penalised, and an honest follower far behind still catches
up as fast as with no budget at all."""
from __future__ import annotations

import dataclasses

from exchange.chain.core import ChainCore
from exchange.chain.config import CoreConfig
from exchange.chain.effects import Committed, Penalize, SendTo
from exchange.chain.types.genesis import Genesis
from exchange.chain.sync.sync_budget import SyncBudget
from tests.sim.chain_sim import BASE_TIME, SIM_CORE, FakeKeys, MemoryStore, SimApp, fake_verify

UNLIMITED = dataclasses.replace(SIM_CORE, sync_peer_rate=1e12, sync_peer_bytes=10**15, sync_total_bytes=10**15)
DEFAULTS = dataclasses.replace(SIM_CORE, sync_peer_rate=CoreConfig.sync_peer_rate,
                               sync_peer_bytes=CoreConfig.sync_peer_bytes, sync_total_bytes=CoreConfig.sync_total_bytes)
APPLY_SECONDS = 0.0003      # what a follower takes to apply an empty block (an assumption of the pace test)
HOP_SECONDS = 0.002         # one way between two nodes


def test_a_budget_allows_a_burst_of_requests_then_its_rate_and_bytes_then_a_debt_of_one_answer():
    budget = SyncBudget(requests_per_s=10, bytes_per_s=1000, total_bytes_per_s=10**9)
    allowed = [budget.allowance("p", 0.0) for _ in range(25)]
    assert sum(1 for a in allowed if a > 0) <= 20 and budget.refused_total >= 5
    later = 100.0
    assert budget.allowance("q", later) == 1000
    budget.spend("q", 1500, later)                       # an answer may overshoot by its last block
    assert budget.allowance("q", later) == 0 and budget.refused["q"] == 1
    assert budget.allowance("q", later + 1.0) == 500     # a second's refill pays the debt first


def test_the_global_cap_holds_for_fresh_keys_but_not_for_the_validators():
    budget = SyncBudget(requests_per_s=10, bytes_per_s=1000, total_bytes_per_s=5000)
    served = 0
    for n in range(100):
        allowed = budget.allowance(f"fresh-{n}", 0.0)
        if allowed > 0:
            budget.spend(f"fresh-{n}", 1000, 0.0)
            served += 1000
    assert served <= 5000 + 1000 and budget.refused_global >= 90
    assert budget.allowance("validator", 0.0, capped=False) == 1000


def _chain(blocks: int, config: CoreConfig = SIM_CORE) -> tuple[ChainCore, Genesis, float]:
    """A chain of `blocks` empty blocks decided by one validator (its core serves them)."""
    validator = FakeKeys("sync-validator")
    genesis = Genesis("t", int(BASE_TIME * 1000), validator.public_key, (validator.public_key,), pinned=True)
    store = MemoryStore()
    core = ChainCore(genesis, SimApp(), public_key=validator.public_key, sign=validator.sign, verify=fake_verify,
                     blocks=store, config=config, now=BASE_TIME)
    now = BASE_TIME
    core.start(now)
    while core.height < blocks:
        now += 0.5
        core.tick(now)
        for effect in core.take_effects():
            if isinstance(effect, Committed):
                store.blocks[effect.block.height] = (effect.block, effect.commit)
    return core, genesis, now


def _answers(core: ChainCore, peer: str) -> list[SendTo]:
    return [e for e in core.take_effects() if isinstance(e, SendTo) and e.node_id == peer
            and e.message["type"] == "chain_sync_response"]


def test_a_peer_past_its_budget_is_ignored_and_counted_never_penalised():
    config = dataclasses.replace(SIM_CORE, sync_peer_rate=10, sync_peer_bytes=20_000, sync_total_bytes=10**9)
    validator, _, now = _chain(300, config)
    asker = FakeKeys("greedy").node_id
    answered = sent = 0
    for n in range(200):                                 # 200 requests for 100 blocks each within one second
        validator.on_message("chain_sync_request", [1 + n, 300], asker, now + n * 0.005)
        for answer in _answers(validator, asker):
            answered += 1
            for item in answer.message["body"][0]:
                stored = validator.blocks.get(item[0][0][1])
                assert stored is not None
                sent += stored[0].size
    assert answered <= 2 * 10 + 10, answered            # a burst of twice the rate, and a second's rate
    assert sent <= 2 * 20_000 + config.max_block_bytes, sent   # a second's bytes, a second's refill, one answer
    assert validator.counters["sync_requests_refused"] >= 170
    assert not [e for e in validator.take_effects() if isinstance(e, Penalize)]
    assert validator.status(now)["sync_budget"]["throttled"][0]["peer"] == asker  # type: ignore[index]


def _catch_up(config: CoreConfig, blocks: int) -> tuple[float, ChainCore, ChainCore]:
    """A follower `blocks` behind asks the validator for them over a 2 ms link, applying each in
    APPLY_SECONDS: returns the simulated seconds it took."""
    validator, genesis, now = _chain(blocks, config)
    me = FakeKeys("sync-follower")
    follower = ChainCore(genesis, SimApp(), public_key=me.public_key, sign=me.sign, verify=fake_verify,
                         blocks=MemoryStore(), config=config, now=now)
    follower.start(now)
    follower.take_effects()
    start = now
    follower.peer_height(validator.node_id, validator.height, now)
    while follower.height < validator.height and now - start < 120:
        requests = [e for e in follower.take_effects() if isinstance(e, SendTo)]
        for request in requests:
            now += HOP_SECONDS
            validator.on_message(request.message["type"], request.message["body"], follower.node_id, now)
            for answer in _answers(validator, follower.node_id):
                now += HOP_SECONDS
                before = follower.height
                follower.on_message(answer.message["type"], answer.message["body"], validator.node_id, now)
                now += (follower.height - before) * APPLY_SECONDS
        if not requests:
            now += 0.05
            follower.tick(now)
    return now - start, validator, follower


def test_a_follower_far_behind_catches_up_as_fast_with_the_default_budget_as_with_none():
    seconds, validator, follower = _catch_up(DEFAULTS, 10_000)
    free_seconds, _, _ = _catch_up(UNLIMITED, 10_000)
    assert follower.height == validator.height
    assert validator.counters.get("sync_requests_refused", 0) == 0
    assert seconds <= free_seconds * 1.05, (seconds, free_seconds)
    assert seconds < 5, f"10,000 blocks in {seconds:.1f} s"
