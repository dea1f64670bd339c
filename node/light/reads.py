"""Verified reads of the exchange state: a book, an order, an account's fills and positions, each from a node's
`?proof=1` answer, returned only when it verifies (`node/api/proofs.py` says what such an answer holds).

For each node in turn (the primary first, then the witnesses): its chain is proven from the trusted genesis, the
header that certifies the answer's height is checked for a quorum and freshness (`verify.py`), the state root is
tied to that header (`anchor.py`), the proofs lead from the root to the entries (`exchange/commitments/queries.py`),
and what the node says it holds must be exactly what it proved. A node failing any step is named and dropped for the
next. The answer that verifies is compared, by its certifying header, with every other node's header of that height:
two certified headers for one height are a fork, kept as evidence, and the client stops.
"""
from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from exchange.app.params import ExchangeParams
from exchange.app.views import View, trade_view
from exchange.chain.types.blocks import Header, Malformed
from exchange.chain.types.codec import unpack
from exchange.commitments.proofs import Proof, ProofError
from exchange.commitments.queries import verify_account, verify_block_trades, verify_book, verify_order
from exchange.commitments.layout import name_key
from exchange.errors import ExchangeError
from exchange.markets import Market
from node.light.anchor import Unanchored, anchored_root
from node.light.client import Fetch, NoneVerified, TrustRoot, ask, compared, proven_chains
from node.light.verify import Proven, Refused, VerifiedHeader, fingerprint, verified_header

# (node, its proven chain, the certified state root, the node's answer, its proofs) -> what it proved
Check = Callable[[str, Proven, bytes, dict[str, object], list[Proof]], dict[str, object]]


@dataclass
class VerifiedRead:
    result: dict[str, object]
    height: int                          # the state's height; its certificate is the header of height + 1
    certified_by: VerifiedHeader
    chain_id: str
    agreeing: list[str] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    learnt: bool = False

    def as_json(self) -> dict[str, object]:
        head = self.certified_by
        return {**self.result, "node": head.node, "height": self.height, "certified_by": head.height,
                "verified": True, "signatures_checked": head.signers, "validators": head.validators,
                "epoch": head.epoch, "chain_id": self.chain_id, "fingerprint": fingerprint(self.chain_id),
                "trust_learnt_now": self.learnt, "witnesses_agreeing": self.agreeing,
                "refused": [{"node": r.node, "reason": r.reason, "message": r.message} for r in self.refused]}


def read(nodes: list[str], trust: TrustRoot, fetch: Fetch, path: str, check: Check, *, pin: str | None = None,
         now_ms: Callable[[], int] = lambda: int(time.time() * 1000), max_age_ms: int = 30_000,
         evidence_dir: Path | None = None) -> VerifiedRead:
    """The first node's answer to `path` (with proof=1) that verifies, cross-checked with the other nodes' headers."""
    chains, refused, learnt = proven_chains(nodes, trust, fetch, pin)
    for n, (node, chain) in enumerate(chains):
        try:
            height, header, result = _verified(node, chain, ask(fetch, node, path), check, now_ms(), max_age_ms)
        except Refused as exc:
            refused.append(exc)
            continue
        agreeing = [other for other, other_chain in chains[:n] + chains[n + 1:]
                    if compared(fetch, header, other, other_chain, refused, evidence_dir)]
        return VerifiedRead(result, height, header, chain.chain_id, agreeing, refused, learnt)
    raise NoneVerified(refused)


def _verified(node: str, chain: Proven, answer: object, check: Check, now_ms: int,
              max_age_ms: int) -> tuple[int, VerifiedHeader, dict[str, object]]:
    if not isinstance(answer, dict) or not isinstance(answer.get("proofs"), list):
        raise Refused(node, "malformed", "its answer carries no proofs")
    header = verified_header(node, chain, answer.get("certified_by"), now_ms=now_ms, max_age_ms=max_age_ms)
    try:
        anchor = unpack(base64.b64decode(str(answer.get("anchor")), validate=True))
        height, root = anchored_root(Header.from_wire(unpack(header.header)), anchor)
        if answer.get("height") != height:
            raise Unanchored(f"it says height {answer.get('height')!r}, its anchor is the state of height {height}")
        proofs = [Proof.decode(base64.b64decode(str(text), validate=True)) for text in answer["proofs"]]
        return height, header, check(node, chain, root, answer, proofs)
    except Unanchored as exc:
        raise Refused(node, "unanchored", f"its state root is not the certified one: {exc}") from None
    except ProofError as exc:
        raise Refused(node, "bad_proof", f"its proof does not verify against the certified state root ({exc})") from None
    except (binascii.Error, ValueError, TypeError, Malformed, ExchangeError) as exc:
        raise Refused(node, "malformed", f"its answer does not decode ({type(exc).__name__}: {exc})") from None


