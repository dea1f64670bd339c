"""Agent keys on the state machine: an account approves a key with a scope and revokes it; the agent's
transactions act for the account within the scope and are refused, with a reason, outside it; the table is
bounded, expires by block time and is kept by snapshots."""
from __future__ import annotations

import itertools

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.agents import MAX_PER_ACCOUNT
from exchange.app.snapshot import InvalidStateSnapshot
from exchange.app.txs import (ApproveAgentOp, CancelAllOp, GrantOp, InvalidTx, NewOrderOp, Op, RevokeAgentOp,
                              ScheduleCancelOp, SignedTx, op_from_json, parse_op, sign_tx)
from exchange.crypto import SigningKey
from tests.unit.chain.state_helpers import BLOCK_MS, CHAIN, MARKETS, T0, Chain, account, cancel, new, replace

OWNER, OTHER, AGENT = account(1), account(2), account(9)
A = OWNER.hex()
_nonces = itertools.count()


def approve(agent: bytes = AGENT, markets: str | None = None, operations: str = "place,cancel,replace",
            cap: str | None = None, expires: int | None = None) -> ApproveAgentOp:
    return ApproveAgentOp.parse(agent.hex(), markets, operations, cap, expires)


def as_agent(ops: list[Op], owner: bytes = OWNER, agent: bytes = AGENT, at: int = T0) -> SignedTx:
    """The agent's transaction for `owner`, expiring a minute after block time `at`."""
    return SignedTx(CHAIN, agent, f"a{next(_nonces)}", at + 60_000, tuple(ops), bytes(64), owner)


def reasons(chain: Chain, tx: SignedTx) -> tuple[str | None, list[str | None]]:
    result = chain.block([tx]).txs[0]
    return result.reason, [op.reason for op in result.ops]


def test_the_agent_line_is_signed_and_round_trips():
    key = SigningKey(bytes(range(32)))
    tx = sign_tx(key.sign, key.public_key, CHAIN, "n1", T0, [new("BTC-USD", "buy", "90", "1")], OWNER)
    lines = tx.signed_bytes.decode().split("\n")
    assert lines[3] == f"for={A}" and tx.signature_valid()
    assert SignedTx.from_wire(tx.wire()).id == tx.id and SignedTx.from_json(tx.as_json()).id == tx.id
    assert tx.as_json()["for"] == A and len(tx.wire()) == 7     # type: ignore[typeddict-item]
    plain = sign_tx(key.sign, key.public_key, CHAIN, "n1", T0, [new("BTC-USD", "buy", "90", "1")])
    assert len(plain.wire()) == 6 and "for" not in plain.as_json() and plain.id != tx.id
    with pytest.raises(InvalidTx):
        SignedTx.from_wire([*plain.wire(), key.public_key])     # an agent acting for itself
    op = approve(markets="BTC-USD,ETH-USD", operations="place,cancel", cap="1000", expires=T0 + 5)
    assert op.line() == f"approve_agent {AGENT.hex()} BTC-USD,ETH-USD place,cancel 1000 {T0 + 5}"
    assert parse_op(op.wire()).line() == op.line() == op_from_json(op.as_json()).line()
    assert RevokeAgentOp.parse(AGENT.hex()).line() == f"revoke_agent {AGENT.hex()}"
    for markets, operations in (("BTC-USD,BTC-USD", "place"), (None, "place,withdraw"), (None, ""), ("", "place")):
        with pytest.raises(InvalidTx):
            ApproveAgentOp.parse(AGENT.hex(), markets, operations, None, None)


def test_an_agent_places_cancels_and_replaces_for_its_account_within_scope(chain, make):
    assert chain.block([make(1, [approve(markets="BTC-USD")])]).txs[0].ops[0].outcome == "approved"
    placed = as_agent([new("BTC-USD", "buy", "90", "1")])
    assert reasons(chain, placed) == (None, [None])
    order = chain.state.order(placed.order_id(0))
    assert order["account"] == A and order["status"] == "open"      # the account's order, not the agent key's
    moved = as_agent([replace("BTC-USD", placed.order_id(0), "91", "1")])
    assert reasons(chain, moved) == (None, [None])
    assert reasons(chain, as_agent([cancel("BTC-USD", moved.order_id(0))])) == (None, ["requested"])
    assert chain.state.order(moved.order_id(0))["status"] == "cancelled"
    assert chain.state.agents_of(A) == [{"agent": AGENT.hex(), "markets": ["BTC-USD"],
                                          "operations": ["place", "cancel", "replace"], "cap": None,
                                          "expires": None, "expired": False}]


