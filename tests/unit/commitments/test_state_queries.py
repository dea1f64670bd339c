"""A node's proofs of a book, an order and an account verify against the state root to exactly what the state
holds, and every lie about them (a changed level, a level left out, an invented or hidden fill, another root) is
refused."""
from __future__ import annotations

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.commitments import layout
from exchange.commitments.proofs import Branch, Hidden, LeafValue, Node, Proof, ProofError
from exchange.commitments.queries import (prove_account, prove_block_trades, prove_book, prove_order, verify_account,
                                          verify_block_trades, verify_book, verify_order)
from exchange.commitments.tree import MerkleMap
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, TxMaker, account, new

PARAMS = ExchangeParams(MARKETS, trade_history=50, order_ttl_ms=30_000)


@pytest.fixture(scope="module")
def chain() -> Chain:
    chain, make = Chain(ExchangeState(PARAMS, CHAIN)), TxMaker(lifetime=5_000)
    for n in range(6):
        chain.block([make(1, [new("BTC-USD", "buy", f"{90 + n}.00", "0.002")]),
                     make(2, [new("BTC-USD", "sell", f"{101 + n}.00", "0.003")])])
    chain.block([make(3, [new("BTC-USD", "buy", "101.00", "0.001")]), make(3, [new("BTC-USD", "sell", "95.00", "0.001")])])
    return chain


def test_a_book_an_order_and_an_account_verify_to_what_the_state_holds(chain: Chain):
    state = chain.state
    maps, root = state.commitment, state.state_root
    assert maps is not None and root is not None
    top = verify_book(root, "BTC-USD", 3, prove_book(maps, "BTC-USD", 3))
    assert top.bids == [(9500, 10, 1), (9400, 20, 1), (9300, 20, 1)] and top.asks[0] == (10100, 20, 1)   # each partly taken
    whole = verify_book(root, "BTC-USD", None, prove_book(maps, "BTC-USD", None))
    assert len(whole.bids) == 6 and len(whole.asks) == 6
    shown = state.book("BTC-USD")
    assert [PARAMS.registry.get("BTC-USD").format_price(p) for p, _, _ in whole.bids] == [p for p, _ in shown["bids"]]
    empty = verify_book(root, "ETH-USD", 5, prove_book(maps, "ETH-USD", 5))
    assert empty.bids == [] and empty.asks == []
    order_id = state.orders(account(1).hex(), "open", 1)[0]["id"]
    record = verify_order(root, order_id, prove_order(maps, order_id))
    assert record is not None and record[0] == account(1).hex()
    assert record[7] == "partially_filled" and record[4:7] == [9500, 20, 10]
    assert verify_order(root, "f" * 32, prove_order(maps, "f" * 32)) is None
    held = verify_account(root, account(3).hex(), 100, prove_account(maps, account(3).hex(), 100))
    assert len(held.fills) == 2 and {row[0] for row in held.fills} == {"BTC-USD"}
    assert held.positions == {layout.name_key(asset): amount
                              for asset, amount in state.positions.amounts[account(3).hex()].items() if amount}
    nobody = verify_account(root, account(7).hex(), 100, prove_account(maps, account(7).hex(), 100))
    assert nobody.fills == [] and nobody.positions == {}
    trades = verify_block_trades(root, "BTC-USD", prove_block_trades(maps, "BTC-USD"))
    assert [tuple(row) for row in trades] == [row for row in state.venues["BTC-USD"].trades if row[8] == state.height]
    assert len(trades) == 2 and verify_block_trades(root, "ETH-USD", prove_block_trades(maps, "ETH-USD")) == []


def _hide_first_leaf(node: Node | None) -> Node | None:
    """The proof with its first revealed leaf replaced by its hash: an entry left out."""
    from exchange.commitments.hashing import leaf_hash, value_digest
    if isinstance(node, LeafValue):
        return Hidden(leaf_hash(node.key, value_digest(node.value)))
    if isinstance(node, Branch):
        left = _hide_first_leaf(node.left)
        if left != node.left:
            return Branch(node.bit, node.prefix, left, node.right)  # type: ignore[arg-type]
        return Branch(node.bit, node.prefix, node.left, _hide_first_leaf(node.right))  # type: ignore[arg-type]
    return node


def _change_first_value(node: Node | None, value: bytes) -> Node | None:
    if isinstance(node, LeafValue):
        return LeafValue(node.key, value)
    if isinstance(node, Branch):
        left = _change_first_value(node.left, value)
        if left != node.left:
            return Branch(node.bit, node.prefix, left, node.right)  # type: ignore[arg-type]
        return Branch(node.bit, node.prefix, node.left, _change_first_value(node.right, value))  # type: ignore[arg-type]
    return node


def test_every_lie_is_refused(chain: Chain):
    state = chain.state
    maps, root = state.commitment, state.state_root
    assert maps is not None and root is not None
    book = prove_book(maps, "BTC-USD", 3)
    changed = [*book[:2], Proof(_change_first_value(book[2].node, layout.pack([999, 1]))), book[3]]
    hidden = [*book[:2], Proof(_hide_first_leaf(book[2].node)), book[3]]
    who = account(3).hex()
    fills = prove_account(maps, who, 100)
    hidden_fill = [*fills[:2], Proof(_hide_first_leaf(fills[2].node)), fills[3]]
    invented = MerkleMap(layout.FILL_KEY_BYTES, [(layout.fill_key(1, "x:y"), layout.pack(["BTC-USD", "x:y", 1, 1, "y",
                                                                                          "x", "buy", who, who, 1, 1]))])
    with_invented = [*fills[:2], invented.prove_first(*layout.fills_range(), 100)[1], fills[3]]
    trades = prove_block_trades(maps, "BTC-USD")
    hidden_trade = [*trades[:2], Proof(_hide_first_leaf(trades[2].node))]
    for lie in (lambda: verify_block_trades(root, "BTC-USD", hidden_trade),
                lambda: verify_book(root, "BTC-USD", 3, changed), lambda: verify_book(root, "BTC-USD", 3, hidden),
                lambda: verify_book(bytes(32), "BTC-USD", 3, book), lambda: verify_book(root, "ETH-USD", 3, book),
                lambda: verify_account(root, who, 100, hidden_fill),
                lambda: verify_account(root, who, 100, with_invented),
                lambda: verify_order(root, "f" * 32, prove_order(maps, state.orders(limit=1)[0]["id"]))):
        with pytest.raises(ProofError):
            lie()
