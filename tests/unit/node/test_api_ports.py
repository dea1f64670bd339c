"""The control API's view of the chain: refusals mapped in one place, and no route reaching past the two ports."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from exchange.chain.api_ports import Finality, Refusal, Refused
from node.api.orders import REFUSAL_HTTP, refused

API = Path(__file__).resolve().parents[3] / "node" / "api"
# the chain service's insides a route must not reach (they are the ports' to read)
INSIDES = {"state", "core", "genesis", "submissions", "store", "seats", "tokens", "commit_log", "order_ttl_ms"}
# routes that still read the chain service itself: the state proofs need the state's commitment maps and the block
# listeners, which the read port does not carry yet
NOT_ON_THE_PORTS = {"proofs.py"}


def test_every_refusal_has_its_status_and_the_code_is_kept() -> None:
    assert set(REFUSAL_HTTP) == set(Refusal)
    assert Refusal.of("duplicate_client_id") is Refusal.DUPLICATE_CLIENT_ID
    assert Refusal.of("expired") is Refusal.INVALID and Refusal.of("invalid") is Refusal.INVALID
    error = refused(Refused.because("duplicate_client_id"))
    assert (error.status, error.code, error.retry_after) == (409, "duplicate_client_id", None)
    assert "GET /orders?client_id=ID" in error.message
    rate = refused(Refused.because("account_rate"))
    assert (rate.status, rate.retry_after) == (429, 1.0)
    bad = refused(Refused.because("unknown_market"))
    assert (bad.status, bad.code) == (422, "unknown_market")
    assert refused(Refused.because("mempool_full")).status == 503


@pytest.mark.parametrize("finality, fields", [
    (Finality(0), {"height": 0}),
    (Finality(7, 2, "validator"), {"height": 7, "epoch": 2, "role": "validator"}),
])
def test_finality_fields(finality: Finality, fields: dict[str, object]) -> None:
    assert finality.fields() == fields



def test_no_route_reads_the_chain_service_or_sets_an_attribute_of_the_node() -> None:
    for path in sorted(API.glob("*.py")):
        if path.name in NOT_ON_THE_PORTS:
            continue
        tree = ast.parse(path.read_text())
        imported = {alias.name if node.module is None else node.module
                    for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        assert "exchange.chain.service" not in imported or path.name == "base.py", path.name
        if path.name != "base.py":
            calls = {node.func.id for node in ast.walk(tree)
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
            assert "chain_of" not in calls, path.name
            chain_reads = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                           and isinstance(node.value, ast.Name) and node.value.id == "chain"}
            assert not chain_reads & INSIDES, (path.name, chain_reads & INSIDES)
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name):
                        assert part.value.id != "node", f"{path.name} sets node.{part.attr}"
