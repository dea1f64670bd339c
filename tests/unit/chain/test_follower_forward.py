"""A follower hands its orders to the authors of the next blocks, not to whichever validator the router
picks: across sites that saves the hop from the receiving validator to the proposer (one link's delay of
finality). Its view of the height may lag the validators' by a height or two, so it names the proposers
of the next three heights; it links to every validator of a default-sized set so it can reach them."""
from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Callable

from exchange.crypto import SigningKey
from exchange.chain.core import FORWARD_FANOUT
from exchange.chain.effects import Forward
from exchange.chain.types.genesis import Genesis
from exchange.app import ExchangeParams
from exchange.chain.mempool.forwarding import FOLLOWER_VALIDATOR_LINKS, MAX_ERROR_CHARS, SUBMIT_SERVICE, ForwardRefusals
from exchange.chain.service import ChainService
from exchange.chain.store.block_store import ChainStore
from exchange.app.txs import CancelOp, NewOrderOp, SignedTx, sign_tx
from exchange.chain.types.validators import ValidatorSet
from node.identity import NodeIdentity
from tests.sim.chain_sim import BASE_TIME, FakeKeys, pinned_core

ACCOUNT = SigningKey(hashlib.sha256(b"follower-forward").digest())


def _order(chain_id: str, n: int, now: float) -> SignedTx:
    return sign_tx(ACCOUNT.sign, ACCOUNT.public_key, chain_id, f"n{n}", int((now + 60) * 1000),
                   [CancelOp.parse("BTC-USD", f"o{n}")])


def test_upcoming_proposers_are_the_next_heights_round_zero_authors_without_repeats():
    keys = [FakeKeys(f"up-{i}").public_key for i in range(4)]
    validators = ValidatorSet(0, keys)
    assert validators.upcoming_proposers(5, 3) == tuple(
        validators.node_ids[validators.index[validators.proposer(h, 0)]] for h in (6, 7, 8))
    assert len(validators.upcoming_proposers(5, 9)) == 4, "never more than the set, never twice"
    lone = ValidatorSet(0, keys[:1])
    assert lone.upcoming_proposers(5, 3) == (lone.node_ids[0],)


def test_a_follower_core_names_the_next_proposers_when_it_forwards():
    core, _, genesis = pinned_core("fwd", 4, FakeKeys("fwd-follower"))
    assert core.submit(_order(genesis.chain_id, 1, BASE_TIME), BASE_TIME) is None
    forwards = [e for e in core.take_effects() if isinstance(e, Forward)]
    assert len(forwards) == 1
    expected = core.state.validators.upcoming_proposers(core.state.height, FORWARD_FANOUT)
    assert forwards[0].proposers == expected and len(expected) == FORWARD_FANOUT


class RecordingNet:
    """The follower's side of the network: which validators it is linked with, and where its submits go."""

    def __init__(self) -> None:
        self.linked: list[str] = []
        self.kept: set[str] = set()
        self.calls: list[str | None] = []

    def send(self, node_id: str, message: dict) -> None: pass
    def broadcast(self, message: dict) -> None: pass
    def penalize(self, node_id: str, points: float, reason: str) -> None: pass
    def network_of(self, node_id: str) -> str | None:
        return None
    def hold_reading(self, node_id: str, seconds: float) -> None: pass
    def offer(self, service: str, handler: object) -> None: pass
    def withdraw(self, service: str) -> None: pass

    def keep_linked(self, node_ids: set[str]) -> None:
        self.kept = set(node_ids)

    def linked_providers(self, service: str) -> list[str]:
        assert service == SUBMIT_SERVICE
        return list(self.linked)

    async def call(self, service: str, payload: object, timeout: float, peer: str | None = None) -> object:
        self.calls.append(peer)
        return {"ok": True, "error": None}


def test_a_follower_submits_to_each_linked_upcoming_proposer_else_to_the_routers_pick(tmp_path):
    async def scenario() -> None:
        validators = [NodeIdentity.generate() for _ in range(4)]
        genesis = Genesis(network_id="t", created_ms=int(time.time() * 1000),
                          founder=validators[0].public_key_bytes,
                          validators=tuple(v.public_key_bytes for v in validators), pinned=True,
                          exchange=ExchangeParams(markets="BTC-USD").to_wire())
        store = ChainStore(tmp_path / "follower")
        store.save_genesis(genesis)
        net = RecordingNet()
        service = ChainService(NodeIdentity.generate(), net, store, network_id="t", markets="BTC-USD")
        await service.start()
        try:
            assert net.kept == {v.node_id for v in validators}, "a follower links to every validator of a small set"
            core = service.core
            assert core is not None and core.role == "follower"
            upcoming = core.upcoming_proposers()
            others = [v.node_id for v in validators if v.node_id not in upcoming]
            net.linked = [upcoming[0], upcoming[2], *others]
            await service.forwarding.forward(_order(genesis.chain_id, 1, time.time()), upcoming)
            assert sorted(net.calls, key=str) == sorted([upcoming[0], upcoming[2]]), \
                "each linked upcoming proposer, and nobody else"
            net.calls.clear()
            net.linked = others
            await service.forwarding.forward(_order(genesis.chain_id, 2, time.time()), upcoming)
            assert net.calls == [None], "no upcoming proposer linked: the router picks one validator"
            assert service.counters["forward_failures"] == 0
        finally:
            await service.stop()
    asyncio.run(scenario())