def test_everything_outside_the_scope_is_refused_with_a_reason(chain, make):
    chain.block([make(1, [approve(markets="BTC-USD", operations="place", cap="500")])])
    theirs = make(2, [new("BTC-USD", "sell", "120", "5")])
    own = make(1, [new("BTC-USD", "buy", "80", "1")])
    chain.block([theirs, own])
    cases: list[tuple[Op, str]] = [
        (new("ETH-USD", "buy", "5", "1"), "market_not_allowed"),
        (new("BTC-USD", "buy", "100", "6"), "over_notional_cap"),          # 600 > 500 (the quote asset, USD)
        (new("BTC-USD", "buy", None, "5", kind="market"), "over_notional_cap"),   # 5 x 120 from the book
        (cancel("BTC-USD", own.order_id(0)), "operation_not_allowed"),
        (replace("BTC-USD", own.order_id(0), "81", "1"), "operation_not_allowed"),
        (CancelAllOp.parse(None, None), "operation_not_allowed"),
        (GrantOp.parse(AGENT.hex(), "USD", "100"), "agent_cannot_grant"),
        (approve(agent=account(10)), "agent_cannot_approve"),
        (RevokeAgentOp.parse(AGENT.hex()), "agent_cannot_approve"),
    ]
    for op, reason in cases:
        tx = as_agent([op])
        assert chain.state.precheck(tx, CHAIN, 0) == reason, op.line()
        assert reasons(chain, tx) == (None, [reason]), op.line()
    assert reasons(chain, as_agent([new("BTC-USD", "buy", "100", "5")])) == (None, [None])    # 500: at the cap
    assert chain.state.open_count(A) == 2 and chain.state.position(A)["positions"]["BTC"] == "0.00000000"


def test_a_scope_of_cancels_in_some_markets_keeps_its_cancel_all_in_them(chain, make):
    chain.block([make(1, [approve(markets="BTC-USD", operations="cancel")])])
    chain.block([make(1, [new("BTC-USD", "buy", "80", "1"), new("ETH-USD", "buy", "5", "1")])])
    assert reasons(chain, as_agent([CancelAllOp.parse(None, None)])) == (None, ["market_not_allowed"])
    assert reasons(chain, as_agent([ScheduleCancelOp.parse(T0 + 60_000)])) == (None, ["market_not_allowed"])
    assert reasons(chain, as_agent([CancelAllOp.parse("BTC-USD", None)])) == (None, ["1_cancelled"])
    assert chain.state.open_count(A) == 1


