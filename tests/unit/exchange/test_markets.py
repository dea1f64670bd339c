"""Markets: the MARKETS setting, exact decimal <-> tick/lot conversion, and typed rejections with reason codes."""
from __future__ import annotations

import pytest

from exchange.errors import InvalidMarketSpec, InvalidPrice, InvalidQuantity, UnknownMarket
from exchange.markets import Market, parse_markets
from exchange.orders import SelfTradeMode
from exchange.units import MAX_DECIMAL_CHARS


@pytest.fixture
def btc() -> Market:
    return parse_markets(None).get("BTC-USD")


def test_default_setting_is_btc_usd_with_documented_defaults(btc: Market) -> None:
    assert parse_markets("").symbols == ["BTC-USD"]
    assert (btc.base, btc.quote, btc.tick.text, btc.lot.text) == ("BTC", "USD", "0.01", "0.0001")
    assert (btc.min_lots, btc.max_lots) == (1, 1_000_000 * 10_000)
    assert (btc.min_ticks, btc.max_ticks) == (1, 1_000_000_000 * 100)
    assert btc.self_trade_mode is SelfTradeMode.CANCEL_NEWEST


def test_full_spec_with_empty_fields_meaning_default() -> None:
    registry = parse_markets(" BTC-USD , eth-usd:0.05:0.001:0.01:500::20000:cancel_both ")
    assert registry.symbols == ["BTC-USD", "ETH-USD"]
    eth = registry.get("ETH-USD")
    assert (eth.tick.text, eth.lot.text) == ("0.05", "0.001")
    assert (eth.min_lots, eth.max_lots, eth.min_ticks, eth.max_ticks) == (10, 500_000, 1, 400_000)
    assert eth.self_trade_mode is SelfTradeMode.CANCEL_BOTH
    assert "ETH-USD" in registry and len(registry) == 2 and [m.symbol for m in registry] == registry.symbols


@pytest.mark.parametrize("spec, code", [
    ("BTC", "invalid_symbol"),
    ("BTC-USD:0.01", "wrong_field_count"),
    ("BTC-USD:0.01:0.1:1:2:3:4:cancel_newest:extra", "wrong_field_count"),
    ("BTC-USD,,ETH-USD", "empty_entry"),
    ("BTC-USD,BTC-USD", "duplicate_market"),
    ("BTC-USD:0:0.1", "zero"),
    ("BTC-USD:-0.01:0.1", "negative"),
    ("BTC-USD:abc:0.1", "malformed"),
    ("BTC-USD:0.01:0.1:0.05:10", "not_a_multiple"),
    ("BTC-USD:0.01:0.1:10:1", "min_above_max"),
    ("BTC-USD:0.01:0.1:1:10:5:1", "min_above_max"),
    ("BTC-USD:0.01:0.1:1:10:1:100:sometimes", "invalid_self_trade_mode"),
])
def test_bad_spec_raises_typed_error_naming_the_problem(spec: str, code: str) -> None:
    with pytest.raises(InvalidMarketSpec) as caught:
        parse_markets(spec)
    assert caught.value.code == code
    assert caught.value.message


def test_unknown_market_is_typed() -> None:
    with pytest.raises(UnknownMarket) as caught:
        parse_markets(None).get("DOGE-USD")
    assert caught.value.code == "unknown_market" and caught.value.field == "market"


@pytest.mark.parametrize("text, ticks", [("100.05", 10005), ("100", 10000), ("100.050000", 10005),
                                         ("0.01", 1), (7, 700), ("000123.40", 12340)])
def test_prices_parse_exactly(btc: Market, text: object, ticks: int) -> None:
    assert btc.parse_price(text) == ticks


@pytest.mark.parametrize("text, lots", [("0.0001", 1), ("1.5", 15000), ("2", 20000), (3, 30000)])
def test_quantities_parse_exactly(btc: Market, text: object, lots: int) -> None:
    assert btc.parse_qty(text) == lots


def test_formatting_round_trips_with_fixed_decimals(btc: Market) -> None:
    assert btc.format_price(10005) == "100.05"
    assert btc.format_price(1) == "0.01"
    assert btc.format_price(10000) == "100.00"
    assert btc.format_qty(1) == "0.0001"
    assert btc.format_qty(15000) == "1.5000"
    for ticks in (1, 9, 10, 99, 100, 123456789):
        assert btc.parse_price(btc.format_price(ticks)) == ticks


def test_non_decimal_steps_format_and_parse() -> None:
    market = parse_markets("X-Y:0.25:5:5:1000:0.25:100").get("X-Y")
    assert market.parse_price("1.75") == 7 and market.format_price(7) == "1.75"
    assert market.parse_qty("15") == 3 and market.format_qty(3) == "15"
    with pytest.raises(InvalidQuantity) as caught:
        market.parse_qty("12")
    assert caught.value.code == "qty_not_multiple_of_lot"


@pytest.mark.parametrize("value, code", [
    ("100.001", "price_not_multiple_of_tick"),
    ("-1", "negative"), (-5, "negative"),
    ("0", "zero"), ("0.00", "zero"), ("-0", "zero"), (0, "zero"),
    ("NaN", "not_a_number"), ("nan", "not_a_number"), ("sNaN", "not_a_number"),
    ("inf", "not_finite"), ("-Infinity", "not_finite"),
    (100.5, "float_not_allowed"), (float("nan"), "float_not_allowed"),
    (True, "invalid_type"), (None, "invalid_type"), (b"1", "invalid_type"), ([1], "invalid_type"),
    ("1e3", "malformed"), (" 1", "malformed"), ("1,5", "malformed"), ("+1", "malformed"), (".5", "malformed"),
    ("1.", "malformed"), ("\u0661", "malformed"), ("", "empty"),
    ("1" * (MAX_DECIMAL_CHARS + 1), "too_long"),
    ("1000000000.01", "price_above_band"),
])
def test_bad_prices_are_rejected_with_a_code(btc: Market, value: object, code: str) -> None:
    with pytest.raises(InvalidPrice) as caught:
        btc.parse_price(value)
    assert (caught.value.code, caught.value.field) == (code, "price")
    assert caught.value.to_dict()["code"] == code


def test_price_below_band() -> None:
    market = parse_markets("X-Y:0.01:1:1:100:10:20").get("X-Y")
    with pytest.raises(InvalidPrice) as caught:
        market.parse_price("9.99")
    assert caught.value.code == "price_below_band"


@pytest.mark.parametrize("value, code", [
    ("0.00015", "qty_not_multiple_of_lot"), ("1000000.0001", "qty_above_max"), (2.0, "float_not_allowed"),
    ("0", "zero"), ("-0.0001", "negative"), ("abc", "malformed"),
])
def test_bad_quantities_are_rejected_with_a_code(btc: Market, value: object, code: str) -> None:
    with pytest.raises(InvalidQuantity) as caught:
        btc.parse_qty(value)
    assert (caught.value.code, caught.value.field) == (code, "qty")


def test_quantity_below_min() -> None:
    market = parse_markets("X-Y:0.01:0.1:1:100").get("X-Y")
    with pytest.raises(InvalidQuantity) as caught:
        market.parse_qty("0.9")
    assert caught.value.code == "qty_below_min"
