"""Mempool: transactions a validator has checked and holds until a block orders them.

Only verified transactions enter (signature and a precheck against the current state), each once;
the pool is bounded in count and bytes (a full pool refuses with `mempool_full`, which the API turns
into 503 + Retry-After), and transactions leave when a block commits them or they expire. `reap`
hands the proposer the oldest first, up to a block's limits. The ids of transactions verified in
someone else's proposal are remembered for a while too, so one signature is checked once per node.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, KeysView

from exchange.chain.codec import pack
from exchange.chain.membership import MembershipTx
from exchange.chain.txs import SignedTx


class Mempool:
    def __init__(self, max_txs: int = 50_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self._txs: OrderedDict[str, tuple[SignedTx, int]] = OrderedDict()   # id -> (tx, encoded size)
        self.by_sig: dict[bytes, SignedTx] = {}                            # the same transactions, by signature
        self._membership: OrderedDict[str, MembershipTx] = OrderedDict()
        self.bytes = 0
        self.verified: OrderedDict[tuple[str, bytes], None] = OrderedDict()   # (id, signature) checked
        self.max_verified = 200_000

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: str) -> bool:
        return tx_id in self._txs

    def add(self, tx: SignedTx) -> str | None:
        """Queue a verified transaction; returns a refusal reason or None."""
        if tx.id in self._txs:
            return "duplicate"
        size = len(pack(tx.wire()))
        if len(self._txs) >= self.max_txs or self.bytes + size > self.max_bytes:
            return "mempool_full"
        self._txs[tx.id] = (tx, size)
        self.by_sig[tx.sig] = tx
        self.bytes += size
        self.remember_verified(tx)
        return None

    def add_membership(self, tx: MembershipTx) -> None:
        self._membership.setdefault(tx.id, tx)
        if len(self._membership) > 1000:
            self._membership.popitem(last=False)

    def remember_verified(self, tx: SignedTx) -> None:
        """Keyed by what was signed (the id hashes the signed bytes, account included) AND the signature:
        a copy with other signature bytes, or other content under the same signature, is checked on its own."""
        self.verified[(tx.id, tx.sig)] = None
        if len(self.verified) > self.max_verified:
            self.verified.popitem(last=False)

    def is_verified(self, tx: SignedTx) -> bool:
        return (tx.id, tx.sig) in self.verified

    def reap(self, max_txs: int, max_bytes: int) -> list[SignedTx]:
        out: list[SignedTx] = []
        total = 0
        for tx, size in self._txs.values():
            if len(out) >= max_txs or total + size > max_bytes:
                break
            out.append(tx)
            total += size
        return out

    def membership(self) -> list[MembershipTx]:
        return list(self._membership.values())

    def membership_ids(self) -> KeysView[str]:
        return self._membership.keys()

    def drop_membership(self, tx_id: str) -> None:
        self._membership.pop(tx_id, None)

    def remove(self, tx_ids: Iterable[str]) -> None:
        for tx_id in tx_ids:
            item = self._txs.pop(tx_id, None)
            if item is not None:
                self.bytes -= item[1]
                self.by_sig.pop(item[0].sig, None)

    def expire(self, time_ms: int) -> int:
        """Drop transactions whose `expires` is not after `time_ms`; returns how many."""
        dead = [tx_id for tx_id, (tx, _) in self._txs.items() if tx.expires <= time_ms]
        self.remove(dead)
        return len(dead)
