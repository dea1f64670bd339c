"""The light client's rules on a one-validator chain built here: what verifies, and a fork kept as evidence.

Two nodes serving different headers for one height, each signed by the validator, are a fork: `status` raises
Conflict and writes both headers and commits to a file. A header one byte changed from what was signed fails."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from exchange.chain.types.blocks import GENESIS_PARENT, PRECOMMIT, Block, Commit, Header, vote_bytes
from exchange.chain.types.codec import pack
from exchange.chain.types.genesis import Genesis
from exchange.crypto import SigningKey
from node.light.client import NoneVerified, TrustRoot, status
from node.light.verify import Conflict

KEY = SigningKey(bytes(range(32)))
GENESIS = Genesis("light-test", 1_000, KEY.public_key, (KEY.public_key,))
NOW_MS = 50_000


def _b64(value: object) -> str:
    return base64.b64encode(pack(value)).decode()


def certified(app_hash: bytes, *, sign: bool = True) -> dict[str, object]:
    validators = GENESIS.first_validators()
    header = Header(GENESIS.chain_id, 1, NOW_MS - 500, GENESIS_PARENT, KEY.public_key, app_hash, validators.hash,
                    Block.txs_hash([]), None)
    signed = header.id if sign else bytes(32)
    commit = Commit(1, 0, header.id, ((0, KEY.sign(vote_bytes(GENESIS.chain_id, PRECOMMIT, 1, 0, signed))),))
    return {"height": 1, "header": _b64(header.wire()), "commit": _b64(commit.wire())}


def node_serving(latest: dict[str, object]) -> dict[str, object]:
    return {"/chain/genesis": {"chain_id": GENESIS.chain_id, "genesis": _b64(GENESIS.wire())},
            "/chain/epochs": {"proofs": []}, "/chain/headers/latest": latest, "/chain/headers/1": latest}


def fetcher(nodes: dict[str, dict[str, object]]):
    return lambda node, path: nodes[node][path]


def test_a_header_signed_by_the_proven_set_verifies_and_the_chain_is_learnt(tmp_path: Path):
    trust = TrustRoot.load(tmp_path / "trust.json")
    found = status(["a"], trust, fetcher({"a": node_serving(certified(bytes(32)))}), now_ms=lambda: NOW_MS)
    assert found.verified.height == 1 and found.verified.signers == 1 and found.learnt
    assert TrustRoot.load(tmp_path / "trust.json").chain_id == GENESIS.chain_id


def test_a_signature_over_another_block_is_refused(tmp_path: Path):
    with pytest.raises(NoneVerified) as refused:
        status(["a"], TrustRoot.load(tmp_path / "t.json"),
               fetcher({"a": node_serving(certified(bytes(32), sign=False))}), now_ms=lambda: NOW_MS)
    assert [r.reason for r in refused.value.refused] == ["bad_certificate"]


def test_two_certified_headers_for_one_height_stop_the_client_and_are_kept_as_evidence(tmp_path: Path):
    served = {"a": certified(bytes(32)), "b": certified(b"\x01" * 32)}
    nodes = {name: node_serving(latest) for name, latest in served.items()}
    with pytest.raises(Conflict) as conflict:
        status(["a", "b"], TrustRoot.load(tmp_path / "t.json"), fetcher(nodes), now_ms=lambda: NOW_MS,
               evidence_dir=tmp_path)
    assert conflict.value.height == 1
    kept = json.loads(next(tmp_path.glob("conflict-1-*.json")).read_text())
    assert {side["node"] for side in kept["headers"]} == {"a", "b"}
    assert {side["header"] for side in kept["headers"]} == {served["a"]["header"], served["b"]["header"]}
