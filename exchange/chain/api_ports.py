"""The chain as the control API sees it: one read port (queries answering typed views) and one submit port
(a signed transaction in, its answer out), with the refusals as an enum.

The API holds these two and nothing else of the chain, so what it may ask and change is this page; the chain
side implements them (`api_door.py`) over its service. Every query raises `NotReady` while the chain cannot
answer (no chain yet, halted, recovering).
"""
from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Protocol

from exchange.app.results import TxResult
from exchange.app.txs import SignedTx
from exchange.app.views import View
from exchange.chain.types.blocks import Block, Commit, Header
from exchange.chain.types.genesis import Genesis
from exchange.chain.mempool.own_orders import OrderView, TxOutcome
from exchange.chain.ports import Refusal as ValidatorRefusal
from exchange.chain.seats.seat_admin import Approval, RecoveryConsent, TokenIssued, TokenView
from exchange.chain.seats.seats_view import SeatsView
from exchange.markets import MarketRegistry


class Refusal(enum.Enum):
    """Why the chain would not take a transaction, grouped by what the client should do about it; the code
    (`Refused.code`) names the exact reason."""

    BAD_SIGNATURE = "bad_signature"
    NOT_OWNER = "not_owner"
    DUPLICATE_CLIENT_ID = "duplicate_client_id"
    MEMPOOL_FULL = "mempool_full"
    HALTED = "halted"
    ACCOUNT_QUOTA = "account_quota"
    SENDER_QUOTA = "sender_quota"
    ACCOUNT_RATE = "account_rate"
    INVALID = "invalid"        # the transaction itself is wrong (expired, unknown market, a bad price, ...)

    @classmethod
    def of(cls, code: str) -> Refusal:
        """The refusal a reason code belongs to (INVALID for any code without a group of its own)."""
        try:
            return cls(code)
        except ValueError:
            return cls.INVALID


@dataclass(frozen=True)
class Refused:
    """A refusal and its exact reason code, as the chain gave it."""

    refusal: Refusal
    code: str

    @classmethod
    def because(cls, code: str) -> Refused:
        return cls(Refusal.of(code), code)


@dataclass(frozen=True)
class Finality:
    """Where this node's chain stands: every read answer carries it (height 0 and no epoch before a chain)."""

    height: int
    epoch: int | None = None
    role: str | None = None

    def fields(self) -> dict[str, int | str]:
        """The fields an API answer spreads in: height, and epoch and role once there is a chain."""
        if self.epoch is None or self.role is None:
            return {"height": self.height}
        return {"height": self.height, "epoch": self.epoch, "role": self.role}


@dataclass(frozen=True)
class PendingOrder:
    """One of our orders answered 202 that no block holds yet: its transaction and its view."""

    tx: SignedTx
    view: OrderView


@dataclass(frozen=True)
class Certified:
    """A decided height's header and the commit that certifies it."""

    header: Header
    commit: Commit


@dataclass(frozen=True)
class Submitted:
    """A transaction handed to the chain (durable in the outbox unless refused) and the future of its outcome."""

    tx: SignedTx
    refused: Refused | None
    outcome: asyncio.Future[TxOutcome]


@dataclass(frozen=True)
class Pending:
    """Not final within the wait: why (`no_chain_yet`, `no_quorum`, `not_final_yet`) and what the validators last
    said of it; the transaction stays in the outbox and is handed on."""

    reason: str
    validator_refusal: ValidatorRefusal | None


@dataclass(frozen=True)
class Final:
    """A block holding the transaction is applied here."""

    result: TxResult


@dataclass(frozen=True)
class NotNeeded:
    """A held cancel dropped unsent: the order it cancels never rested on the book (`reason` says why)."""

    reason: str


TxAnswer = Refused | Pending | Final | NotNeeded


class ChainReads(Protocol):
    """What the API may read of the chain."""

    def finality(self) -> Finality: ...
    def markets(self) -> MarketRegistry: ...
    def state_hash(self) -> str: ...
    def order(self, order_id: str) -> View | None: ...
    def orders(self, account: str | None, status: str | None, limit: int) -> list[View]: ...
    def orders_by_client_id(self, client_id: str, account: str | None) -> list[View]: ...
    def pending_orders(self, account: str | None = None) -> list[OrderView]: ...
    def pending_order(self, order_id: str) -> PendingOrder | None: ...
    def book(self, market: str, depth: int, with_digest: bool) -> View: ...
    def has_digest(self, market: str) -> bool: ...
    def account(self, account: str) -> View: ...
    def trades(self, market: str, limit: int | None) -> list[View]: ...
    def trades_between(self, market: str, start_ms: int | None, end_ms: int | None, cursor: str | None,
                       limit: int, account: str | None) -> tuple[list[View], str | None]: ...
    def candles(self, market: str, interval_ms: int, start_ms: int | None, end_ms: int | None) -> list[View]: ...
    def agents_of(self, account: str) -> list[View]: ...
    def commits(self, start: int) -> list[tuple[int, float, int]]: ...
    def genesis(self) -> Genesis | None: ...
    def epoch_proofs(self, limit: int) -> list[tuple[Block, Commit]]: ...
    def block_log(self) -> tuple[int, int]: ...      # (first, last) height the block log holds
    def stored_block(self, height: int) -> tuple[Block, Commit] | None: ...
    def certified(self, height: int) -> Certified | None: ...
    def latest_certified(self) -> Certified | None: ...
    def seats(self) -> SeatsView: ...
    def tokens(self) -> list[TokenView]: ...


class ChainSubmits(Protocol):
    """What the API may hand the chain: our users' signed transactions, and the operator's seat commands."""

    def signing_terms(self) -> tuple[str, int]:
        """(the chain id, the order time-to-live in ms) a transaction this node signs carries."""
        ...

    def rate_refuses(self, account: bytes, ops: int) -> bool:
        """Whether the account's rate would refuse `ops` operations now (asked before signing)."""
        ...

    def signature_valid(self, tx: SignedTx) -> bool: ...
    def signed_here(self, tx: SignedTx) -> None: ...
    async def submit(self, tx: SignedTx, after: SignedTx | None = None) -> Submitted: ...
    async def answer(self, submitted: Submitted, wait: float) -> TxAnswer: ...
    def approve_seat(self, action: str, node_id: str) -> Approval: ...
    def consent_recovery(self, keep: list[str]) -> RecoveryConsent: ...
    async def issue_token(self, uses: int, ttl_s: float) -> TokenIssued: ...
    async def revoke_token(self, token_id: str) -> TokenView: ...
