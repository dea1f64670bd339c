"""Every refusal of a number says what is wrong and what is allowed: a negative price or quantity, a
float where a decimal string belongs, an exponent, an empty string; through the node-signed body and through a
signed transaction (as the client libraries send one)."""
from __future__ import annotations

import pytest

from exchange.app.txs import InvalidTx, NewOrderOp, ReplaceOp
from tests.unit.node.test_api_orders import GOOD, Harness


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("refusals"))
    yield harness
    harness.close()


@pytest.mark.parametrize("field, value, code, says", [
    ("price", "-1", "invalid_price", 'price must be greater than zero, not "-1"'),
    ("qty", "-0.5", "invalid_qty", 'qty must be greater than zero, not "-0.5"'),
    ("price", "0", "zero", "price must be greater than zero"),
    ("price", 100.25, "float_not_allowed", 'price must be a decimal string like "100.25", not a JSON number'),
    ("qty", 1.5, "float_not_allowed", 'qty must be a decimal string like "0.5", not a JSON number'),
    ("price", "1e3", "invalid_price", 'price "1e3" is not a decimal string like "100.25" (digits with at most one '
                                      'point: no sign, exponent or spaces)'),
    ("qty", "", "invalid_qty", 'qty is empty: send a decimal string like "0.5"'),
    ("qty", True, "invalid_qty", 'qty must be a decimal string like "0.5", not true'),
])
def test_a_refused_number_says_what_is_wrong_and_what_is_allowed(api, field, value, code, says):
    status, body = api.request("POST", "/orders", {**GOOD, field: value})
    assert status == 422, body
    assert body["error"] == {"code": code, "message": says, "field": field}
    assert "bad value" not in body["error"]["message"]


@pytest.mark.parametrize("price, qty, field, says", [
    (100.25, "1", "price", 'price must be a decimal string like "100.25", not a JSON number'),
    ("100", 2, "qty", 'qty must be a decimal string like "0.5", not a JSON number'),
    ("-3", "1", "price", 'price must be greater than zero, not "-3"'),
    ("1" * 25, "1", "price", f'price "{"1" * 25}" has more than 24 digits before or after the point'),
])
def test_a_signed_transactions_numbers_are_refused_in_words(price, qty, field, says):
    for parse in (lambda: NewOrderOp.parse("BTC-USD", "buy", "limit", price, qty, None),
                  lambda: ReplaceOp.parse("BTC-USD", "ab12", price, qty)):
        with pytest.raises(InvalidTx) as refused:
            parse()
        assert (refused.value.code, str(refused.value), refused.value.field) == (f"invalid_{field}", says, field)
