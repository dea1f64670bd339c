"""Signing transactions the way every node checks them (docs/signed-orders.md): an Ed25519 signature over a
short UTF-8 text, so the bytes are rebuilt here without the node's code.

Nonces must not repeat within the chain's replay window, across restarts of the client too: `NonceSource`
hands out nanosecond timestamps that only go up, remembered in a file when given one, so a client
restarted within the same nanosecond (or after its clock stepped back) still never reuses one.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange_node_client.json_types import Op, SignedTx

DOMAIN = "exchange-node/tx/v1"


def dash(value: object) -> str:
    return "-" if value is None else str(value)


def op_line(op: Op) -> str:
    """One operation's line of the signed text, from its JSON form."""
    kind = op.get("op", "new")
    if kind == "new":
        line = (f"new {op['market']} {op['side']} {op.get('type', 'limit')} {dash(op.get('price'))} {op['qty']} "
                f"{dash(op.get('stp'))}")
        if op.get("until") is not None:
            line = f"{line} until={op['until']}"
        if op.get("client_id") is not None:
            line = f"{line} cid={op['client_id']}"
        if op.get("trigger_price") is not None:
            line = f"{line} trigger={op['trigger_price']}"
        return f"{line} reduce_only" if op.get("reduce_only") else line
    if kind == "cancel":
        return f"cancel {op['market']} {op['order_id']}"
    if kind == "cancel_all":
        return f"cancel_all {dash(op.get('market'))} {dash(op.get('side'))}"
    if kind == "schedule_cancel":
        return f"schedule_cancel {dash(op.get('at'))}"
    if kind == "replace":
        return f"replace {op['market']} {op['order_id']} {dash(op.get('price'))} {op['qty']}"
    if kind == "approve_agent":
        return (f"approve_agent {op['agent']} {dash(op.get('markets'))} {op['operations']} {dash(op.get('cap'))} "
                f"{dash(op.get('expires'))}")
    if kind == "revoke_agent":
        return f"revoke_agent {op['agent']}"
    if kind == "atomic":
        return "atomic"
    raise ValueError(f"unknown operation {kind!r}")


def signed_text(chain_id: str, account: str, nonce: str, expires: int, ops: Sequence[Op],
                acting_for: str | None = None) -> bytes:
    """The bytes the signature covers; `acting_for`: the account an agent key signs for (its `for=` line)."""
    lines = [DOMAIN, f"chain={chain_id}", f"account={account}", f"nonce={nonce}", f"expires={expires}"]
    if acting_for is not None:
        lines.insert(3, f"for={acting_for}")
    return "\n".join(lines + [op_line(op) for op in ops]).encode()


def tx_id(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()[:32]


def order_id(transaction_id: str, index: int) -> str:
    """The id of the order operation `index` of a transaction makes (known before it is sent)."""
    return f"{transaction_id[:30]}{index:02x}"


class NonceSource:
    """Nonces that only go up: nanoseconds since the epoch, at least one past the last handed out."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._last = 0
        if self.path is not None and self.path.exists():
            self._last = int(self.path.read_text().strip() or 0)

    def next(self) -> str:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            if self.path is not None:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(str(self._last))
                os.replace(tmp, self.path)
            return f"n{self._last}"


class Signer:
    """An account's key, or an agent key with `acting_for` (the account it trades for): signs transactions."""

    def __init__(self, key: Ed25519PrivateKey, nonces: NonceSource | None = None,
                 acting_for: str | None = None) -> None:
        self.key = key
        self.account = key.public_key().public_bytes(serialization.Encoding.Raw,
                                                     serialization.PublicFormat.Raw).hex()
        self.nonces = nonces or NonceSource()
        self.acting_for = acting_for

    @property
    def trades_for(self) -> str:
        """The account whose orders this key places: its own, or the one an agent key acts for."""
        return self.acting_for or self.account

    @classmethod
    def agent_from_file(cls, path: str | os.PathLike[str], nonces: NonceSource | None = None) -> Signer:
        """An agent key file as `exchange-node agent add --out FILE` writes it: signs for its account."""
        data = json.loads(Path(path).read_text())
        return cls(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(data["seed"])), nonces, data["account"])

    @classmethod
    def from_pem(cls, path: str | os.PathLike[str], nonces: NonceSource | None = None) -> Signer:
        """A key file as `exchange-node account new` writes it (DATA_DIR/accounts/NAME.pem)."""
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 key")
        return cls(key, nonces)

    @classmethod
    def generate(cls, nonces: NonceSource | None = None) -> Signer:
        return cls(Ed25519PrivateKey.generate(), nonces)

    def sign(self, chain_id: str, ops: Sequence[Op], ttl_ms: int = 60_000) -> SignedTx:
        """The `{"signed": ...}` body's transaction: `ops` in their JSON form, expiring `ttl_ms` from now."""
        nonce, expires = self.nonces.next(), int(time.time() * 1000) + ttl_ms
        text = signed_text(chain_id, self.account, nonce, expires, ops, self.acting_for)
        signed: SignedTx = {"chain_id": chain_id, "account": self.account, "nonce": nonce, "expires": expires,
                            "ops": ops, "sig": self.key.sign(text).hex()}
        if self.acting_for is not None:
            signed["for"] = self.acting_for    # type: ignore[typeddict-unknown-key]
        return signed