def _params(chain: Proven) -> ExchangeParams:
    return ExchangeParams.from_wire(chain.genesis.exchange)


def _market(chain: Proven, symbol: str) -> Market:
    registry = _params(chain).registry
    if symbol not in registry:
        raise ValueError(f"the chain trades no market {symbol!r}")
    return registry.get(symbol)


def _units(market: Market | None, value: object, format_: Callable[[int], str] | None) -> str | None:
    """A proved amount as the node's views show it: None where the record has none or names no known market."""
    if market is None or value is None or format_ is None:
        return None
    if type(value) is not int:
        raise ValueError("an amount is not an integer")
    return format_(value)


def _differs(node: str, what: str, claimed: object, proved: object) -> Refused:
    return Refused(node, "lie", f"it says {what} is {str(claimed)[:120]} but proves {str(proved)[:120]}")


def book_check(symbol: str, depth: int | None) -> Check:
    def check(node: str, chain: Proven, root: bytes, answer: dict[str, object], proofs: list[Proof]) -> dict[str, object]:
        market = _market(chain, symbol)
        book = verify_book(root, symbol, depth, proofs)
        proved = {side: [[market.format_price(price), market.format_qty(lots)] for price, lots, _ in levels]
                  for side, levels in (("bids", book.bids), ("asks", book.asks))}
        for side in ("bids", "asks"):
            if answer.get(side) != proved[side]:
                raise _differs(node, f"its {side}", answer.get(side), proved[side])
        return {"market": symbol, **proved, "orders_per_level": {"bids": [n for _, _, n in book.bids],
                                                                  "asks": [n for _, _, n in book.asks]}}
    return check


def trades_check(symbol: str) -> Check:
    def check(node: str, chain: Proven, root: bytes, answer: dict[str, object], proofs: list[Proof]) -> dict[str, object]:
        market = _market(chain, symbol)
        trades = [trade_view(tuple(row), market) for row in verify_block_trades(root, symbol, proofs)]  # type: ignore[arg-type]
        if answer.get("trades") != trades:
            raise _differs(node, f"the block's {symbol} trades", answer.get("trades"), trades)
        return {"market": symbol, "trades": trades}
    return check


ORDER_FIELDS = ("account", "market", "side", "type", "price", "qty", "remaining", "status", "reason")


def order_check(order_id: str) -> Check:
    def check(node: str, chain: Proven, root: bytes, answer: dict[str, object], proofs: list[Proof]) -> dict[str, object]:
        record = verify_order(root, order_id, proofs)
        claimed = answer.get("order")
        if record is None:
            if claimed is not None:
                raise _differs(node, f"order {order_id}", "held", "absent from the state")
            return {"order": None, "absent": True}
        account, symbol, side, kind, price, qty, remaining, status, reason = record
        registry = _params(chain).registry
        # a refused op's record may name a market the chain does not trade: its amounts are None then
        market = registry.get(symbol) if isinstance(symbol, str) and symbol in registry else None
        proved: View = {"id": order_id, "account": account, "market": symbol, "side": side, "type": kind,
                        "price": _units(market, price, market.format_price if market else None),
                        "qty": _units(market, qty, market.format_qty if market else None),
                        "remaining": _units(market, remaining, market.format_qty if market else None),
                        "status": status, "reason": reason}
        if not isinstance(claimed, dict):
            raise _differs(node, f"order {order_id}", "absent", "held")
        for name in ORDER_FIELDS:
            if name != "type" and claimed.get(name) != proved[name]:     # a waiting trigger shows its trigger type
                raise _differs(node, f"order {order_id}'s {name}", claimed.get(name), proved[name])
        return {"order": proved}
    return check


def fills_check(account: str, limit: int) -> Check:
    def check(node: str, chain: Proven, root: bytes, answer: dict[str, object], proofs: list[Proof]) -> dict[str, object]:
        params = _params(chain)
        held = verify_account(root, account, limit, proofs)
        fills = [trade_view(tuple(row[1:]), _market(chain, str(row[0]))) for row in held.fills]  # type: ignore[arg-type]
        positions = {asset: params.assets.format(asset, held.positions.get(name_key(asset), 0))
                     for asset in params.assets.scales}
        if answer.get("fills") != fills:
            raise _differs(node, f"{account[:16]}'s fills", answer.get("fills"), fills)
        if answer.get("positions") != positions:
            raise _differs(node, f"{account[:16]}'s positions", answer.get("positions"), positions)
        return {"account": account, "fills": fills, "positions": positions}
    return check
