"""State proofs on reads (`?proof=1`): an answer with the proof that it is the certified state.

The state after block h is certified by the header of h + 1 (its state hash covers the state root: `node/light/
anchor.py`), so a proved read is built at once from the state of height h, the answer and the proofs together, and
then waits (at most WAIT_SECONDS) for block h + 1 to be stored here, whose header and commit it carries:

    {"height": h, "certified_by": {"height": h + 1, "header", "commit"}, "anchor", "proofs": [...], ...the answer}

Every value is base64 of canonical msgpack, the bytes the client checks. Proved reads in flight are bounded per
address (MAX_WAITING_PER_ADDRESS), per network (MAX_WAITING_PER_SUBNET) and in all (MAX_WAITING), counted from
before the answer is built: past a bound a read is 429 or 503 with Retry-After and costs no answer and no proof
(its charge to the public rate comes only when its answer is sent, a block later, so every read of an address's
burst passes the rate's check).
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import weakref
from collections import Counter
from itertools import islice
from typing import Any, Callable, Iterator, cast

from aiohttp import web

from exchange.app.results import BlockResult
from exchange.app.history import TradeRow
from exchange.app.machine import ExchangeState
from exchange.app.views import View, trade_view
from exchange.chain.types.blocks import Block
from exchange.chain.types.codec import pack
from exchange.chain.service import ChainService
from exchange.commitments.proofs import Proof
from exchange.commitments.layout import name_key, unpack
from exchange.commitments.queries import Maps, prove_account, prove_block_trades, prove_book, prove_order
from node.api.base import ApiError, JsonObject, json_response, node_of
from node.api.rate import awaited
from node.light.anchor import Unanchored, anchor_of
from p2p.public.sources import subnet_of

WAIT_SECONDS = 5.0
MAX_WAITING = 256
MAX_WAITING_PER_ADDRESS = 16
MAX_WAITING_PER_SUBNET = 32        # one /24 (IPv4) or /48 (IPv6): so it takes eight networks, not one, to fill the total


def wants_proof(request: web.Request) -> bool:
    flag = request.query.get("proof", "0")
    if flag not in ("0", "1"):
        raise ApiError(400, "bad_proof", f"proof must be 0 or 1, got {flag[:8]!r}", "proof")
    return flag == "1"


class NextBlocks:
    """Reads waiting for a height to be stored here, woken by the chain's block listener."""

    def __init__(self, chain: ChainService) -> None:
        self.waiting: dict[int, list[asyncio.Future[None]]] = {}
        self.by_address: Counter[str] = Counter()
        self.count = 0
        chain.block_listeners.append(self._stored)

    def _stored(self, block: Block, _result: BlockResult | None) -> None:
        for height in [h for h in self.waiting if h <= block.height]:
            for future in self.waiting.pop(height):
                if not future.done():
                    future.set_result(None)

    @contextlib.contextmanager
    def slot(self, address: str) -> Iterator[None]:
        """A proved read's place, taken before its answer and proofs are built and held until it is answered: a
        read past the bounds costs nothing but its refusal."""
        if self.count >= MAX_WAITING:
            raise ApiError(503, "proofs_busy", "too many proved reads wait for their certificate now", retry_after=1.0)
        network = "net:" + subnet_of(address)
        if self.by_address[address] >= MAX_WAITING_PER_ADDRESS or self.by_address[network] >= MAX_WAITING_PER_SUBNET:
            raise ApiError(429, "proofs_rate", f"at most {MAX_WAITING_PER_ADDRESS} proved reads wait at once per "
                                               f"address, {MAX_WAITING_PER_SUBNET} per network", retry_after=1.0)
        self.count += 1
        for key in (address, network):
            self.by_address[key] += 1
        try:
            yield
        finally:
            self.count -= 1
            for key in (address, network):
                self.by_address[key] -= 1
                if not self.by_address[key]:
                    del self.by_address[key]

    async def wait(self, height: int, address: str, timeout: float) -> bool:
        with self.slot(address):
            return await self.until(height, timeout)

    async def until(self, height: int, timeout: float) -> bool:
        """Whether `height` was stored within `timeout` (the caller holds a slot)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(height, []).append(future)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            left = [f for f in self.waiting.get(height, []) if f is not future]
            if left:
                self.waiting[height] = left
            else:
                self.waiting.pop(height, None)


_NEXT: weakref.WeakKeyDictionary[ChainService, NextBlocks] = weakref.WeakKeyDictionary()


def chain_of(request: web.Request) -> ChainService:
    """The node's chain service: a proof needs what the read port does not carry (the state's maps, the parts of
    its hash, the moment a block is stored)."""
    chain = getattr(node_of(request), "chain", None)
    if not isinstance(chain, ChainService):
        raise ApiError(503, "exchange_unavailable", "this node runs no exchange")
    return chain


def _b64(value: object) -> str:
    return base64.b64encode(pack(value)).decode()


async def proved(request: web.Request, answer: Callable[[], JsonObject], prove: Callable[[Maps], list[Proof]]
                 ) -> web.Response:
    """`answer()` (read from the state just now, before any await) with the proofs `prove` makes from the same state,
    once the header that certifies that state is stored here. Neither is built for a read past the bounds."""
    chain = chain_of(request)
    waiter = _NEXT.get(chain)
    if waiter is None:
        waiter = _NEXT[chain] = NextBlocks(chain)
    with waiter.slot(request.remote or ""):
        state = chain.usable_core().state
        app = chain.state
        commitment = app.commitment
        if commitment is None:
            raise ApiError(503, "no_commitment", "this node keeps no state commitment")
        try:
            anchor = anchor_of(state, app.results_chain, commitment.root)
        except Unanchored as exc:
            raise ApiError(503, "proof_unavailable", str(exc), retry_after=1.0) from None
        said = answer()
        proofs = [base64.b64encode(proof.encode()).decode() for proof in prove(commitment)]
        height = state.height
        stored = chain.store.get(height + 1)
        if stored is None and await awaited(waiter.until(height + 1, WAIT_SECONDS)):
            stored = chain.store.get(height + 1)
    if stored is None:
        raise ApiError(503, "not_certified_yet", f"the header certifying height {height} is not stored here yet",
                       retry_after=1.0)
    block, commit = stored
    return json_response({**said, "height": height, "anchor": _b64(anchor), "proofs": proofs,
                          "certified_by": {"height": block.height, "header": _b64(block.header.wire()),
                                           "commit": _b64(commit.wire())}})


PROOF_FILLS = 100
MAX_PROOF_FILLS = 1000
MAX_PROOF_LEVELS = 100_000


def _count(request: web.Request, name: str, default: int | None, most: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 1 <= int(text) <= most:
        raise ApiError(400, f"bad_{name}", f"{name} must be an integer from 1 to {most} with proof=1", name)
    return int(text)


async def proved_book(request: web.Request, market: str) -> web.Response:
    """The top `depth` levels of each side (every level without `depth`), proved."""
    depth = _count(request, "depth", None, MAX_PROOF_LEVELS)
    state = chain_of(request).state

    def answer() -> JsonObject:
        return {**state.book(market, MAX_PROOF_LEVELS if depth is None else depth, with_digest=False), "final": True}
    return await proved(request, answer, lambda maps: prove_book(maps, market, depth))


async def proved_trades(request: web.Request, market: str) -> web.Response:
    """The trades of the state's block in `market` (a trade's inclusion in the block that made it), proved."""
    state = chain_of(request).state

    def answer() -> JsonObject:
        venue = state.venues[market]
        rows = [row for row in venue.trades if row[8] == state.height]
        return {"market": market, "trades": [trade_view(row, venue.market) for row in rows], "final": True}
    return await proved(request, answer, lambda maps: prove_block_trades(maps, market))


async def proved_order(request: web.Request, order_id: str) -> web.Response:
    """An order's record, or the proof that the state holds none under its id."""
    state = chain_of(request).state
    return await proved(request, lambda: {"order": committed_order(state, order_id), "final": True},
                        lambda maps: prove_order(maps, order_id))


def committed_order(state: ExchangeState, order_id: str) -> View | None:
    """The order's view when the state commits to it, else None: a node may also answer look-ups from what it keeps
    outside the state, which no proof covers."""
    maps = state.commitment
    if maps is None or maps.orders.get(name_key(order_id)) is None:
        return None
    return state.order(order_id)


async def proved_fills(request: web.Request, account: str) -> web.Response:
    """An account's newest `limit` fills (of the markets' kept trades) and its positions, proved."""
    limit = _count(request, "limit", PROOF_FILLS, MAX_PROOF_FILLS) or PROOF_FILLS
    state = chain_of(request).state

    def answer() -> JsonObject:
        registry = state.params.registry
        held = None if state.commitment is None else state.commitment.account_maps(account)
        rows = [] if held is None else [cast(list[Any], unpack(value)) for _, value in islice(held[0].iterate(), limit)]
        fills = [trade_view(cast(TradeRow, tuple(row[1:])), registry.get(row[0])) for row in rows]
        return {"account": account, "fills": fills, "positions": state.position(account)["positions"]}
    return await proved(request, answer, lambda maps: prove_account(maps, account, limit))
