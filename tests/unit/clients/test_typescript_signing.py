"""The TypeScript client library signs what every node checks, byte for byte, for every operation kind."""
from __future__ import annotations

import pytest

from exchange.app.txs import NewOrderOp, SignedTx
from tests.typescript_client import needs_build, run

pytestmark = [pytest.mark.process, needs_build]
CHAIN = "ab" * 32


def test_every_operation_signed_in_typescript_verifies_at_the_node():
    signed = run("sign", "07" * 32, CHAIN)
    for tx in [*signed["each"], signed["all"]]:
        parsed = SignedTx.from_json(tx)
        assert parsed.signature_valid(), tx["ops"]
        assert parsed.account.hex() == signed["account"]
    together = SignedTx.from_json(signed["all"])
    named, stop = together.ops[2], together.ops[3]
    assert len(together.ops) == 9 and isinstance(named, NewOrderOp) and named.client_id == "desk-1_x"
    assert isinstance(stop, NewOrderOp) and stop.trigger == "95.5" and stop.reduce_only
    agent = SignedTx.from_json(signed["agent"])
    assert agent.signature_valid() and agent.acting_for is not None and agent.acting_for.hex() == signed["account"]
    assert [op.name for op in agent.ops] == ["new", "approve_agent", "revoke_agent"]
