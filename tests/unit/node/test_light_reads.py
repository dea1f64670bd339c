"""The light client's checks of proved state reads (node/light/reads.py), on a state built here: what a node
answers from its state verifies, amounts formatted with the markets of the verified genesis; an answer that differs
from its proof is refused as a lie; a refused order naming a market the chain does not trade still verifies."""
from __future__ import annotations

from typing import Any

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.views import trade_view
from exchange.chain.types.genesis import Genesis
from exchange.commitments.layout import unpack
from exchange.commitments.queries import prove_account, prove_block_trades, prove_book, prove_order
from exchange.crypto import SigningKey
from node.api.proofs import committed_order
from node.light.reads import book_check, fills_check, order_check, trades_check
from node.light.verify import Proven, Refused
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, TxMaker, account, new

PARAMS = ExchangeParams(MARKETS, order_ttl_ms=30_000)
KEY = SigningKey(bytes(range(32)))
CHAIN_PROVEN = Proven(Genesis("reads-test", 1_000, KEY.public_key, (KEY.public_key,), exchange=PARAMS.to_wire()), ())


@pytest.fixture(scope="module")
def chain() -> Chain:
    chain, make = Chain(ExchangeState(PARAMS, CHAIN)), TxMaker(lifetime=5_000)
    chain.block([make(1, [new("BTC-USD", "buy", "99.00", "0.002")])])
    chain.block([make(2, [new("BTC-USD", "sell", "99.00", "0.001")]), make(2, [new("XRP-USD", "buy", "1", "1")])])
    return chain


def _answers(state: ExchangeState, buyer: str) -> dict[str, Any]:
    maps = state.commitment
    assert maps is not None
    held = maps.account_maps(buyer)
    assert held is not None
    rows = [unpack(value) for _, value in held[0].iterate()]
    return {"fills": [trade_view(tuple(row[1:]), PARAMS.registry.get(row[0])) for row in rows],  # type: ignore[index]
            "positions": state.position(buyer)["positions"]}


def test_honest_answers_verify_and_a_changed_one_is_a_lie(chain: Chain):
    state = chain.state
    maps, root = state.commitment, state.state_root
    assert maps is not None and root is not None
    book = state.book("BTC-USD", 10, with_digest=False)
    shown = book_check("BTC-USD", 10)("n", CHAIN_PROVEN, root, dict(book), prove_book(maps, "BTC-USD", 10))
    assert shown["bids"] == [["99.00", "0.0010"]] and shown["asks"] == []
    buyer = account(1).hex()
    order_id = state.orders(buyer, None, 1)[0]["id"]
    view = committed_order(state, order_id)
    assert view is not None
    order = order_check(order_id)("n", CHAIN_PROVEN, root, {"order": view}, prove_order(maps, order_id))
    assert order["order"]["status"] == "partially_filled"      # type: ignore[index]
    refused = state.orders(account(2).hex(), "rejected", 1)[0]
    assert refused["market"] == "XRP-USD" and refused["price"] is None
    odd = order_check(refused["id"])("n", CHAIN_PROVEN, root, {"order": committed_order(state, refused["id"])},
                                     prove_order(maps, refused["id"]))
    assert odd["order"]["market"] == "XRP-USD"                 # type: ignore[index]
    answers = _answers(state, buyer)
    fills = fills_check(buyer, 100)("n", CHAIN_PROVEN, root, answers, prove_account(maps, buyer, 100))
    assert len(fills["fills"]) == 1 and fills["positions"] == state.position(buyer)["positions"]   # type: ignore[arg-type]

    made: dict[str, Any] = {"trades": [trade_view(row, PARAMS.registry.get("BTC-USD")) for row in state.venues["BTC-USD"].trades]}
    trades = trades_check("BTC-USD")("n", CHAIN_PROVEN, root, made, prove_block_trades(maps, "BTC-USD"))
    assert len(trades["trades"]) == 1 and trades["trades"][0]["buyer"] == buyer   # type: ignore[arg-type, index]

    lies = [
        (trades_check("BTC-USD"), {"trades": [*made["trades"], made["trades"][0]]}, prove_block_trades(maps, "BTC-USD")),
        (book_check("BTC-USD", 10), {**book, "bids": [["99.00", "0.0020"]]}, prove_book(maps, "BTC-USD", 10)),
        (order_check(order_id), {"order": {**view, "status": "filled"}}, prove_order(maps, order_id)),
        (order_check("f" * 32), {"order": view}, prove_order(maps, "f" * 32)),
        (fills_check(buyer, 100), {**answers, "fills": []}, prove_account(maps, buyer, 100)),
        (fills_check(buyer, 100), {**answers, "positions": {**answers["positions"], "BTC": "5"}},
         prove_account(maps, buyer, 100)),
    ]
    for check, answer, proofs in lies:
        with pytest.raises(Refused) as caught:
            check("liar", CHAIN_PROVEN, root, answer, proofs)
        assert caught.value.reason == "lie" and caught.value.node == "liar"
