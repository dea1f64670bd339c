"""State sync: a node that is far behind (its peers compacted the blocks it lacks) starts again from a
peer's snapshot instead of replaying every block.

The serving side answers `chain.snapshot` {"offset"} with its newest stored snapshot in chunks; the first
chunk also carries what makes it checkable: the commit of its block, the certified block after it, and the
epoch proofs from genesis. The joining side fetches every chunk from one peer and hands the lot to
`ChainCore.install_snapshot`, which checks each part against validator sets proven from its own genesis
before anything of its state changes (`SnapshotJoin`, when the core asks for a snapshot: one fetch at a time).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, NamedTuple, NotRequired, TypedDict

from exchange.app import ExchangeParams, ExchangeState
from exchange.chain.blocks import Block, Commit
from exchange.chain.ports import BadRequest, CannotServe, ChainNetwork, ChainStore, CoreGate, RpcValue, Throttled
from exchange.wire import Wire
from storage import StorageError

log = logging.getLogger("exchange.chain")

SNAPSHOT_SERVICE = "chain.snapshot"
SNAPSHOT_CHUNK = 256 * 1024
FETCH_TIMEOUT = 10.0        # s per chunk
THROTTLED_WAITS = 20        # times one chunk is asked again after the peer said to wait (its serving budget)


class SnapshotChunk(TypedDict):
    """One answer of `chain.snapshot`: the bytes from `offset` of the snapshot at `height`."""

    height: int
    total: int
    offset: int
    chunk: bytes
    proof: NotRequired[list[Wire]]       # in the first chunk: [commit at, next block, its commit, epoch proofs]


class _Served(NamedTuple):
    """The snapshot we serve now: its bytes when they fit the cache (else read a chunk at a time) and its proof."""

    height: int
    total: int
    data: bytes | None
    proof: list[Wire] | None        # None: the blocks that certify it are not stored yet
    as_of: int                      # the store's newest snapshot height when it was chosen (newer ones damaged)


class SnapshotServer:
    """Our newest snapshot for joining peers, with its proof. It is checked and read from disk once per new
    snapshot, not per request: kept in memory up to `cache_bytes`, a bigger one read a chunk at a time (what each
    answer costs is charged to whoever asks by the RPC layer's serving budget)."""

    def __init__(self, store: ChainStore, cache_bytes: int = 64 << 20) -> None:
        self.store = store
        self.cache_bytes = cache_bytes
        self._served: _Served | None = None

    def serve(self, payload: RpcValue) -> SnapshotChunk:
        offset = payload.get("offset", 0) if isinstance(payload, dict) else 0
        if type(offset) is not int or offset < 0:
            raise BadRequest("offset must be a non-negative integer")
        served = self._current()
        if served.proof is None:
            raise CannotServe("the blocks that certify our snapshot are not stored yet")
        if served.data is not None:
            chunk = served.data[offset:offset + SNAPSHOT_CHUNK]
        else:
            chunk = self.store.read_snapshot(served.height, offset, SNAPSHOT_CHUNK) if offset < served.total else b""
        answer: SnapshotChunk = {"height": served.height, "total": served.total, "offset": offset, "chunk": chunk}
        if offset == 0:
            answer["proof"] = served.proof
        return answer

    def _current(self) -> _Served:
        served = self._served
        newest = self.store.newest_snapshot_height()
        if served is not None and served.as_of == newest:
            if served.proof is None:
                served = self._served = served._replace(proof=self._proof(served.height))
            return served
        found = self.store.checked_snapshot()
        if found is None:
            raise CannotServe("no snapshot here")
        height, total = found
        data = self.store.read_snapshot(height, 0, total) if total <= self.cache_bytes else None
        served = self._served = _Served(height, total, data, self._proof(height), newest)
        return served

    def _proof(self, height: int) -> list[Wire] | None:
        at, after = self.store.get(height), self.store.get(height + 1)
        if at is None or after is None:
            return None
        return [at[1].wire(), after[0].wire(), after[1].wire(),
                [[b.wire(), c.wire()] for b, c in self.store.epoch_proofs()]]


class FetchedSnapshot(NamedTuple):
    height: int
    data: bytes
    commit_at: Commit                       # certifies the snapshot's last block
    next_block: Block                       # the certified block after it: its header vouches for the state
    next_commit: Commit
    proofs: list[tuple[Block, Commit]]      # validator set changes from genesis


async def _chunk(network: ChainNetwork, peer: str, offset: int) -> RpcValue:
    """One chunk, asked again as often as the peer says to wait for its serving budget (a big snapshot may take
    a joiner more than the budget's burst)."""
    for _ in range(THROTTLED_WAITS):
        try:
            return await network.call(SNAPSHOT_SERVICE, {"offset": offset}, timeout=FETCH_TIMEOUT, peer=peer)
        except Throttled as exc:
            await asyncio.sleep(min(max(exc.retry_after, 0.05), FETCH_TIMEOUT))
    raise TimeoutError(f"{peer[:12]} kept asking us to wait for the chunk at {offset}")


async def fetch_snapshot(network: ChainNetwork, peer: str) -> FetchedSnapshot:
    """Every chunk of `peer`'s snapshot and its proof, decoded (not yet checked). Raises on a bad answer."""
    first = await _chunk(network, peer, 0)
    height, total, proof = first["height"], first["total"], first["proof"]
    parts = [first["chunk"]]
    size = len(first["chunk"])
    while size < total:
        more = await _chunk(network, peer, size)
        if more["height"] != height or not more["chunk"]:
            raise ValueError("the snapshot changed while we fetched it")
        parts.append(more["chunk"])
        size += len(more["chunk"])
    return FetchedSnapshot(height, b"".join(parts)[:total], Commit.from_wire(proof[0]), Block.from_wire(proof[1]),
                           Commit.from_wire(proof[2]), [(Block.from_wire(b), Commit.from_wire(c)) for b, c in proof[3]])


class SnapshotJoin:
    """Starting again from a peer's snapshot when the core asks (`NeedSnapshot`): install it if every part checks
    out against our genesis, store it to start from, then tell the service (`installed`: the roles, the pump)."""

    def __init__(self, gate: CoreGate, network: ChainNetwork, store: ChainStore, clock: Callable[[], float],
                 installed: Callable[[], None]) -> None:
        self.gate = gate
        self.network = network
        self.store = store
        self.clock = clock
        self.installed = installed
        self._task: asyncio.Task[None] | None = None

    def need(self, peer: str) -> None:
        """Fetch `peer`'s snapshot, unless a fetch is under way."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._join(peer))

    async def _join(self, peer: str) -> None:
        try:
            fetched = await fetch_snapshot(self.network, peer)
        except Exception as exc:  # noqa: BLE001 - a peer's bad answer: try again on the next sync round
            log.warning("snapshot from %s not usable: %s", peer[:12], exc)
            return
        finally:
            self._task = None
        core = self.gate.core
        if core is None:
            return
        params = ExchangeParams.from_wire(core.genesis.exchange)
        chain_id = core.chain_id
        why = core.install_snapshot(fetched.data, fetched.commit_at, fetched.next_block, fetched.next_commit,
                                    fetched.proofs, lambda app_bytes: ExchangeState.restore(params, app_bytes, chain_id),
                                    self.clock())
        if why is not None:
            log.warning("snapshot at height %d from %s refused: %s", fetched.height, peer[:12], why)
            self.network.penalize(peer, 50.0, "bad_snapshot")
            return
        try:
            self.store.save_snapshot(fetched.height, fetched.data)
            self.store.replace_epochs(fetched.proofs)
        except StorageError as exc:
            log.error("could not store the snapshot we started from: %s", exc)
        self.installed()
