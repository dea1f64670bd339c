"""The signing examples for external clients (Python and Node.js) produce, byte for byte, the signed text
and signature `exchange.app.txs.sign_tx` does, and the body a node accepts as a SignedTx."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.crypto import SigningKey
from exchange.app.txs import NewOrderOp, SignedTx, sign_tx
from node.accounts import AccountStore
from tests.scripted_api import ScriptedApi

pytestmark = pytest.mark.process     # the examples run under python and node

ROOT = Path(__file__).resolve().parents[3]
SEED = bytes(range(32))
CHAIN = "ab" * 32
NONCE, EXPIRES = "n-1", 1_700_000_000_000
ORDERS = [
    (["buy", "BTC-USD", "0.5", "--price", "100.25"], ("BTC-USD", "buy", "limit", "100.25", "0.5", None)),
    (["sell", "ETH-USD", "2", "--type", "market", "--stp", "cancel_both"],
     ("ETH-USD", "sell", "market", None, "2", "cancel_both")),
    (["buy", "BTC-USD", "1.0000", "--price", "99", "--type", "post_only"],
     ("BTC-USD", "buy", "post_only", "99", "1.0000", None)),
]


def runners() -> list:
    node = shutil.which("node")
    return [
        pytest.param([sys.executable, str(ROOT / "examples" / "sign_order.py")], id="python"),
        pytest.param([node or "node", str(ROOT / "examples" / "sign_order.js")], id="nodejs",
                     marks=pytest.mark.skipif(node is None, reason="Node.js `node` is not installed")),
    ]


def run_example(command: list[str], *args: str) -> tuple[dict, str]:
    proc = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def signed_text_of(stderr: str) -> str:
    return stderr.split("--- signed text ---\n", 1)[1].split("\n--- order id ", 1)[0]


@pytest.mark.parametrize("command", runners())
@pytest.mark.parametrize("args, op", ORDERS)
def test_example_signs_exactly_what_sign_tx_signs(command, args, op):
    key = SigningKey(SEED)
    expected = sign_tx(key.sign, key.public_key, CHAIN, NONCE, EXPIRES, [NewOrderOp.parse(*op)])
    body, stderr = run_example(command, "--seed", SEED.hex(), "--chain-id", CHAIN, "--nonce", NONCE,
                               "--expires", str(EXPIRES), *args)
    assert signed_text_of(stderr).encode() == expected.signed_bytes
    assert body["signed"]["sig"] == expected.sig.hex()
    assert body["signed"] == expected.as_json()
    parsed = SignedTx.from_json(body["signed"])
    assert parsed.signature_valid() and parsed.id == expected.id
    assert f"--- order id {expected.order_id(0)}" in stderr


@pytest.mark.parametrize("command", runners())
def test_example_signs_with_an_account_key_file_and_posts_with_the_token(command, tmp_path):
    account = AccountStore(tmp_path).new("client")
    api = ScriptedApi()
    api.answers[("GET", "/status")] = (200, {"chain_id": CHAIN})
    api.answers[("POST", "/orders")] = (201, {"order": {"id": "x", "status": "open"}})
    try:
        proc = subprocess.run([*command, "--key", str(account.path), "--api", api.url + "/", "--token", "tok-1",
                               "--post", "buy", "BTC-USD", "1", "--price", "100"],
                              capture_output=True, text=True, timeout=60)
    finally:
        api.close()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["order"]["status"] == "open"
    posted = next(r for r in api.requests if r["method"] == "POST")
    assert posted["path"] == "/orders" and posted["auth"] == "Bearer tok-1"
    tx = SignedTx.from_json(json.loads(posted["body"])["signed"])
    assert tx.account == account.public_key and tx.chain_id == CHAIN and tx.signature_valid()
    assert tx.sig == account.sign(tx.signed_bytes)          # the same key the node holds for the account
    assert tx.expires > 1_700_000_000_000 and tx.nonce
