"""Snapshots from peers are untrusted: anything malformed, non-canonical, unbalanced or made under other
rules is refused with InvalidStateSnapshot, and no byte string makes restore fail any other way."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.app import ExchangeParams, ExchangeState, InvalidStateSnapshot
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, Workload

PARAMS = ExchangeParams(MARKETS, closed_order_history=100, trade_history=20, credit_limits={"USD": "50"})


def busy_state() -> ExchangeState:
    chain = Chain(ExchangeState(PARAMS, CHAIN))
    for block in Workload(seed=5, accounts=5).blocks(300, per_block=30):
        chain.block(block)
    return chain.state


SNAPSHOT = busy_state().snapshot()
BODY = msgpack.unpackb(SNAPSHOT, raw=False)


def repack(change) -> bytes:
    body = msgpack.unpackb(SNAPSHOT, raw=False)
    change(body)
    return msgpack.packb(body, use_bin_type=True)


def refused(data: bytes, params: ExchangeParams = PARAMS, chain_id: str | None = CHAIN) -> str:
    with pytest.raises(InvalidStateSnapshot) as error:
        ExchangeState.restore(params, data, chain_id)
    return error.value.code


def test_the_busy_state_has_every_part_filled():
    assert all(BODY[6]) and BODY[7] and any(BODY[8]) and BODY[9] and BODY[11]
    assert BODY[0] == 2 and BODY[12][0] and BODY[12][1]       # a switch armed and a good-til-time order rest


def test_a_snapshot_restores_to_the_same_bytes():
    assert ExchangeState.restore(PARAMS, SNAPSHOT, CHAIN).snapshot() == SNAPSHOT


def test_a_snapshot_of_a_fresh_state_restores():
    fresh = ExchangeState(PARAMS, CHAIN).snapshot()
    assert ExchangeState.restore(PARAMS, fresh, CHAIN).snapshot() == fresh


@pytest.mark.parametrize("data, code", [
    (b"", "malformed_snapshot"), (SNAPSHOT[:-1], "malformed_snapshot"), (SNAPSHOT + b"\x00", "malformed_snapshot"),
    (b"\xc1", "malformed_snapshot"), (msgpack.packb([1, 2, 3]), "malformed_snapshot"),
    (msgpack.packb({"format": 1}), "malformed_snapshot"),
])
def test_garbage_is_refused(data, code):
    assert refused(data) == code


def test_other_params_and_other_chains_are_refused():
    assert refused(SNAPSHOT, ExchangeParams(MARKETS)) == "params_mismatch"
    assert refused(SNAPSHOT, chain_id="cd" * 32) == "chain_mismatch"


def swap_first_two(rows: list) -> None:
    rows[0], rows[1] = rows[1], rows[0]


@pytest.mark.parametrize("change, code", [
    (lambda b: b.__setitem__(0, 1), "unsupported_snapshot"),       # 13 items are format 2
    (lambda b: b.__setitem__(0, 3), "unsupported_snapshot"),
    (lambda b: b.pop(), "unsupported_snapshot"),                   # format 2 needs its timers
    (lambda b: b[12][0].append(["z" * 64, 1]), "malformed_snapshot"),         # a switch already due
    (lambda b: b[12][1].reverse(), "non_canonical"),
    (lambda b: b[12].append([]), "malformed_snapshot"),
    (lambda b: b.__setitem__(3, -1), "malformed_snapshot"),
    (lambda b: b.__setitem__(5, b"short"), "malformed_snapshot"),
    (lambda b: b[6].pop(), "malformed_snapshot"),
    (lambda b: b[6][0]["asks"][0][1][0].__setitem__(3, 0), "malformed_snapshot"),        # remaining 0
    (lambda b: b[6][0]["asks"][0][1][0].__setitem__(5, [10 ** 9, 0, 0]), "malformed_snapshot"),  # future key
    (lambda b: b[7].append(b[7][0]), "malformed_snapshot"),                             # a closed id twice
    (lambda b: b[7][0].__setitem__(10, "open"), "malformed_snapshot"),
    (lambda b: b[7][0].__setitem__(2, "up"), "malformed_snapshot"),
    (lambda b: b[7].extend([b[7][0][:]] * 200), "malformed_snapshot"),                # beyond the history limit
    (lambda b: b[8][0].__setitem__(0, b[8][0][0][:9]), "malformed_snapshot"),
    (lambda b: b[9][0][1][0].__setitem__(1, b[9][0][1][0][1] + 1), "positions_unbalanced"),
    (lambda b: b[9][0][1].append(["XRP", 1]), "malformed_snapshot"),
    (lambda b: swap_first_two(b[9]), "non_canonical"),
    (lambda b: b.__setitem__(10, None), "malformed_snapshot"),   # credit is on: grants must be a list
    (lambda b: b[11][0][1].append("not a tx id"), "malformed_snapshot"),
    (lambda b: b[11][0][1].append(b[11][0][1][0]), "non_canonical"),
    (lambda b: b[11][0][1].reverse(), "non_canonical"),
])
def test_malformed_or_non_canonical_parts_are_refused(change, code):
    assert refused(repack(change)) == code


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_corruption_makes_restore_fail_any_other_way(data):
    snapshot = bytearray(SNAPSHOT)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(snapshot) - 1))
        snapshot[position] = data.draw(st.integers(0, 255))
    try:
        restored = ExchangeState.restore(PARAMS, bytes(snapshot), CHAIN)
    except InvalidStateSnapshot:
        return
    assert restored.snapshot() == bytes(snapshot)   # accepted only when it is itself canonical


def test_positions_beyond_64_bits_still_snapshot_and_restore():
    """A position is the sum of every fill and Python's ints do not overflow: a few trades of the largest
    size at the largest price must not make the state unwritable (msgpack stops at 64 bits)."""
    from exchange.crypto import SigningKey
    from exchange.app import ExchangeParams, ExchangeState
    from exchange.app.txs import NewOrderOp, sign_tx

    chain_id = "ab" * 32
    params = ExchangeParams(markets="BTC-USD", order_ttl_ms=100_000)
    state = ExchangeState(params, chain_id)
    seller, buyer = SigningKey(bytes(32)), SigningKey(bytes([1]) * 32)
    for i in range(1, 61):
        state.begin_block(i, 1000 + i)
        state.apply_tx(sign_tx(seller.sign, seller.public_key, chain_id, f"s{i}", 50_000,
                               [NewOrderOp.parse("BTC-USD", "sell", "limit", "1000000000", "1000000", None)]))
        state.apply_tx(sign_tx(buyer.sign, buyer.public_key, chain_id, f"b{i}", 50_000,
                               [NewOrderOp.parse("BTC-USD", "buy", "market", None, "1000000", None)]))
        state.end_block()
    assert state.position(seller.public_key.hex())["positions"]["USD"] == "60000000000000000.000000"
    data = state.snapshot()
    copy = ExchangeState.restore(params, data, chain_id)
    assert copy.snapshot() == data and copy.app_hash == state.app_hash


def test_the_collector_is_paused_while_a_snapshot_is_encoded_and_left_as_it_was(monkeypatch):
    import gc

    import exchange.app.snapshot as snapshot_module

    state = ExchangeState.restore(PARAMS, SNAPSHOT, CHAIN)
    seen: list[bool] = []
    encode = snapshot_module._encode_state

    def watched(encoded: ExchangeState) -> list[bytes]:
        seen.append(gc.isenabled())
        return encode(encoded)
    monkeypatch.setattr(snapshot_module, "_encode_state", watched)
    assert gc.isenabled() and state.snapshot() == SNAPSHOT and gc.isenabled()
    gc.disable()
    try:
        assert state.snapshot() == SNAPSHOT and not gc.isenabled(), "a caller's own pause is left in place"
    finally:
        gc.enable()
    assert seen == [False, False]
