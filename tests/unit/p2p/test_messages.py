"""Compiled schema validators: the fast path accepts good messages, the slow path names the bad field."""
import pytest

from p2p import messages as m

TEST_SCHEMAS: m.SchemaTable = {
    "test_shape": m.schema({"a": m.is_str(3), "b": m.is_int()},
                           {"c": m.is_number, "d": m.custom(lambda v: v == 1), "e": m.is_list(2, m.is_node_id)})}
SCHEMAS = m.Schemas(TEST_SCHEMAS)


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
    assert SCHEMAS.checks["test_shape"](dict(message, type="test_shape")) == bad


def test_validate_raises_protocol_error_for_known_types_and_ignores_unknown():
    assert SCHEMAS.validate({"type": "test_shape", "a": "x", "b": 2}) is True
    assert SCHEMAS.validate({"type": "never-heard-of-it"}) is False
    with pytest.raises(m.ProtocolError) as info:
        SCHEMAS.validate({"type": "test_shape", "a": "x"})
    assert info.value.reason == "malformed_message" and info.value.detail == "test_shape.b"


def test_a_node_understands_only_what_its_components_declared():
    alone = m.Schemas()
    assert set(alone.types()) == set(m.LINK_SCHEMAS)          # the link protocol is always understood
    assert alone.validate({"type": "test_shape", "a": "x", "b": 2}) is False   # unknown here: ignored
    alone.add(TEST_SCHEMAS)
    alone.add(TEST_SCHEMAS)                                    # the same declaration again: no change
    assert alone.validate({"type": "test_shape", "a": "x", "b": 2}) is True
    with pytest.raises(ValueError, match="declared twice"):
        alone.add({"test_shape": m.schema({"a": m.is_int()})})
    assert "test_shape" not in m.Schemas()                     # one node's registry is not another's


def test_the_composition_root_assembles_every_layers_types():
    from config import load_settings
    from node.app import ExchangeNode
    from node.browser.service import RTC_SCHEMAS
    from node.chain_network import CHAIN_SCHEMAS
    from p2p.discovery.pex import PEX_SCHEMAS
    from p2p.nat.autonat import AUTONAT_SCHEMAS
    from p2p.nat.holepunch import HOLEPUNCH_SCHEMAS
    from p2p.nat.service import RELAY_SCHEMAS
    from p2p.routing.envelope import ROUTING_SCHEMAS
    from p2p.rpc.wire import RPC_SCHEMAS

    import tempfile
    with tempfile.TemporaryDirectory() as data_dir:
        node = ExchangeNode(load_settings(env={}, cli={"data_dir": data_dir, "p2p_host": "127.0.0.1"}))
        expected = {*m.LINK_SCHEMAS, *ROUTING_SCHEMAS, *RPC_SCHEMAS, *PEX_SCHEMAS, *CHAIN_SCHEMAS, *AUTONAT_SCHEMAS,
                    *RELAY_SCHEMAS, *HOLEPUNCH_SCHEMAS, *RTC_SCHEMAS}
        assert set(node.peers.schemas.types()) == expected