def test_followers_of_a_large_set_spread_over_the_validators(tmp_path):
    """Each follower keeps FOLLOWER_VALIDATOR_LINKS of a larger set, chosen by hashing both ids: different
    followers choose differently, so no validator carries every follower."""
    validators = {NodeIdentity.generate().node_id for _ in range(20)}
    chosen = []
    for n in range(8):
        service = ChainService(NodeIdentity.generate(), RecordingNet(), ChainStore(tmp_path / f"f{n}"),
                               network_id="t", markets="BTC-USD")
        picked = service.forwarding.validators_to_follow(validators)
        assert len(picked) == FOLLOWER_VALIDATOR_LINKS and picked <= validators
        chosen.append(picked)
    assert len({frozenset(c) for c in chosen}) > 1
    assert set().union(*chosen) != chosen[0]


class RefusingNet(RecordingNet):
    """Validators that answer each submit as `answers` says: an error code, None (taken) or an exception."""

    def __init__(self, answers: dict[str, str | None | Exception]) -> None:
        super().__init__()
        self.answers = answers
        self.linked = list(answers)

    async def call(self, service: str, payload: object, timeout: float, peer: str | None = None) -> object:
        self.calls.append(peer)
        answer = self.answers[str(peer)]
        if isinstance(answer, Exception):
            raise answer
        return {"ok": answer is None, "error": answer}


def test_what_the_validators_said_when_none_took_a_pending_transaction_is_shown_until_one_takes_it(tmp_path):
    """Issue 25, "the origin told why": a follower's forward refused by every validator it reached was only
    logged, and its client saw 202 `not_final_yet`. The last refusal is kept per pending transaction and
    shown with the pending order; an unreachable validator says nothing, and a validator taking it clears it."""
    async def scenario() -> None:
        validators = [NodeIdentity.generate() for _ in range(2)]
        ids = [v.node_id for v in validators]
        genesis = Genesis(network_id="t", created_ms=int(time.time() * 1000), founder=validators[0].public_key_bytes,
                          validators=tuple(v.public_key_bytes for v in validators), pinned=True,
                          exchange=ExchangeParams(markets="BTC-USD").to_wire())
        store = ChainStore(tmp_path / "follower")
        store.save_genesis(genesis)
        net = RefusingNet({ids[0]: "sender_quota", ids[1]: "account_rate"})
        service = ChainService(NodeIdentity.generate(), net, store, network_id="t", markets="BTC-USD")
        await service.start()
        try:
            tx = sign_tx(ACCOUNT.sign, ACCOUNT.public_key, genesis.chain_id, "n1", int((time.time() + 60) * 1000),
                         [NewOrderOp.parse("BTC-USD", "buy", "limit", "1", "90", None)])
            why, _ = await service.submissions.submit(tx)
            assert why is None
            await _settle(lambda: len(net.calls) == 2)
            refusal = service.submissions.refusal(tx.id)
            assert refusal is not None and refusal["error"] in ("sender_quota", "account_rate"), refusal
            assert refusal["validator"] == ids[("sender_quota", "account_rate").index(refusal["error"])]
            (view,) = service.submissions.pending_orders()
            assert view["status"] == "pending" and view["reason"] == "not_final_yet"
            assert view["validator_refusal"] == {**refusal, "age_s": view["validator_refusal"]["age_s"]}

            net.answers = {ids[0]: ConnectionError("gone"), ids[1]: ConnectionError("gone")}
            await service.forwarding.forward(tx, tuple(ids))
            assert service.submissions.refusal(tx.id) is not None, "an unreachable validator said nothing new"
            net.answers = {ids[0]: "mempool_full", ids[1]: None}
            await service.forwarding.forward(tx, tuple(ids))
            assert service.submissions.refusal(tx.id) is None, "a validator holds it now"
            assert service.submissions.pending_orders()[0]["validator_refusal"] is None
            net.answers = {ids[0]: "mempool_full", ids[1]: ConnectionError("gone")}
            await service.forwarding.forward(tx, tuple(ids))
            again = service.submissions.refusal(tx.id)
            assert again is not None and again["error"] == "mempool_full"
        finally:
            await service.stop()
    asyncio.run(scenario())


def test_the_refusals_kept_are_bounded_and_forgotten_with_their_transaction():
    now = [0.0]
    refusals = ForwardRefusals(lambda: now[0], limit=3)
    for n in range(5):
        refusals.record(f"tx{n}", "sender_quota" * 20, "v")
    assert len(refusals) == 3 and refusals.latest("tx0") is None
    latest = refusals.latest("tx4")
    assert latest is not None and len(latest["error"]) <= MAX_ERROR_CHARS     # a peer's word, cut short
    now[0] = 2.5
    assert refusals.latest("tx4") == {"error": latest["error"], "validator": "v", "age_s": 2.5}
    refusals.forget("tx4")
    assert refusals.latest("tx4") is None and len(refusals) == 2


async def _settle(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
