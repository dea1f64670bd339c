"""Compiled schema validators: the fast path accepts good messages, the slow path names the bad field."""
import pytest

from p2p import messages as m

m.register_schema("test_shape", {"a": m.is_str(3), "b": m.is_int()},
                  {"c": m.is_number, "d": m.custom(lambda v: v == 1), "e": m.is_list(2, m.is_node_id)})


@pytest.mark.parametrize("message, bad", [
    ({"a": "x", "b": 1}, None),
    ({"b": 1}, "a"),
    ({"a": "xxxx", "b": 1}, "a"),
    ({"a": "x"}, "b"),
    ({"a": "x", "b": -1}, "b"),
    ({"a": "x", "b": True}, "b"),           # bool is not an int here
    ({"a": "x", "b": 1, "c": "no"}, "c"),
    ({"a": "x", "b": 1, "c": 2.5, "d": 1}, None),
    ({"a": "x", "b": 1, "d": 2}, "d"),
    ({"a": "x", "b": 1, "e": ["f" * 40]}, None),
    ({"a": "x", "b": 1, "e": ["f" * 40] * 3}, "e"),
    ({"a": "x", "b": 1, "e": ["short"]}, "e"),
    ({"a": None, "b": 1}, "a"),
])
def test_validator_names_the_first_bad_field(message, bad):
    assert m.schema_for("test_shape")(dict(message, type="test_shape")) == bad


def test_validate_raises_protocol_error_for_known_types_and_ignores_unknown():
    assert m.validate({"type": "test_shape", "a": "x", "b": 2}) is True
    assert m.validate({"type": "never-heard-of-it"}) is False
    with pytest.raises(m.ProtocolError) as info:
        m.validate({"type": "test_shape", "a": "x"})
    assert info.value.reason == "malformed_message" and info.value.detail == "test_shape.b"
