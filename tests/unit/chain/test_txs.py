"""Signed transactions: the documented bytes, ids, strict parsing, and signatures that fail when anything moves."""
from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.crypto import SigningKey, verify
from exchange.app.txs import (CancelOp, GrantOp, InvalidTx, NewOrderOp, ReplaceOp, SignedTx, op_from_json, order_id,
                                sign_tx)

CHAIN = "ab" * 32
KEY = SigningKey(bytes(range(32)))


def make(ops=None, nonce="n-1", expires=1_700_000_000_000) -> SignedTx:
    ops = ops or [NewOrderOp.parse("BTC-USD", "buy", "limit", "100.25", "0.5", None)]
    return sign_tx(KEY.sign, KEY.public_key, CHAIN, nonce, expires, ops)


def test_signed_bytes_are_the_documented_text():
    tx = make([NewOrderOp.parse("BTC-USD", "sell", "ioc", None, "2", "cancel_both"),
               CancelOp.parse("BTC-USD", "00ff"), ReplaceOp.parse("ETH-USD", "abc", "3.5", "1")])
    assert tx.signed_bytes.decode() == "\n".join([
        "exchange-node/tx/v1", f"chain={CHAIN}", f"account={KEY.public_key.hex()}", "nonce=n-1",
        "expires=1700000000000", "new BTC-USD sell ioc - 2 cancel_both", "cancel BTC-USD 00ff",
        "replace ETH-USD abc 3.5 1"])
    assert verify(KEY.public_key, tx.sig, tx.signed_bytes)


def test_ids_follow_the_signed_bytes():
    tx = make()
    assert len(tx.id) == 32 and tx.order_id(0) == tx.id[:30] + "00" and order_id(tx.id, 17) == tx.id[:30] + "11"
    assert make(nonce="n-2").id != tx.id


def test_wire_and_json_round_trip_keep_the_signature():
    tx = make()
    for copy in (SignedTx.from_wire(tx.wire()), SignedTx.from_json(tx.as_json())):
        assert copy.id == tx.id and copy.signature_valid()


@pytest.mark.parametrize("field, value", [("nonce", "other"), ("expires", 1_700_000_000_001), ("chain_id", "cd" * 32)])
def test_any_changed_field_breaks_the_signature(field, value):
    data: Any = make().as_json()       # JSON to tamper with
    data[field] = value
    assert not SignedTx.from_json(data).signature_valid()


def test_a_changed_op_breaks_the_signature():
    data: Any = make().as_json()
    data["ops"][0]["price"] = "100.26"
    assert not SignedTx.from_json(data).signature_valid()


def test_another_key_cannot_sign_for_an_account():
    other = SigningKey(os.urandom(32))
    tx = sign_tx(other.sign, KEY.public_key, CHAIN, "n", 1, [CancelOp.parse("BTC-USD", "x")])
    assert not tx.signature_valid()


@pytest.mark.parametrize("bad, code", [
    ({"nonce": "has space"}, "invalid_nonce"), ({"nonce": ""}, "invalid_nonce"), ({"expires": 0}, "invalid_expires"),
    ({"expires": 2 ** 53}, "invalid_expires"), ({"expires": 1.5}, "invalid_expires"),
    ({"chain_id": "AB" * 32}, "invalid_chain_id"),
    ({"account": "zz" * 32}, "invalid_account"), ({"sig": "00"}, "invalid_sig"), ({"ops": []}, "invalid_ops"),
    ({"ops": [{"op": "nope"}]}, "invalid_op"), ({"ops": [{"op": "new", "market": "btc-usd", "side": "buy",
                                                         "type": "limit", "price": "1", "qty": "1"}]}, "invalid_market"),
    ({"ops": [{"op": "new", "market": "BTC-USD", "side": "buy", "type": "limit", "price": "1e5", "qty": "1"}]}, "invalid_price"),
    ({"ops": [{"op": "new", "market": "BTC-USD", "side": "up", "type": "limit", "price": "1", "qty": "1"}]}, "invalid_side"),
    ({"ops": [{"op": "cancel", "market": "BTC-USD", "order_id": "a b"}]}, "invalid_order_id"),
    ({"ops": [{"op": "new"}] * 251}, "invalid_ops"),
])
def test_format_errors_name_the_problem(bad, code):
    data = make().as_json() | bad
    with pytest.raises(InvalidTx) as exc:
        SignedTx.from_json(data)
    assert exc.value.code == code


def test_newlines_cannot_smuggle_an_extra_op_into_the_signed_text():
    with pytest.raises(InvalidTx):
        op_from_json({"op": "cancel", "market": "BTC-USD", "order_id": "x\nnew BTC-USD buy market - 1 -"})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(), st.binary(max_size=70), st.text(max_size=70),
                          st.lists(st.text(max_size=5), max_size=8)), min_size=0, max_size=8))
def test_arbitrary_wire_data_is_parsed_or_refused_never_crashes(data):
    try:
        SignedTx.from_wire(data)
    except InvalidTx:
        pass


def test_a_grant_op_has_documented_bytes_and_round_trips():
    account = "cd" * 32
    tx = make([GrantOp.parse(account, "USD", "2500.5")])
    assert tx.signed_bytes.decode().endswith(f"\ngrant {account} USD 2500.5")
    for copy in (SignedTx.from_wire(tx.wire()), SignedTx.from_json(tx.as_json())):
        assert copy.id == tx.id and copy.signature_valid()
        grant = copy.ops[0]
        assert isinstance(grant, GrantOp)
        assert (grant.account, grant.asset, grant.limit) == (account, "USD", "2500.5")


@pytest.mark.parametrize("op, code", [
    ({"op": "grant", "account": "CD" * 32, "asset": "USD", "limit": "1"}, "invalid_account"),
    ({"op": "grant", "account": "cd" * 31, "asset": "USD", "limit": "1"}, "invalid_account"),
    ({"op": "grant", "account": "cd" * 32, "asset": "usd", "limit": "1"}, "invalid_asset"),
    ({"op": "grant", "account": "cd" * 32, "asset": "USD", "limit": "-1"}, "invalid_limit"),
    ({"op": "grant", "account": "cd" * 32, "asset": "USD"}, "invalid_limit"),
    ({"op": "grant", "account": "cd" * 32, "asset": "USD", "limit": "1 new BTC-USD"}, "invalid_limit"),
])
def test_grant_format_errors_name_the_problem(op, code):
    with pytest.raises(InvalidTx) as exc:
        SignedTx.from_json(make().as_json() | {"ops": [op]})
    assert exc.value.code == code


def test_a_checked_signature_vouches_only_for_its_own_transaction():
    """The mempool's memory of checked signatures is keyed by content and signature together: the same id
    with other signature bytes, or another transaction carrying a checked signature, is checked again."""
    from exchange.chain.mempool.pool import Mempool

    pool = Mempool()
    good = make()
    pool.remember_verified(good)
    assert pool.is_verified(good)
    bad_sig = SignedTx(good.chain_id, good.account, good.nonce, good.expires, good.ops, bytes(64))
    assert bad_sig.id == good.id and not pool.is_verified(bad_sig)
    other = make(nonce="other")
    stolen = SignedTx(other.chain_id, other.account, other.nonce, other.expires, other.ops, good.sig)
    assert not pool.is_verified(stolen) and not stolen.signature_valid()
