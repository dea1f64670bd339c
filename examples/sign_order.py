#!/usr/bin/env python3
"""Sign an order for exchange-node with your own account key, as an external client does.

Builds the exact text the account signs (docs/signed-orders.md), signs it with Ed25519, and prints
the body to POST to /orders on any node: `{"signed": {...}}`. The signed text and the order id the
node will give the order go to stderr. Needs only `cryptography` (pip install cryptography).

    python examples/sign_order.py --key ~/.local/share/exchange-node/accounts/default.pem \\
        --api http://127.0.0.1:7947 buy BTC-USD 0.5 --price 100.25          # chain id from GET /status
    python examples/sign_order.py --seed 000102...1f --chain-id ab...ab sell BTC-USD 1 --type market
Add --post --token TOKEN (the node's API_TOKEN or cookie) to send it instead of printing it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import time
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DOMAIN = "exchange-node/tx/v1"


def signed_text(chain_id: str, account_hex: str, nonce: str, expires: int, op: dict) -> str:
    """The documented lines, joined by "\\n" with no trailing newline; absent price/stp are "-"."""
    return "\n".join([
        DOMAIN, f"chain={chain_id}", f"account={account_hex}", f"nonce={nonce}", f"expires={expires}",
        f"new {op['market']} {op['side']} {op['type']} {op['price'] or '-'} {op['qty']} {op['stp'] or '-'}",
    ])


def load_key(args: argparse.Namespace) -> Ed25519PrivateKey:
    if args.key:
        with open(args.key, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            sys.exit(f"{args.key} is not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(args.seed))


def api_call(url: str, token: str | None, body: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"null")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--key", help="PKCS#8 PEM file of the account (as `exchange-node account new` writes)")
    secret.add_argument("--seed", help="the account's 32-byte Ed25519 seed, 64 hex characters")
    parser.add_argument("--chain-id", help="the network's chain id (default: GET /status of --api)")
    parser.add_argument("--api", help="a node's control API, e.g. http://127.0.0.1:7947")
    parser.add_argument("--token", help="bearer token for --post (the node's API_TOKEN or cookie)")
    parser.add_argument("--post", action="store_true", help="POST the signed order to --api and print the answer")
    parser.add_argument("--nonce", default=None, help="unique per transaction (default: time and randomness)")
    parser.add_argument("--expires", type=int, default=None, help="ms since the epoch (default: in 60 s)")
    parser.add_argument("side", choices=["buy", "sell"])
    parser.add_argument("market")
    parser.add_argument("qty", help="decimal string, e.g. 0.5")
    parser.add_argument("--price", default=None, help="decimal string (none for market orders)")
    parser.add_argument("--type", default="limit", choices=["limit", "market", "ioc", "fok", "post_only"])
    parser.add_argument("--stp", default=None,
                        choices=["cancel_newest", "cancel_oldest", "cancel_both", "decrement_and_cancel"])
    args = parser.parse_args()
    if (args.post or not args.chain_id) and not args.api:
        parser.error("--api is needed to --post or to read the chain id")

    key = load_key(args)
    account = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    api = (args.api or "").rstrip("/")
    chain_id = args.chain_id or api_call(f"{api}/status", args.token)["chain_id"]
    now_ms = int(time.time() * 1000)
    nonce = args.nonce or f"{now_ms}-{secrets.token_hex(4)}"
    expires = args.expires or now_ms + 60_000
    op = {"op": "new", "market": args.market, "side": args.side, "type": args.type, "price": args.price,
          "qty": args.qty, "stp": args.stp}
    text = signed_text(chain_id, account, nonce, expires, op)
    signature = key.sign(text.encode("utf-8"))
    tx_id = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    body = {"signed": {"chain_id": chain_id, "account": account, "nonce": nonce, "expires": expires, "ops": [op],
                       "sig": signature.hex()}}

    print(f"--- signed text ---\n{text}\n--- order id {tx_id[:30]}00", file=sys.stderr)
    if args.post:
        print(json.dumps(api_call(f"{api}/orders", args.token, body), indent=2))
    else:
        print(json.dumps(body))


if __name__ == "__main__":
    main()
