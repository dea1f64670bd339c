"""Red team on agent keys and client order ids, on two real validators, as a stranger with an agent key file or
a plain account key would attack them through the API.

- A trigger order sized past the agent's notional cap, placed while the other side of the book is empty (worth
  nothing then), fired later against a full book: refused over_notional_cap when it fires (this was a finding:
  before the fix it bought 50 x 10 = 500 USD for an agent capped at 100).
- Scope escapes that hold: another account in the for= line, an atomic batch mixing in-scope and out-of-scope
  operations, a replace naming another market, the owner's approval replayed after its revoke, the agent's nonce
  equal to the owner's, a cancel by client id naming another account.
- A client id reused by a stranger: the owner's client (the node's default account through its token) finds and
  cancels its own order only (this was a finding: before the fix it was shown the stranger's order too and its
  cancel by client id was refused 409 ambiguous_client_id).
- An atomic batch of two reduce-only orders that each close the whole position: the first applies, the second is
  rejected (FINDING, minor, skipped below).
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange.app.txs import (ApproveAgentOp, AtomicOp, CancelOp, NewOrderOp, Op, ReplaceOp, RevokeAgentOp, SignedTx,
                              sign_tx)
from exchange.crypto import SigningKey
from exchange_node_client import ApiError, AsyncClient
from node.cli.agents import load_key
from tests.harness import Cluster, NodeProcess, converged, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "markets": "BTC-USD,ETH-USD", "seat_rule": "any"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("rt-agents"))
    try:
        yield cluster.chain(2, **FAST)
    finally:
        cluster.close()


def _signed(node: NodeProcess, key: SigningKey, ops: list[Op], acting_for: bytes | None = None,
            nonce: str | None = None) -> SignedTx:
    return sign_tx(key.sign, key.public_key, node.status()["chain_id"], nonce or os.urandom(8).hex(),
                   int(time.time() * 1000) + 30_000, ops, acting_for)


def _post(node: NodeProcess, tx: SignedTx) -> tuple[int, Any]:
    return node.api("POST", "/orders/batch?wait=5", {"signed": tx.as_json()}, timeout=15)


def _codes(node: NodeProcess, tx: SignedTx) -> list[str | None]:
    """The error code of each op of `tx` as the node answers it, None for one applied (a transaction refused
    whole: one code)."""
    status, body = _post(node, tx)
    if status >= 400:
        return [body["error"]["code"]]
    return [(r.get("error") or {}).get("code") or _reason(r) for r in body["results"]]


def _reason(answer: dict) -> str | None:
    """Why the chain rejected an op of an applied transaction (a new order's answer is its order), or None."""
    result, order = answer.get("result") or {}, answer.get("order") or {}
    if result.get("outcome") == "rejected":
        return result.get("reason")
    return order.get("reason") if order.get("status") == "rejected" else None


def _agent(owner_node: NodeProcess, path: Path, *args: str) -> tuple[SigningKey, bytes]:
    added = owner_node.cli("agent", "add", *args, "--out", str(path), "--json")
    assert added.returncode == 0, added.stderr
    key, owner = load_key(str(path))
    agent = key.public_key.hex()
    wait_until(lambda: any(a["agent"] == agent for a in owner_node.get(f"/agents?account={owner.hex()}")["agents"]),
               10, message="the approval is final")
    return key, owner


def _limit(market: str, side: str, price: str, qty: str, **extra: Any) -> NewOrderOp:
    return NewOrderOp.parse(market, side, "limit", price, qty, None, **extra)


def test_an_agents_stop_market_cannot_trade_past_its_notional_cap(pair, tmp_path: Path):
    owner_node, other = pair
    key, owner = _agent(owner_node, tmp_path / "capped.json", "--markets", "BTC-USD", "--cap", "100",
                        "--operations", "place,cancel")
    maker, taker = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))
    # the attack: a stop-market buy of 50 while nobody sells (worth 0 by the book as it stands)
    stop = _signed(other, key, [NewOrderOp.parse("BTC-USD", "buy", "stop_market", None, "50", None, trigger="10")],
                   owner)
    assert _codes(other, stop) == [None]
    assert other.get(f"/orders/{stop.order_id(0)}")["order"]["status"] == "untriggered"
    # the honest baseline of the same run: with 60 on offer at 10, the same market buy placed directly is refused
    assert _codes(other, _signed(other, maker, [_limit("BTC-USD", "sell", "10", "60")]))[0] is None
    direct = _signed(other, key, [NewOrderOp.parse("BTC-USD", "buy", "market", None, "50", None)], owner)
    assert _codes(other, direct) == ["over_notional_cap"]
    # one lot trades at 10: the last trade price crosses the trigger, the stop fires in that block
    assert _codes(other, _signed(other, taker, [_limit("BTC-USD", "buy", "10", "1")]))[0] is None
    stop_id = stop.order_id(0)

    def fired() -> dict | None:
        order = other.get(f"/orders/{stop_id}")["order"]
        return order if order["status"] not in ("untriggered", "pending", "open") else None
    order = wait_until(fired, 15, message="the stop fired")
    filled = Decimal(order["filled"]) if "filled" in order else Decimal(order["qty"]) - Decimal(order["remaining"])
    notional = filled * Decimal("10")
    assert notional <= 100, f"the agent capped at 100 USD bought {filled} at 10 ({notional} USD): {order}"


