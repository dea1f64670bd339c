"""A neighbour at its transaction budget does not start a height with each transaction (ChainCore.tx_waiting,
`at_budget_wait`): its transactions wait a moment for a height someone else starts, so a flood is ordered in
fewer heights at the same rate, and anyone else's transaction still starts one at once."""
from __future__ import annotations

import itertools

from exchange.app.txs import CancelOp, SignedTx, sign_tx
from exchange.chain.core import ChainCore
from exchange.chain.config import CoreConfig
from exchange.chain.effects import Committed, SendValidators
from exchange.chain.types.genesis import Genesis
from exchange.chain.mempool.intake import paced_lane
from exchange.chain.mempool.tx_budget import AT_BUDGET_SECONDS
from exchange.chain.consensus.tendermint import WAITING
from exchange.crypto import SigningKey, node_id_for
from tests.sim.chain_sim import BASE_TIME, FakeKeys, MemoryStore, SimApp, fake_verify

WAIT = 0.1
BURST = 5
_serial = itertools.count(1)


def _validator(wait: float = WAIT) -> ChainCore:
    """A one-validator chain (it decides a height the moment it starts one) past its first, empty, block."""
    keys = FakeKeys("at-budget")
    genesis = Genesis("t", int(BASE_TIME * 1000), keys.public_key, (keys.public_key,),
                      exchange={"order_ttl_ms": 120_000})
    core = ChainCore(genesis, SimApp(), public_key=keys.public_key, sign=keys.sign, verify=fake_verify,
                     blocks=MemoryStore(), now=BASE_TIME,
                     config=CoreConfig(peer_tx_rate=100.0, peer_tx_burst=BURST, at_budget_wait=wait))
    core.start(BASE_TIME)
    core.tick(BASE_TIME + 1.0)
    assert core.state.height == 1
    core.take_effects()
    return core


def _tx(core: ChainCore) -> SignedTx:
    account = SigningKey(next(_serial).to_bytes(32, "big"))
    return sign_tx(account.sign, account.public_key, core.chain_id, "n", int((BASE_TIME + 60) * 1000),
                   [CancelOp.parse("BTC-USD", "o")])


def _send(core: ChainCore, sender: str | None, now: float) -> SignedTx:
    tx = _tx(core)
    core.on_message("chain_tx", tx.wire(), sender, now)
    core.take_holds()
    return tx


def _blocks(core: ChainCore) -> list[list[str]]:
    return [[t.id for t in core.check.decode(e.block)] for e in core.take_effects().effects if isinstance(e, Committed)]


def _at_budget(core: ChainCore, now: float) -> None:
    """A burst from "flooder" at `now`: each below its budget starts a height; the one that takes its last whole
    token holds it, and from then on it is at its budget: that one waits for a height, at most WAIT."""
    burst = [_send(core, "flooder", now) for _ in range(BURST)]
    assert core.intake.tx_budget.at_budget("flooder", now), "its last whole transaction held it"
    assert [len(b) for b in _blocks(core)] == [1] * (BURST - 1), "below its budget, each started a height at once"
    core.tick(now + WAIT)
    assert _blocks(core) == [[burst[-1].id]]


def test_a_neighbour_at_its_budget_waits_for_a_height_and_anyone_elses_transaction_starts_one_at_once() -> None:
    core = _validator()
    now = BASE_TIME + 1.5
    _at_budget(core, now)
    later = now + 0.2                               # the hold is over, a tenth of a second's worth refilled
    waiting = [_send(core, "flooder", later + i * 0.01) for i in range(3)]
    core.tick(later + 0.05)
    assert not _blocks(core), "at its budget: no height of its own yet"
    honest = _send(core, "honest", later + 0.06)
    assert [sorted(b) for b in _blocks(core)] == [sorted(t.id for t in [*waiting, honest])], \
        "another neighbour's transaction started a height at once, holding what waited"


def test_what_waits_starts_a_height_at_budget_wait_after_it_came_holding_what_came_meanwhile() -> None:
    core = _validator()
    now = BASE_TIME + 1.5
    _at_budget(core, now)
    later = now + 0.2
    first = _send(core, "flooder", later)
    second = _send(core, "flooder", later + 0.06)
    core.tick(later + WAIT - 0.001)
    assert not _blocks(core)
    core.tick(later + WAIT)
    assert [sorted(b) for b in _blocks(core)] == [sorted([first.id, second.id])], \
        "one height, at_budget_wait after the first came"
    assert core.status(later + WAIT)["heights_after_at_budget_wait"] == 2, "this one and the burst's last: /status counts them"


