"""Mempool: transactions a validator has checked and holds until a block orders them.

Only verified transactions enter (signature and a precheck against the current state), each once,
and leave when a block commits them or they expire. The ids of transactions verified in someone
else's proposal are remembered for a while too, so one signature is checked once per node.

Accounts and orders cost nothing, so the pool is shared out rather than filled first come, first
served: every transaction belongs to a *lane*, the neighbour that handed it to us (a follower's RPC,
a validator's relay, a gossip link) or our own API, and each lane to a *group*, the network the neighbour
links from (its /24 or /48, as the neighbours' transaction budgets share the total: tx_budget.py). A lane
may hold at most a share of the pool and an account a bounded number of transactions (refused
`sender_quota` / `account_quota`: the API answers 429 with Retry-After). When the pool is full, room is
made by evicting the newest transactions of the heaviest lane, never by refusing a lighter newcomer.
`reap` takes from the groups in turn, within a group from its lanes in turn, and within a lane from
its accounts in turn (oldest first within each account, and an account that had a transaction committed
goes behind the others that wait), and at most a share of a block from each lane, so one sender's or one
account's backlog delays its own transactions, not everyone's, and a crowd of keys from one network gets one
network's turns in a block that cannot hold everything waiting (block_pace.py), not one turn per key.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Iterable, Iterator, KeysView

from exchange.chain.types.codec import pack
from exchange.chain.state.membership import MembershipTx
from exchange.app.txs import SignedTx

OWN_LANE = "self"        # transactions from our own API


def solo_group(lane: str) -> str:
    """The group of a lane that shares no network's turns (our API, a validator's relays): its own."""
    return f"lane:{lane}"


class _Lane:
    __slots__ = ("ids", "bytes", "group", "accounts")

    def __init__(self, group: str) -> None:
        self.ids: OrderedDict[str, None] = OrderedDict()     # arrival order
        self.bytes = 0
        self.group = group          # whose turns in a block this lane shares (its network; else itself)
        # the same ids by account, each in arrival order; the accounts in the order of their next turn
        self.accounts: OrderedDict[bytes, OrderedDict[str, None]] = OrderedDict()

    def turns(self) -> Iterator[str]:
        """The lane's ids one account at a time: each account's oldest, then each one's second, and so on."""
        pending: list[Iterator[str]] = []
        for ids in self.accounts.values():
            turn = iter(ids)
            yield next(turn)                # an account is kept only while it holds an id
            pending.append(turn)
        while pending:
            still: list[Iterator[str]] = []
            for turn in pending:
                tx_id = next(turn, None)
                if tx_id is not None:
                    yield tx_id
                    still.append(turn)
            pending = still


