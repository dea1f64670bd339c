"""Where this node's transactions go, and which validators it stays linked to, by its role.

A validator links to every other validator and serves `chain.submit`. A follower links to the validators
it follows (every one, up to FOLLOWER_VALIDATOR_LINKS; in a larger set its own choice by rendezvous
hashing, so followers spread out) and hands each of its transactions to the upcoming proposers it is
linked to, so the block's author has it one hop after it was placed, else to the validator the router
picks. Nothing here retries: the outbox hands a transaction on again if nobody took it.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging

from exchange.app.txs import SignedTx
from exchange.chain.core import ChainCore
from exchange.chain.ports import ChainNetwork, RpcHandler

log = logging.getLogger("exchange.chain")

SUBMIT_SERVICE = "chain.submit"
FOLLOWER_VALIDATOR_LINKS = 7    # validators a follower keeps linked (all of a default-sized set)


class TxForwarding:
    def __init__(self, network: ChainNetwork, node_id: str, serve_submit: RpcHandler,
                 counters: dict[str, int]) -> None:
        self.network = network
        self.node_id = node_id
        self._serve_submit = serve_submit
        self.counters = counters            # the service's: forward_failures counts hand-offs nobody took
        self._offered_submit = False

    async def forward(self, tx: SignedTx, proposers: tuple[str, ...]) -> None:
        """Hand `tx` to each upcoming proposer we hold a link to, else to the validator the router picks."""
        offering = set(self.network.linked_providers(SUBMIT_SERVICE))
        targets: list[str | None] = [p for p in proposers if p in offering] or [None]
        answers = await asyncio.gather(*(self._submit_to(target, tx) for target in targets))
        if not any(answers):
            self.counters["forward_failures"] += 1

    async def _submit_to(self, peer: str | None, tx: SignedTx) -> bool:
        try:
            answer = await self.network.call(SUBMIT_SERVICE, tx.wire(), timeout=2.0, peer=peer)
        except Exception as exc:  # noqa: BLE001 - a peer's failure is only a failed hand-off
            log.debug("forwarding %s to %s failed: %s", tx.id, peer or "a validator", exc)
            return False
        if isinstance(answer, dict) and answer.get("error") not in (None, "duplicate"):
            log.info("validator refused forwarded tx %s: %s", tx.id, answer.get("error"))
            return False
        return True

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
