"""Where this node's transactions go, and which validators it stays linked to, by its role.

A validator links to every other validator and serves `chain.submit`. A follower links to the validators
it follows (every one, up to FOLLOWER_VALIDATOR_LINKS; in a larger set its own choice by rendezvous
hashing, so followers spread out) and hands each of its transactions to the upcoming proposers it is
linked to, so the block's author has it one hop after it was placed, else to the validator the router
picks. Nothing here retries: the outbox hands a transaction on again if nobody took it. What the validators
said when none took it (`sender_quota`, `account_rate`, `mempool_full`, ...) is kept per transaction until one
takes it or it leaves the outbox (`ForwardRefusals`), so the client that placed it is told why it waits.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from typing import Callable, NamedTuple

from exchange.app.txs import SignedTx
from exchange.chain.core import ChainCore
from exchange.chain.ports import ChainNetwork, Refusal, RpcHandler

log = logging.getLogger("exchange.chain")

SUBMIT_SERVICE = "chain.submit"
FOLLOWER_VALIDATOR_LINKS = 7    # validators a follower keeps linked (all of a default-sized set)
MAX_REFUSALS = 10_000           # pending transactions whose last refusal is remembered (the oldest forgotten)
MAX_ERROR_CHARS = 64            # of a validator's refusal code kept (it is a peer's word)


class _Refused(NamedTuple):
    error: str
    validator: str | None
    at: float


class ForwardRefusals:
    """The latest refusal of each of our pending transactions, bounded: recorded when no validator took a
    hand-off and one said why, forgotten when one takes it or it leaves the outbox."""

    def __init__(self, clock: Callable[[], float], limit: int = MAX_REFUSALS) -> None:
        self.clock = clock
        self.limit = limit
        self._latest: OrderedDict[str, _Refused] = OrderedDict()

    def record(self, tx_id: str, error: str, validator: str | None) -> None:
        self._latest.pop(tx_id, None)
        self._latest[tx_id] = _Refused(error[:MAX_ERROR_CHARS], validator, self.clock())
        if len(self._latest) > self.limit:
            self._latest.popitem(last=False)

    def forget(self, tx_id: str) -> None:
        self._latest.pop(tx_id, None)

    def latest(self, tx_id: str) -> Refusal | None:
        refused = self._latest.get(tx_id)
        if refused is None:
            return None
        return {"error": refused.error, "validator": refused.validator,
                "age_s": round(max(0.0, self.clock() - refused.at), 3)}

    def __len__(self) -> int:
        return len(self._latest)


class TxForwarding:
    def __init__(self, network: ChainNetwork, node_id: str, serve_submit: RpcHandler,
                 counters: dict[str, int], clock: Callable[[], float]) -> None:
        self.network = network
        self.node_id = node_id
        self._serve_submit = serve_submit
        self.counters = counters            # the service's: forward_failures counts hand-offs nobody took
        self.refusals = ForwardRefusals(clock)
        self._offered_submit = False

    async def forward(self, tx: SignedTx, proposers: tuple[str, ...]) -> None:
        """Hand `tx` to each upcoming proposer we hold a link to, else to the validator the router picks;
        when none takes it, remember what the last to refuse it said."""
        offering = set(self.network.linked_providers(SUBMIT_SERVICE))
        targets: list[str | None] = [p for p in proposers if p in offering] or [None]
        answers = await asyncio.gather(*(self._submit_to(target, tx) for target in targets))
        if any(taken for taken, _ in answers):
            self.refusals.forget(tx.id)
            return
        self.counters["forward_failures"] += 1
        refused = [(target, error) for target, (_, error) in zip(targets, answers) if error is not None]
        if refused:
            validator, error = refused[-1]
            self.refusals.record(tx.id, error, validator)

    async def _submit_to(self, peer: str | None, tx: SignedTx) -> tuple[bool, str | None]:
        """(whether the validator holds `tx` now, what it said if it refused it)."""
        try:
            answer = await self.network.call(SUBMIT_SERVICE, tx.wire(), timeout=2.0, peer=peer)
        except Exception as exc:  # noqa: BLE001 - a peer's failure is only a failed hand-off
            log.debug("forwarding %s to %s failed: %s", tx.id, peer or "a validator", exc)
            return False, None
        error = answer.get("error") if isinstance(answer, dict) else None
        if error not in (None, "duplicate"):
            log.info("validator refused forwarded tx %s: %s", tx.id, error)
            return False, str(error)
        return True, None

    def roles_changed(self, core: ChainCore) -> None:
        """The validator set or our place in it changed: keep the right links and serve submits or not."""
        validators = set(core.state.validators.node_ids)
        if core.is_validator:
            self.network.keep_linked(validators - {self.node_id})
            if not self._offered_submit:
                self.network.offer(SUBMIT_SERVICE, self._serve_submit)
                self._offered_submit = True
        else:
            self.network.keep_linked(self.validators_to_follow(validators))
            if self._offered_submit:
                self.network.withdraw(SUBMIT_SERVICE)
                self._offered_submit = False
        log.info("role %s at height %d: %d validators (epoch %d, quorum %d)", core.role, core.height,
                 len(validators), core.state.validators.epoch, core.state.validators.quorum)

    def validators_to_follow(self, validators: set[str]) -> set[str]:
        """Every validator up to FOLLOWER_VALIDATOR_LINKS; in a larger set, the first by a hash of both ids."""
        me = self.node_id

        def rank(node_id: str) -> bytes:
            return hashlib.sha256(f"{me}/{node_id}".encode()).digest()
        return set(sorted(validators, key=rank)[:FOLLOWER_VALIDATOR_LINKS])
