"""ExchangeParams: validated on construction, canonical on the wire, the same rules whatever the spelling."""
from __future__ import annotations

import msgpack
import pytest

from exchange.app import ExchangeParams, InvalidParams

AUTHORITY = "ab" * 32


def test_equivalent_spellings_found_the_same_network():
    short = ExchangeParams("BTC-USD, ETH-USD:0.01:0.001", credit_limits={"USD": "100"})
    long = ExchangeParams("BTC-USD:0.01:0.0001:0.0001:1000000:0.01:1000000000:cancel_newest,ETH-USD:0.01:0.001",
                          credit_limits={"USD": "100.000"})
    assert short.to_wire() == long.to_wire() and short.digest() == long.digest()
    assert ExchangeParams("BTC-USD").digest() != ExchangeParams("BTC-USD", order_ttl_ms=60_000).digest()


def test_wire_round_trip_and_canonical_bytes():
    params = ExchangeParams("BTC-USD,ETH-BTC:0.00001:0.001", order_ttl_ms=30_000, closed_order_history=7,
                            trade_history=9, credit_limits={"BTC": "0.5", "USD": "10"}, credit_authority=AUTHORITY)
    wire = params.to_wire()
    again = ExchangeParams.from_wire(msgpack.unpackb(msgpack.packb(wire)))
    assert again.to_wire() == wire and again.digest() == params.digest()
    assert list(wire) == sorted(wire) and wire["credit_limits"] == {"BTC": "0.50000000", "USD": "10.000000"}


def test_asset_scales_are_the_finest_any_market_needs():
    params = ExchangeParams("BTC-USD,ETH-BTC:0.00001:0.001")
    assert params.assets.scales == {"BTC": 8, "ETH": 3, "USD": 6}
    units = params.assets.markets["BTC-USD"]
    assert (units.base_unit, units.quote_unit) == (10_000, 1)   # 1 lot = 0.0001 BTC; 1 tick x 1 lot = 0.000001 USD


def test_the_rules_cannot_be_changed_after_founding():
    params = ExchangeParams("BTC-USD", credit_limits={"USD": "1"})
    with pytest.raises(TypeError):
        params.credit_limits["USD"] = "1000"   # type: ignore[index]
    with pytest.raises(AttributeError):
        params.order_ttl_ms = 1   # type: ignore[misc]


@pytest.mark.parametrize("kwargs, code", [
    ({"markets": "BTC-USD:0"}, "wrong_field_count"),
    ({"order_ttl_ms": 0}, "invalid_order_ttl_ms"),
    ({"order_ttl_ms": 10 ** 9}, "invalid_order_ttl_ms"),
    ({"order_ttl_ms": 1.5}, "invalid_order_ttl_ms"),
    ({"closed_order_history": -1}, "invalid_closed_order_history"),
    ({"trade_history": True}, "invalid_trade_history"),
    ({"credit_limits": {"XRP": "1"}}, "unknown_asset"),
    ({"credit_limits": {"USD": "0.0000001"}}, "too_precise"),
    ({"credit_limits": {"USD": "-1"}}, "negative"),
    ({"credit_limits": ["USD"]}, "invalid_credit_limits"),
    ({"credit_authority": AUTHORITY}, "credit_disabled"),
    ({"credit_limits": {}, "credit_authority": "AB" * 32}, "invalid_credit_authority"),
])
def test_bad_params_are_refused_with_a_code(kwargs, code):
    with pytest.raises(InvalidParams) as error:
        ExchangeParams(**({"markets": "BTC-USD"} | kwargs))
    assert error.value.code == code


@pytest.mark.parametrize("change", [
    lambda w: w.pop("format"), lambda w: w.update(format=1), lambda w: w.update(format=2),
    lambda w: w.update(extra=1), lambda w: w.update(max_open_orders=None), lambda w: w.update(max_open_orders=0),
    lambda w: w.update(fresh_order_ttl_ms=None), lambda w: w.update(fresh_order_ttl_ms=0),
    lambda w: w.update(markets=7), lambda w: w.update(credit_limits={1: "2"}),
])
def test_malformed_wire_params_are_refused(change):
    wire = ExchangeParams("BTC-USD", credit_limits={}).to_wire()
    change(wire)
    with pytest.raises(InvalidParams):
        ExchangeParams.from_wire(wire)
    with pytest.raises(InvalidParams):
        ExchangeParams.from_wire("not a map")


def test_a_network_without_an_open_order_cap_keeps_format_1_and_its_genesis_digest():
    uncapped = ExchangeParams("BTC-USD", max_open_orders=None, fresh_order_ttl_ms=None)
    wire = uncapped.to_wire()
    assert wire["format"] == 1 and "max_open_orders" not in wire
    assert ExchangeParams.from_wire(wire).digest() == uncapped.digest()
    capped = ExchangeParams("BTC-USD", fresh_order_ttl_ms=None)
    assert capped.to_wire()["format"] == 2 and capped.to_wire()["max_open_orders"] == 1000
    assert ExchangeParams.from_wire(capped.to_wire()).max_open_orders == 1000
    assert list(capped.to_wire()) == sorted(capped.to_wire())      # canonical: keys in order
    assert capped.digest() != uncapped.digest()


def test_a_network_with_an_expiry_for_fresh_accounts_orders_writes_format_3():
    fresh = ExchangeParams("BTC-USD")
    wire = fresh.to_wire()
    assert wire["format"] == 3 and wire["fresh_order_ttl_ms"] == 60_000 and wire["max_open_orders"] == 1000
    assert ExchangeParams.from_wire(wire).digest() == fresh.digest()
    alone = ExchangeParams("BTC-USD", max_open_orders=None).to_wire()
    assert alone["format"] == 3 and "max_open_orders" not in alone
    assert ExchangeParams.from_wire(alone).fresh_order_ttl_ms == 60_000
    assert fresh.digest() != ExchangeParams("BTC-USD", fresh_order_ttl_ms=None).digest()