class Mempool:
    def __init__(self, max_txs: int = 50_000, max_bytes: int = 64 * 1024 * 1024, *, lane_share: float = 0.25,
                 account_max_txs: int = 1_000, lane_block_share: float = 1 / 16) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.lane_max_txs = max(1, int(max_txs * lane_share))
        self.lane_max_bytes = max(1, int(max_bytes * lane_share))
        self.account_max_txs = account_max_txs
        self.lane_block_share = lane_block_share
        self._txs: OrderedDict[str, tuple[SignedTx, int, str]] = OrderedDict()   # id -> (tx, encoded size, lane)
        self.by_sig: dict[bytes, SignedTx] = {}                            # the same transactions, by signature
        self._lanes: dict[str, _Lane] = {}
        self._per_account: dict[bytes, int] = {}
        self._membership: OrderedDict[str, MembershipTx] = OrderedDict()
        self.bytes = 0
        self.evicted = 0
        self.refused: dict[str, int] = {"mempool_full": 0, "sender_quota": 0, "account_quota": 0}
        self._next_lane = 0          # where the next reap starts its turn, so no lane is always first
        self.verified: OrderedDict[tuple[str, bytes], None] = OrderedDict()   # (id, signature) checked
        self.max_verified = 200_000

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: str) -> bool:
        return tx_id in self._txs

    def add(self, tx: SignedTx, lane: str = OWN_LANE, group: str | None = None) -> str | None:
        """Queue a verified transaction handed over by `lane` (of `group`: its network, when known; a lane
        keeps the group it was made with); returns a refusal reason or None."""
        if tx.id in self._txs:
            return "duplicate"
        size = len(pack(tx.wire()))
        why = self._refusal(tx, lane, size)
        if why is not None:
            self.refused[why] += 1
            return why
        self._txs[tx.id] = (tx, size, lane)
        self.by_sig[tx.sig] = tx
        self.bytes += size
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = _Lane(group if group is not None else solo_group(lane))
        queue.ids[tx.id] = None
        queue.bytes += size
        mine = queue.accounts.get(tx.account)
        if mine is None:
            mine = queue.accounts[tx.account] = OrderedDict()
        mine[tx.id] = None
        self._per_account[tx.account] = self._per_account.get(tx.account, 0) + 1
        self.remember_verified(tx)
        return None

    def _refusal(self, tx: SignedTx, lane: str, size: int) -> str | None:
        if self._per_account.get(tx.account, 0) >= self.account_max_txs:
            return "account_quota"
        queue = self._lanes.get(lane)
        held, held_bytes = (len(queue.ids), queue.bytes) if queue is not None else (0, 0)
        if held >= self.lane_max_txs or held_bytes + size > self.lane_max_bytes:
            return "sender_quota"
        while len(self._txs) >= self.max_txs or self.bytes + size > self.max_bytes:
            heaviest = max(self._lanes.items(), key=lambda item: item[1].bytes, default=None)
            if heaviest is None or heaviest[0] == lane or heaviest[1].bytes <= held_bytes + size:
                return "mempool_full"
            self.remove([next(reversed(heaviest[1].ids))])
            self.evicted += 1
        return None

    def lane_names(self) -> KeysView[str]:
        """The lanes holding transactions now."""
        return self._lanes.keys()

    def lanes(self) -> dict[str, tuple[int, int]]:
        """Each lane's (transactions, bytes) held now."""
        return {lane: (len(queue.ids), queue.bytes) for lane, queue in self._lanes.items()}

    def view(self, top: int = 5) -> dict[str, object]:
        """For /status: the shares, the heaviest lanes (bounded, whoever floods) and what was refused."""
        heaviest = sorted(self._lanes.items(), key=lambda item: item[1].bytes, reverse=True)[:top]
        return {"transactions": len(self._txs), "bytes": self.bytes, "lanes": len(self._lanes),
                "lane_max_transactions": self.lane_max_txs, "lane_max_bytes": self.lane_max_bytes,
                "account_max_transactions": self.account_max_txs, "evicted": self.evicted,
                "refused": dict(self.refused),
                "heaviest": [{"lane": lane, "transactions": len(queue.ids), "bytes": queue.bytes}
                             for lane, queue in heaviest]}

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

    def reap(self, max_txs: int, max_bytes: int, lane_of: int | None = None) -> list[SignedTx]:
        """Up to `max_txs` and `max_bytes`: one transaction from each group in turn, from that group's lanes in
        turn, from a lane's accounts in turn, oldest first within an account, and at most `lane_block_share` of
        a block of `lane_of` transactions (`max_txs` if not given) from any one lane: a block of a flooder's
        thousands takes every node long to check and apply, and the honest transactions beside it wait for that
        too."""
        out: list[SignedTx] = []
        names = list(self._lanes)
        if not names:
            return out
        start = self._next_lane % len(names)
        self._next_lane += 1
        groups: dict[str, deque[tuple[Iterator[str], list[int]]]] = {}
        for name in names[start:] + names[:start]:
            lane = self._lanes[name]
            groups.setdefault(lane.group, deque()).append((lane.turns(), [0]))
        per_lane = max(1, int((lane_of or max_txs) * self.lane_block_share))
        total = 0
        turns = list(groups.values())
        while turns and len(out) < max_txs:
            still: list[deque[tuple[Iterator[str], list[int]]]] = []
            for lanes in turns:
                if len(out) >= max_txs:
                    break
                while lanes:
                    turn, taken = lanes.popleft()
                    tx_id = next(turn, None) if taken[0] < per_lane else None
                    if tx_id is None:
                        continue        # this lane is done for this block
                    tx, size, _ = self._txs[tx_id]
                    if total + size > max_bytes:
                        continue        # this lane's next does not fit; the others may still
                    out.append(tx)
                    total += size
                    taken[0] += 1
                    lanes.append((turn, taken))
                    break
                if lanes:
                    still.append(lanes)
            turns = still
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
            if item is None:
                continue
            tx, size, lane = item
            self.bytes -= size
            self.by_sig.pop(tx.sig, None)
            queue = self._lanes[lane]
            del queue.ids[tx_id]
            queue.bytes -= size
            mine = queue.accounts[tx.account]
            del mine[tx_id]
            if mine:
                queue.accounts.move_to_end(tx.account)      # served (or dropped): the others waiting go first
            else:
                del queue.accounts[tx.account]
            if not queue.ids:
                del self._lanes[lane]
            left = self._per_account[tx.account] - 1
            if left:
                self._per_account[tx.account] = left
            else:
                del self._per_account[tx.account]

    def expire(self, time_ms: int) -> int:
        """Drop transactions whose `expires` is not after `time_ms`; returns how many."""
        dead = [tx_id for tx_id, (tx, _, _) in self._txs.items() if tx.expires <= time_ms]
        self.remove(dead)
        return len(dead)