def test_an_unapproved_revoked_or_expired_agent_is_refused_whole(chain, make):
    assert reasons(chain, as_agent([new("BTC-USD", "buy", "90", "1")])) == ("agent_not_approved", [])
    expires = chain.next_time() + 3 * BLOCK_MS
    chain.block([make(1, [approve(expires=expires)])])
    assert reasons(chain, as_agent([new("BTC-USD", "buy", "90", "1")])) == (None, [None])
    chain.block([])
    assert chain.next_time() == expires
    late = as_agent([new("BTC-USD", "buy", "90", "1")])
    assert chain.state.precheck(late, CHAIN, expires) == "agent_expired"
    assert reasons(chain, late) == ("agent_expired", [])
    assert chain.state.agents_of(A)[0]["expired"]
    for _ in range(ExchangeParams(MARKETS).order_ttl_ms // BLOCK_MS):   # a transaction lifetime later: forgotten
        chain.block([])
    assert chain.state.agents_of(A) == [] and not chain.state.agents
    make.base_time = chain.next_time()
    chain.block([make(1, [approve()])])
    chain.block([make(1, [RevokeAgentOp.parse(AGENT.hex())])])
    assert reasons(chain, as_agent([cancel("BTC-USD", "x")], at=chain.next_time())) == ("agent_not_approved", [])
    refused = chain.block([make(1, [RevokeAgentOp.parse(AGENT.hex())])]).txs[0].ops[0]
    assert (refused.outcome, refused.reason) == ("rejected", "unknown_agent")


def test_an_agent_acts_only_for_the_account_that_approved_it(chain, make):
    chain.block([make(1, [approve()])])
    stranger = as_agent([new("BTC-USD", "buy", "90", "1")], owner=OTHER)
    assert reasons(chain, stranger) == ("agent_not_approved", [])


def test_approvals_are_judged_and_bounded(chain, make):
    bad: list[tuple[ApproveAgentOp, str]] = [(approve(agent=OWNER), "agent_is_self"),
                                             (approve(markets="XRP-USD"), "unknown_market"),
                                             (approve(cap="0.000000000000001"), "invalid_cap"),
                                             (approve(expires=T0 - 1), "expires_passed")]
    for op, reason in bad:
        assert chain.block([make(1, [op])]).txs[0].ops[0].reason == reason
    ops: list[Op] = [approve(agent=account(100 + n)) for n in range(MAX_PER_ACCOUNT + 1)]
    results = chain.block([make(1, ops)]).txs[0].ops
    assert [r.reason for r in results] == [None] * MAX_PER_ACCOUNT + ["too_many_agents"]
    rescoped = chain.block([make(1, [approve(agent=account(100), markets="BTC-USD")])]).txs[0].ops[0]
    assert rescoped.outcome == "approved" and len(chain.state.agents_of(A)) == MAX_PER_ACCOUNT


def test_agents_survive_a_snapshot_in_format_4(make):
    live = Chain()
    live.block([make(1, [approve(markets="BTC-USD", cap="1000", expires=T0 + 10 * BLOCK_MS)]),
                make(2, [approve(agent=account(11), operations="cancel")])])
    data = live.state.snapshot()
    assert data[1] == 4
    restored = Chain(ExchangeState.restore(ExchangeParams(MARKETS), data, CHAIN))
    assert restored.state.snapshot() == data
    txs = [as_agent([new("BTC-USD", "buy", "9", "1")]), as_agent([new("ETH-USD", "buy", "9", "1")])]
    for chain in (live, restored):
        assert [op.reason for tx in chain.block(txs).txs for op in tx.ops] == [None, "market_not_allowed"]
    for _ in range(ExchangeParams(MARKETS).order_ttl_ms // BLOCK_MS + 10):     # past the first one's grace
        a, b = live.block([]), restored.block([])
        assert a.app_hash == b.app_hash
    assert live.state.snapshot() == restored.state.snapshot() and len(live.state.agents.rows()) == 1


def test_a_snapshot_with_a_bad_agent_row_is_refused(make):
    import msgpack

    live = Chain()
    live.block([make(1, [approve()])])
    body = msgpack.unpackb(live.state.snapshot(), raw=False)
    row = body[14][0]
    for rows in ([[*row[:3], "place,withdraw", *row[4:]]], [["zz", *row[1:]]], [row, row], []):
        with pytest.raises(InvalidStateSnapshot):
            ExchangeState.restore(ExchangeParams(MARKETS), msgpack.packb([*body[:14], rows]), CHAIN)


def test_a_capped_agents_trigger_is_judged_against_its_cap_when_it_fires_and_keeps_it_in_snapshots(make):
    live = Chain()
    live.block([make(1, [approve(markets="BTC-USD", cap="100")])])
    stop = as_agent([NewOrderOp.parse("BTC-USD", "buy", "stop_market", None, "50", None, None, None, "10")])
    small = as_agent([NewOrderOp.parse("BTC-USD", "buy", "stop_market", None, "5", None, None, None, "10")])
    assert [op.outcome for tx in live.block([stop, small]).txs for op in tx.ops] == ["untriggered"] * 2   # empty book
    data = live.state.snapshot()
    restored = Chain(ExchangeState.restore(ExchangeParams(MARKETS), data, CHAIN))
    assert restored.state.snapshot() == data
    liquidity = [make(7, [new("BTC-USD", "sell", "10", "60")]), make(8, [new("BTC-USD", "buy", "10", "1")])]
    for chain in (live, restored):
        fired = chain.block(liquidity)                    # a trade at 10 crosses both; 50 x 10 = 500 > 100
        assert [(t.order_id, t.outcome, t.reason) for t in fired.timed] == [
            (stop.order_id(0), "rejected", "over_notional_cap"), (small.order_id(0), "filled", None)]
        view = chain.state.order(stop.order_id(0))
        assert view is not None and view["status"] == "rejected"
    assert live.state.app_hash == restored.state.app_hash
