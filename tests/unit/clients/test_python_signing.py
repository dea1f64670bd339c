"""The Python client library signs what every node checks, byte for byte, for every operation; its nonces never
repeat, across restarts too."""
from __future__ import annotations

import json
import time
from typing import Any

from exchange.app.txs import SignedTx
from exchange_node_client import AsyncClient, NonceSource, Signer, signed_text, tx_id

CHAIN = "ab" * 32
OPS: list[dict[str, Any]] = [
    {"op": "new", "market": "BTC-USD", "side": "buy", "type": "limit", "price": "100.25", "qty": "0.5", "stp": None},
    {"op": "new", "market": "BTC-USD", "side": "sell", "type": "market", "price": None, "qty": "1", "stp": "cancel_both"},
    {"op": "new", "market": "ETH-USD", "side": "buy", "type": "post_only", "price": "5", "qty": "2", "stp": None,
     "until": 1_800_000_000_000},
    {"op": "new", "market": "BTC-USD", "side": "buy", "type": "limit", "price": "1", "qty": "1", "stp": None,
     "client_id": "desk_7-a"},
    {"op": "new", "market": "BTC-USD", "side": "buy", "type": "limit", "price": "1", "qty": "1", "stp": None,
     "until": 1_800_000_000_000, "client_id": "Z"},
    {"op": "new", "market": "BTC-USD", "side": "buy", "type": "stop_limit", "price": "101", "qty": "1", "stp": None,
     "trigger_price": "100.5"},
    {"op": "new", "market": "BTC-USD", "side": "sell", "type": "take_profit", "price": None, "qty": "1", "stp": None,
     "client_id": "tp", "trigger_price": "120", "reduce_only": True},
    {"op": "cancel", "market": "BTC-USD", "order_id": "ab" * 15 + "00"},
    {"op": "replace", "market": "BTC-USD", "order_id": "cd" * 15 + "01", "price": "99", "qty": "0.25"},
    {"op": "cancel_all", "market": None, "side": "sell"},
    {"op": "cancel_all", "market": "BTC-USD", "side": None},
    {"op": "schedule_cancel", "at": 1_800_000_000_000},
    {"op": "schedule_cancel", "at": None},
]


def test_every_operation_signs_to_the_nodes_bytes_and_ids():
    signer = Signer.generate()
    for ops in ([op] for op in OPS):
        signed = signer.sign(CHAIN, ops)
        tx = SignedTx.from_json(signed)
        assert tx.signature_valid(), ops
        text = signed_text(CHAIN, signer.account, signed["nonce"], signed["expires"], ops)
        assert text == tx.signed_bytes and tx_id(text) == tx.id
    together = signer.sign(CHAIN, OPS)
    tx = SignedTx.from_json(together)
    assert tx.signature_valid() and AsyncClient.order_ids(together) == [tx.order_id(i) for i in range(len(OPS))]


def test_an_agent_key_signs_for_its_account_and_the_agent_ops_sign_to_the_nodes_bytes(tmp_path):
    owner = Signer.generate()
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"seed": "09" * 32, "account": owner.account}))
    agent = Signer.agent_from_file(path)
    ops: list[dict[str, Any]] = [OPS[0], {"op": "approve_agent", "agent": agent.account, "markets": "BTC-USD,ETH-USD",
                                          "operations": "place,cancel", "cap": "1000", "expires": 1_800_000_000_000},
                                 {"op": "approve_agent", "agent": agent.account, "markets": None, "operations": "place",
                                  "cap": None, "expires": None}, {"op": "revoke_agent", "agent": agent.account}]
    tx = SignedTx.from_json(agent.sign(CHAIN, ops))
    assert tx.signature_valid() and tx.acting_for is not None and tx.acting_for.hex() == owner.account
    assert agent.trades_for == owner.account and tx.account.hex() == agent.account
    assert SignedTx.from_json(owner.sign(CHAIN, ops)).acting_for is None
    batch = SignedTx.from_json(owner.sign(CHAIN, [{"op": "atomic"}, OPS[0], OPS[7]]))
    assert batch.signature_valid() and [op.name for op in batch.ops] == ["atomic", "new", "cancel"]


def test_a_tampered_transaction_does_not_verify():
    signed = Signer.generate().sign(CHAIN, OPS[:1])
    signed["ops"] = [{**signed["ops"][0], "qty": "5"}]
    assert not SignedTx.from_json(signed).signature_valid()


def test_nonces_only_go_up_across_restarts(tmp_path, monkeypatch):
    path = tmp_path / "nonce"
    first = NonceSource(path)
    issued = [first.next() for _ in range(1000)]
    assert len(set(issued)) == 1000
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now - 10**12)      # the clock stepped back a quarter hour
    again = NonceSource(path)
    later = [again.next() for _ in range(10)]
    assert all(int(n[1:]) > int(issued[-1][1:]) for n in later) and not set(later) & set(issued)