def _pair() -> tuple[ChainCore, str]:
    """Two validators, the other silent (so no height is decided here): our core and the other's node id."""
    me, other = FakeKeys("relay-me"), FakeKeys("relay-other")
    genesis = Genesis("t", int(BASE_TIME * 1000), me.public_key, (me.public_key, other.public_key),
                      exchange={"order_ttl_ms": 120_000})
    core = ChainCore(genesis, SimApp(), public_key=me.public_key, sign=me.sign, verify=fake_verify,
                     blocks=MemoryStore(), now=BASE_TIME,
                     config=CoreConfig(peer_tx_rate=100.0, peer_tx_burst=BURST, at_budget_wait=WAIT))
    core.start(BASE_TIME)
    return core, node_id_for(other.public_key)


def _hold(core: ChainCore, sender: str, now: float) -> None:
    for _ in range(BURST):
        core.intake.tx_budget.take(sender, now)
    core.intake.tx_budget.hold_for(sender, now)


def test_a_validators_relay_never_waits() -> None:
    """A relay from the other validator starts round 0 at once even while a neighbour at its budget waits
    (validators are never metered, so never at a budget)."""
    core, other = _pair()
    now = BASE_TIME + 0.5
    _hold(core, "flooder", now)
    _send(core, "flooder", now + 0.2)
    assert core.consensus.step == WAITING, "the flooder at its budget did not start round 0"
    _send(core, other, now + 0.21)
    assert core.consensus.step != WAITING, "the validator's relay started it at once"


def test_a_followers_transaction_at_its_budget_is_relayed_paced_and_waits_at_the_other_validator_too() -> None:
    """A follower's `chain.submit` reaches one validator, which relays it to the rest: the relay says the follower
    was at its budget, so the other validators' proposers wait for a height too, as the first did."""
    core, other = _pair()
    now = BASE_TIME + 0.5
    core.take_effects()
    assert core.submit(_tx(core), now, own=False, lane="follower") is None
    relays = [e.message for e in core.take_effects().effects
              if isinstance(e, SendValidators) and e.message["type"] == "chain_tx"]
    assert [r.get("paced") for r in relays] == [None], "below its budget: a plain relay"
    _hold(core, "follower", now + 0.1)
    assert core.submit(_tx(core), now + 0.2, own=False, lane="follower") is None
    relays = [e.message for e in core.take_effects().effects
              if isinstance(e, SendValidators) and e.message["type"] == "chain_tx"]
    assert [r.get("paced") for r in relays] == [True], "at its budget: the relay says so"

    there, _ = _pair()                  # the other validator, which the relay reaches (its first height is due)
    relayed = _tx(there)
    there.on_message("chain_tx", relayed.wire(), other, now + 0.3, paced=True)
    assert relayed.id in there.mempool and paced_lane(other) in there.mempool.lanes()
    assert there.consensus.step == WAITING, "a paced relay does not start a height at once, as its sender did not"
    assert not there._urgent_waiting(now + 0.3), "nor does it make the next height start at once"
    _send(there, other, now + 0.31)
    assert there._urgent_waiting(now + 0.31) and there.consensus.step != WAITING, "a plain relay does both"


def test_a_paced_flag_from_anyone_but_a_validator_is_not_believed() -> None:
    """The flag is a validator's word about its neighbour; a neighbour's own word about itself is its budget."""
    core, _ = _pair()
    tx = _tx(core)
    core.on_message("chain_tx", tx.wire(), "stranger", BASE_TIME + 0.5, paced=True)
    assert "stranger" in core.mempool.lanes() and core.consensus.step != WAITING, \
        "below its budget, its transaction starts a height at once whatever it claims"


def test_our_own_transactions_never_wait() -> None:
    core = _validator()
    now = BASE_TIME + 1.5
    _at_budget(core, now)
    _send(core, "flooder", now + 0.2)
    own = _tx(core)
    assert core.submit(own, now + 0.21) is None
    assert [own.id in b for b in _blocks(core)] == [True], "our API's transaction started the height at once"


def test_a_neighbour_stops_waiting_once_it_has_not_been_held_for_a_while_and_zero_turns_the_wait_off() -> None:
    core = _validator()
    now = BASE_TIME + 1.5
    _at_budget(core, now)
    quiet = now + 0.1 + AT_BUDGET_SECONDS + 0.01     # its last hold ended longer ago than that
    assert not core.intake.tx_budget.at_budget("flooder", quiet)
    _send(core, "flooder", quiet)
    assert [len(b) for b in _blocks(core)] == [1], "no longer at its budget: its transaction starts a height"

    off = _validator(wait=0.0)
    for _ in range(BURST):
        _send(off, "flooder", now)
    _send(off, "flooder", now + 0.2)
    assert off.intake.tx_budget.at_budget("flooder", now + 0.2)
    assert [len(b) for b in _blocks(off)] == [1] * (BURST + 1), \
        "AT_BUDGET_WAIT 0: every transaction starts a height at once, held or not"