def test_an_agent_stays_in_its_account_markets_and_batch(pair, tmp_path: Path):
    owner_node, other = pair
    key, owner = _agent(owner_node, tmp_path / "scoped.json", "--markets", "BTC-USD", "--cap", "1000",
                        "--operations", "place,cancel,replace")
    victim = SigningKey(os.urandom(32))           # another account that never approved this key
    victim_order = _signed(other, victim, [_limit("BTC-USD", "buy", "5", "1")])
    assert _codes(other, victim_order)[0] is None
    eth_order = owner_node.cli("order", "buy", "ETH-USD", "1", "--price", "5", "--json")
    assert eth_order.returncode == 0, eth_order.stderr
    eth_id = json.loads(eth_order.stdout)["order"]["id"]
    before = {n.name: n.get(f"/accounts/{owner.hex()}") for n in pair}

    for node in pair:
        # another account in the for= line: the victim never approved this key
        for op in (_limit("BTC-USD", "buy", "4", "1"), CancelOp("BTC-USD", victim_order.order_id(0))):
            assert _codes(node, _signed(node, key, [op], victim.public_key)) == ["agent_not_approved"]
        # an atomic batch with one op outside the scope (another market) among in-scope ones: nothing runs
        batch = _signed(node, key, [AtomicOp(), _limit("BTC-USD", "buy", "41", "1"),
                                    _limit("ETH-USD", "buy", "4", "1"), _limit("BTC-USD", "buy", "42", "1")], owner)
        refused = _codes(node, batch)
        assert None not in refused and "market_not_allowed" in refused and \
            set(refused) <= {"market_not_allowed", "op_2_market_not_allowed", "batch_refused"}, refused
        # a replace that names the scope's market for the owner's order in another market
        replace = _signed(node, key, [ReplaceOp.parse("BTC-USD", eth_id, "6", "1")], owner)
        moved = _codes(node, replace)
        assert moved[0] in ("market_mismatch", "not_open", "unknown_order"), moved
        # a cancel of the victim's order signed by the agent for its own owner: not the owner's order
        assert _codes(node, _signed(node, key, [CancelOp("BTC-USD", victim_order.order_id(0))], owner)) == ["not_owner"]
    wait_until(lambda: converged(pair), 15, interval=0.2, message="one state on both nodes")
    for node in pair:
        assert node.get(f"/orders/{victim_order.order_id(0)}")["order"]["status"] == "open"
        assert node.get(f"/orders/{eth_id}")["order"]["status"] == "open"
        after = node.get(f"/accounts/{owner.hex()}")
        assert after.get("open_orders") == before[node.name].get("open_orders"), (after, before[node.name])



