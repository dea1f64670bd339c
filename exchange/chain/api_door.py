"""`ChainApi`: the chain service's side of the control API's two ports (`api_ports.py`).

It answers each query from the state the service's core holds and carries each submission through the
service's `submissions` part, so the API needs neither the service nor its core: what the chain's parts keep
stays theirs.
"""
from __future__ import annotations

from exchange.app.results import TxResult
from exchange.app.txs import SignedTx
from exchange.app.views import View
from exchange.chain.api_ports import (Certified, Final, Finality, NotNeeded, Pending, PendingOrder, Refused, Submitted,
                                      TxAnswer)
from exchange.chain.types.blocks import Block, Commit
from exchange.chain.types.genesis import Genesis
from exchange.chain.mempool.own_orders import OrderView, Withdrawn
from exchange.chain.seats.seat_admin import Approval, RecoveryConsent, TokenIssued, TokenView
from exchange.chain.seats.seats_view import SeatsView
from exchange.chain.service import ChainService
from exchange.markets import MarketRegistry


class ChainApi:
    """Both ports over one chain service (it implements `ChainReads` and `ChainSubmits`)."""

    def __init__(self, service: ChainService) -> None:
        self._service = service

    # ------------------------------------------------------------------ reads

    def finality(self) -> Finality:
        core = self._service.core
        if core is None:
            return Finality(0)
        return Finality(core.height, core.state.validators.epoch, core.role)

    def markets(self) -> MarketRegistry:
        return self._service.state.params.registry

    def state_hash(self) -> str:
        return self._service.usable_core().state.hash.hex()

    def order(self, order_id: str) -> View | None:
        return self._service.state.order(order_id)

    def orders(self, account: str | None, status: str | None, limit: int) -> list[View]:
        return self._service.state.orders(account, status, limit)

    def orders_by_client_id(self, client_id: str, account: str | None) -> list[View]:
        return self._service.state.orders_by_client_id(client_id, account)

    def pending_orders(self, account: str | None = None) -> list[OrderView]:
        return self._service.submissions.pending_orders(account)

    def pending_order(self, order_id: str) -> PendingOrder | None:
        found = self._service.submissions.pending_order(order_id)
        return None if found is None else PendingOrder(*found)

    def book(self, market: str, depth: int, with_digest: bool) -> View:
        return self._service.state.book(market, depth, with_digest=with_digest)

    def has_digest(self, market: str) -> bool:
        return self._service.state.has_digest(market)

    def account(self, account: str) -> View:
        state = self._service.state
        view = state.position(account)
        view["open_orders"] = state.open_count(account)
        view["max_open_orders"] = state.params.max_open_orders
        view["cancel_all_at"] = state.switch(account)      # the dead-man's switch, block time in ms, or null
        return view

    def trades(self, market: str, limit: int | None) -> list[View]:
        return self._service.state.trades(market, limit)

    def trades_between(self, market: str, start_ms: int | None, end_ms: int | None, cursor: str | None,
                       limit: int, account: str | None) -> tuple[list[View], str | None]:
        return self._service.state.trades_between(market, start_ms, end_ms, cursor, limit, account)

    def candles(self, market: str, interval_ms: int, start_ms: int | None, end_ms: int | None) -> list[View]:
        return self._service.state.candles(market, interval_ms, start_ms, end_ms)

    def agents_of(self, account: str) -> list[View]:
        return self._service.state.agents_of(account)

    def commits(self, start: int) -> list[tuple[int, float, int]]:
        return [c for c in self._service.commit_log if c[0] >= start]

    def genesis(self) -> Genesis | None:
        return self._service.store.load_genesis()

    def epoch_proofs(self, limit: int) -> list[tuple[Block, Commit]]:
        return self._service.store.epoch_proofs()[:limit]

    def block_log(self) -> tuple[int, int]:
        store = self._service.store
        return max(store.first_height, 1), store.last_height

    def stored_block(self, height: int) -> tuple[Block, Commit] | None:
        return self._service.store.get(height)

    def certified(self, height: int) -> Certified | None:
        stored = self._service.store.get(height)
        return None if stored is None else Certified(stored[0].header, stored[1])

    def latest_certified(self) -> Certified | None:
        store = self._service.store
        for height in range(store.last_height, max(store.first_height, 1) - 1, -1):
            found = self.certified(height)
            if found is not None:
                return found
        return None

    def seats(self) -> SeatsView:
        return self._service.seats.view()

    def tokens(self) -> list[TokenView]:
        return self._service.tokens.tokens()

    # ------------------------------------------------------------------ submissions

    def signing_terms(self) -> tuple[str, int]:
        genesis = self._service.genesis
        if genesis is None:
            self._service.usable_core()       # raises NotReady: no chain yet
            raise AssertionError("a running core has a genesis")
        return genesis.chain_id, self._service.order_ttl_ms

    def rate_refuses(self, account: bytes, ops: int) -> bool:
        core = self._service.core
        return core is not None and core.intake.refuses_own(account, ops)

    def signature_valid(self, tx: SignedTx) -> bool:
        return self._service.submissions.signature_valid(tx)

    def signed_here(self, tx: SignedTx) -> None:
        self._service.submissions.signed_here(tx)

    async def submit(self, tx: SignedTx, after: SignedTx | None = None) -> Submitted:
        submissions = self._service.submissions
        why, outcome = await (submissions.submit(tx) if after is None else submissions.submit_after(tx, after))
        return Submitted(tx, None if why is None else Refused.because(why), outcome)

    async def answer(self, submitted: Submitted, wait: float) -> TxAnswer:
        if submitted.refused is not None:
            return submitted.refused
        submissions = self._service.submissions
        outcome = await submissions.wait(submitted.outcome, wait)
        if isinstance(outcome, TxResult):
            return Final(outcome)
        if isinstance(outcome, Withdrawn):
            return NotNeeded(outcome.reason)
        return Pending(submissions.pending_reason(), submissions.refusal(submitted.tx.id))

    def approve_seat(self, action: str, node_id: str) -> Approval:
        return self._service.seats.approve(action, node_id)

    def consent_recovery(self, keep: list[str]) -> RecoveryConsent:
        return self._service.seats.recover(keep)

    async def issue_token(self, uses: int, ttl_s: float) -> TokenIssued:
        return await self._service.tokens.issue_token(uses=uses, ttl_s=ttl_s)

    async def revoke_token(self, token_id: str) -> TokenView:
        return await self._service.tokens.revoke_token(token_id)
