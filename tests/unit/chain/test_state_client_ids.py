"""Client order ids on the state machine: carried in the signed text, unique per account among its open and
recent orders, found and moved by a replace, forgotten with the closed-order history, kept by snapshots."""
from __future__ import annotations

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.snapshot import InvalidStateSnapshot
from exchange.app.txs import InvalidTx, NewOrderOp, SignedTx, op_from_json, parse_op
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, account, cancel, new, replace

A, B = account(1).hex(), account(2).hex()


def named(client_id: str, side: str = "buy", price: str | None = "90", qty: str = "1", kind: str = "limit",
          until: int | None = None) -> NewOrderOp:
    return NewOrderOp.parse("BTC-USD", side, kind, price, qty, None, until, client_id)


def test_the_client_id_is_signed_and_round_trips_through_wire_and_json():
    op = named("desk-1_a")
    assert op.line() == "new BTC-USD buy limit 90 1 - cid=desk-1_a"
    assert op.wire() == ["new", "BTC-USD", "buy", "limit", "90", "1", None, None, "desk-1_a"]
    assert parse_op(op.wire()).line() == op.line() and op_from_json(op.as_json()).wire() == op.wire()
    timed = named("x", until=1_800_000_000_000)
    assert timed.line().endswith(" until=1800000000000 cid=x")
    assert parse_op(timed.wire()).wire() == timed.wire() == [*new("BTC-USD", "buy", "90", "1").wire(),
                                                             1_800_000_000_000, "x"]
    plain = new("BTC-USD", "buy", "90", "1")
    assert "cid" not in plain.line() and len(plain.wire()) == 7 and "client_id" not in plain.as_json()


@pytest.mark.parametrize("bad", ["", "a" * 37, "has space", "dot.ted", "é", 7])
def test_a_bad_client_id_is_refused_by_the_format(bad):
    with pytest.raises(InvalidTx) as raised:
        NewOrderOp.parse("BTC-USD", "buy", "limit", "90", "1", None, None, bad)
    assert raised.value.code == "invalid_client_id"
    with pytest.raises(InvalidTx):
        parse_op(["new", "BTC-USD", "buy", "limit", "90", "1", None, None, None])   # a written client id is set


def test_a_client_id_is_unique_per_account_among_open_and_recent_orders(chain, make):
    first = make(1, [named("c1")])
    chain.block([first, make(2, [named("c1")])])            # another account may use the same id
    assert [o["id"] for o in chain.state.orders_by_client_id("c1", A)] == [first.order_id(0)]
    assert len(chain.state.orders_by_client_id("c1")) == 2
    again = make(1, [named("c1", price="91")])
    assert chain.state.precheck(again, CHAIN, 0) == "duplicate_client_id"
    op = chain.block([again]).txs[0].ops[0]
    assert (op.outcome, op.reason) == ("rejected", "duplicate_client_id")
    assert chain.state.orders_by_client_id("c1", A)[0]["id"] == first.order_id(0)
    assert "client_id" not in chain.state.order(again.order_id(0))       # the refused record holds no claim
    twice = make(1, [named("c2"), named("c2", price="80")])                 # within one transaction too
    assert [o.reason for o in chain.block([twice]).txs[0].ops] == [None, "duplicate_client_id"]
    chain.block([make(1, [cancel("BTC-USD", first.order_id(0))])])
    closed = chain.state.orders_by_client_id("c1", A)                     # a cancelled order is still recent
    assert [(o["id"], o["status"], o["client_id"]) for o in closed] == [(first.order_id(0), "cancelled", "c1")]
    assert chain.block([make(1, [named("c1")])]).txs[0].ops[0].reason == "duplicate_client_id"


def test_a_filled_or_rejected_order_keeps_its_client_id(chain, make):
    chain.block([make(2, [new("BTC-USD", "sell", "90", "1")])])
    taker = make(1, [named("t1", kind="market", price=None)])
    refused = make(1, [named("r1", price="90.001")])                      # off the tick: a rejected record
    chain.block([taker, refused])
    assert chain.state.orders_by_client_id("t1", A)[0]["status"] == "filled"
    assert chain.state.orders_by_client_id("r1", A)[0]["status"] == "rejected"


def test_a_replace_hands_the_client_id_on(chain, make):
    placed = make(1, [named("q")])
    chain.block([placed])
    moved = make(1, [replace("BTC-USD", placed.order_id(0), "95", "2")])
    chain.block([moved])
    found = chain.state.orders_by_client_id("q", A)
    assert [(o["id"], o["price"], o["client_id"]) for o in found] == [(moved.order_id(0), "95.00", "q")]
    assert "client_id" not in chain.state.order(placed.order_id(0))


def test_the_client_id_is_free_again_once_the_history_forgets_its_order(make):
    # without the fresh-account rule, so that account 1's refused IOCs below are kept in the history
    chain = Chain(params=ExchangeParams(MARKETS, closed_order_history=2, fresh_order_ttl_ms=None))
    placed = make(1, [named("old")])
    chain.block([placed])
    chain.block([make(1, [cancel("BTC-USD", placed.order_id(0))])])
    assert chain.block([make(1, [named("old")])]).txs[0].ops[0].reason == "duplicate_client_id"
    chain.block([make(1, [new("BTC-USD", "buy", "1", "1", kind="ioc") for _ in range(2)])])   # two more closed
    assert chain.state.order(placed.order_id(0)) is None and chain.state.orders_by_client_id("old", A) == []
    reused = make(1, [named("old")])
    assert chain.block([reused]).txs[0].ops[0].outcome == "open"
    assert len(chain.state.client_ids) == 1


def test_client_ids_survive_a_snapshot_in_format_3(make):
    live = Chain()
    assert live.state.snapshot()[1] == 1
    kept = make(1, [named("k1"), named("k2", price="80")])
    live.block([kept, make(2, [named("k1", side="sell", price="120")])])
    data = live.state.snapshot()
    assert data[1] == 3
    restored = Chain(ExchangeState.restore(ExchangeParams(MARKETS), data, CHAIN))
    assert restored.state.snapshot() == data
    assert restored.state.orders_by_client_id("k1") == live.state.orders_by_client_id("k1")
    again = make(1, [named("k2")])
    for chain in (live, restored):
        assert chain.block([again]).txs[0].ops[0].reason == "duplicate_client_id"
    assert live.state.snapshot() == restored.state.snapshot() and live.state.app_hash == restored.state.app_hash


def test_a_snapshot_with_a_bad_client_id_row_is_refused(make):
    import msgpack

    live = Chain()
    live.block([make(1, [named("k1")])])
    body = msgpack.unpackb(live.state.snapshot(), raw=False)
    for rows in ([["nope", "k1"]], [[body[13][0][0], "bad id"]], [], [body[13][0], body[13][0]]):
        with pytest.raises(InvalidStateSnapshot):
            ExchangeState.restore(ExchangeParams(MARKETS), msgpack.packb([*body[:13], rows]), CHAIN)


def test_the_signed_bytes_cover_the_client_id():
    ops = (named("one"),)
    first = SignedTx(CHAIN, account(1), "n", 1, ops, bytes(64))
    second = SignedTx(CHAIN, account(1), "n", 1, (named("two"),), bytes(64))
    assert first.id != second.id and b"cid=one" in first.signed_bytes