def test_an_approval_replayed_after_its_revoke_does_not_restore_the_agent(pair):
    owner_node, other = pair
    owner, agent = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))
    approve = _signed(other, owner, [ApproveAgentOp.parse(agent.public_key.hex(), "BTC-USD", "place", None, None)])
    assert _codes(other, approve)[0] is None
    # the agent's nonce equal to the owner's: two transactions with their own ids, both applied
    nonce = "shared-nonce-1"
    owners = _signed(other, owner, [_limit("BTC-USD", "buy", "3", "1")], nonce=nonce)
    placed = _signed(other, agent, [_limit("BTC-USD", "buy", "4", "1")], owner.public_key, nonce=nonce)
    assert owners.id != placed.id
    assert _codes(other, owners)[0] is None and _codes(other, placed)[0] is None
    for node in pair:
        wait_until(lambda: all(node.get(f"/orders/{tx.order_id(0)}")["order"]["status"] == "open"
                               for tx in (owners, placed)), 5, message="both orders open")
    revoke = _signed(other, owner, [RevokeAgentOp.parse(agent.public_key.hex())])
    assert _codes(other, revoke)[0] is None
    for node in pair:       # the captured approval sent again, to both nodes
        assert _codes(node, approve) == ["duplicate"], node.name
        late = _signed(node, agent, [_limit("BTC-USD", "buy", "31", "1")], owner.public_key)
        assert _codes(node, late) == ["agent_not_approved"]
        assert node.get(f"/agents?account={owner.public_key.hex()}")["agents"] == []


def test_a_strangers_copy_of_a_client_id_does_not_reach_the_owners_lookup_or_cancel(pair):
    """A stranger places an order with the same client id as the node's default account: the owner's client
    (the Python library with the node's token, no key of its own) finds and cancels its own order, and the
    stranger's stays open."""
    entry, other = pair
    stranger = SigningKey(os.urandom(32))
    copied = _signed(entry, stranger, [_limit("BTC-USD", "buy", "2", "1", client_id="desk-7")])
    assert _codes(entry, copied)[0] is None

    async def owner() -> tuple[list[dict], Any]:
        async with AsyncClient(entry.api_url, entry.api_token) as client:
            placed = await client.place("BTC-USD", "buy", "1", "3", client_id="desk-7")
            assert placed.final, placed.body
            found = await client.orders_by_client_id("desk-7")
            try:
                gone: Any = await client.cancel_by_client_id("desk-7")
            except ApiError as exc:
                gone = exc
            return found, gone
    found, gone = asyncio.run(owner())
    assert [o["account"] for o in found] == [entry.get("/accounts/default")["account"]], found
    assert not isinstance(gone, ApiError), f"the owner's cancel by client id failed: {gone}"
    wait_until(lambda: other.get(f"/orders/{copied.order_id(0)}")["order"]["status"] == "open", 5)


def test_an_atomic_batch_of_two_full_reduce_only_orders_is_refused_whole(pair):
    entry, _ = pair
    owner, maker, taker = (SigningKey(os.urandom(32)) for _ in range(3))
    assert _codes(entry, _signed(entry, maker, [_limit("ETH-USD", "sell", "50", "5")])) == [None]
    assert _codes(entry, _signed(entry, owner, [_limit("ETH-USD", "buy", "50", "5")])) == [None]     # long 5
    assert _codes(entry, _signed(entry, taker, [_limit("ETH-USD", "buy", "40", "100")])) == [None]
    close = NewOrderOp.parse("ETH-USD", "sell", "market", None, "5", None, reduce_only=True)
    batch = _signed(entry, owner, [AtomicOp(), close, close])
    codes = _codes(entry, batch)
    position = entry.get(f"/accounts/{owner.public_key.hex()}")["positions"]
    assert codes.count(None) in (0, len(codes)), f"part of an atomic batch applied: {codes}, position {position}"


def test_a_cancel_by_client_id_naming_another_account_is_refused_everywhere(pair):
    """A stranger asks each node to cancel, by client id, an order of an account none of them holds the key of,
    naming that account: 403 not_owner from every node, and the order stays open."""
    victim = SigningKey(os.urandom(32))
    placed = _signed(pair[0], victim, [_limit("BTC-USD", "buy", "2", "1", client_id="victim-1")])
    assert _codes(pair[0], placed) == [None]
    for node in pair:
        status, body = node.api("DELETE", f"/orders?client_id=victim-1&account={victim.public_key.hex()}&wait=2")
        assert (status, body["error"]["code"]) == (403, "not_owner"), (node.name, status, body)
    for node in pair:
        assert node.get(f"/orders/{placed.order_id(0)}")["order"]["status"] == "open"
