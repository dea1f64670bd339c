"""State sync: a node that is far behind (its peers compacted the blocks it lacks) starts again from a
peer's snapshot instead of replaying every block.

The serving side answers `chain.snapshot` {"offset"} with its newest stored snapshot that it can prove, in
chunks; the first chunk also carries what makes it checkable: the commit of its block, the certified block
after it, the epoch proofs from genesis, and on a lagged network the certificate of its bytes
(`snapshot_proof.py`: until the chain is `snapshot_lag` heights past it, the snapshot before it is served).
The joining side fetches every chunk from one peer and hands the lot to `ChainCore.install_snapshot`, which
checks each part against validator sets proven from its own genesis before anything of its state changes
(`SnapshotJoin`, when the core asks for a snapshot: one fetch at a time).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, NamedTuple, NotRequired, TypedDict

from exchange.app import ExchangeParams, ExchangeState
from exchange.chain.types.blocks import Block, Commit
from exchange.chain.ports import BadRequest, CannotServe, ChainNetwork, ChainStore, CoreGate, RpcValue, Throttled
from exchange.chain.state.snapshot_proof import SnapshotCertificate
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
    proof: NotRequired[list[Wire]]       # in the first chunk: [commit at, next block, its commit, epoch proofs,
                                         # and on a lagged network the certificate of its bytes]


class _Served(NamedTuple):
    """The snapshot we serve now: its bytes when they fit the cache (else read a chunk at a time) and its proof."""

    height: int
    total: int
    data: bytes | None
    proof: list[Wire]
    as_of: int                      # the store's newest snapshot height when it was chosen
    newest_unproven: bool           # the newest was passed over only because it cannot be proven yet


class SnapshotServer:
    """Our newest snapshot that checks out and that we can prove, for joining peers, with its proof. It is
    checked and read from disk once per snapshot chosen, not per request: kept in memory up to `cache_bytes`, a
    bigger one read a chunk at a time (what each answer costs is charged to whoever asks by the RPC layer's
    serving budget). `lag` and `preimage` read the chain's: its snapshot lag, and what the state hash that
    certified a snapshot covered besides its digest (`ChainState.certificates`); on a lagged network the newest
    snapshot can be proven only `lag` heights after it was taken, and the one before it is served meanwhile."""

    def __init__(self, store: ChainStore, cache_bytes: int = 64 << 20, lag: Callable[[], int] = lambda: 0,
                 preimage: Callable[[int], Wire | None] = lambda height: None) -> None:
        self.store = store
        self.cache_bytes = cache_bytes
        self.lag = lag
        self.preimage = preimage
        self._served: _Served | None = None

    def serve(self, payload: RpcValue) -> SnapshotChunk:
        offset = payload.get("offset", 0) if isinstance(payload, dict) else 0
        if type(offset) is not int or offset < 0:
            raise BadRequest("offset must be a non-negative integer")
        served = self._current() if offset == 0 or self._served is None else self._served
        if served.data is not None:
            chunk = served.data[offset:offset + SNAPSHOT_CHUNK]
        else:
            chunk = self.store.read_snapshot(served.height, offset, SNAPSHOT_CHUNK) if offset < served.total else b""
        answer: SnapshotChunk = {"height": served.height, "total": served.total, "offset": offset, "chunk": chunk}
        if offset == 0:
            answer["proof"] = served.proof
        return answer

    def _current(self) -> _Served:
        """At a fetch's first chunk: the snapshot to serve (its other chunks come from the same one)."""
        served = self._served
        newest = self.store.newest_snapshot_height()
        if served is not None and served.as_of == newest and not (served.newest_unproven and self._may_prove(newest)):
            return served       # chosen for this newest snapshot (which is it, damaged, or not provable yet)
        heights = self.store.snapshot_heights()
        if not heights:
            raise CannotServe("no snapshot here")
        unproven = False
        for height in heights:
            proof = self._proof(height)
            if proof is None:
                unproven = unproven or height == newest
                continue
            total = self.store.checked_snapshot_at(height)
            if total is not None:
                try:
                    data = self.store.read_snapshot(height, 0, total) if total <= self.cache_bytes else None
                except StorageError:    # pruned since it was checked, by a save in the worker thread
                    continue
                served = self._served = _Served(height, total, data, proof, newest, unproven)
                return served
        raise CannotServe("the blocks that certify our snapshots are not stored yet")

    def _may_prove(self, height: int) -> bool:
        """Whether what proves the snapshot of `height` may be here by now (no disk read: asked per request)."""
        lag = self.lag()
        return self.store.last_height > height + lag and (not lag or self.preimage(height) is not None)

    def _proof(self, height: int) -> list[Wire] | None:
        at, after = self.store.get(height), self.store.get(height + 1)
        if at is None or after is None:
            return None
        proof = [at[1].wire(), after[0].wire(), after[1].wire(),
                 [[b.wire(), c.wire()] for b, c in self.store.epoch_proofs()]]
        lag = self.lag()
        if lag:
            preimage, certifying = self.preimage(height), self.store.get(height + lag + 1)
            if preimage is None or certifying is None:
                return None
            proof.append(SnapshotCertificate(preimage, *certifying).wire())
        return proof


class FetchedSnapshot(NamedTuple):
    height: int
    data: bytes
    commit_at: Commit                       # certifies the snapshot's last block
    next_block: Block                       # the certified block after it: its header vouches for the state
    next_commit: Commit
    proofs: list[tuple[Block, Commit]]      # validator set changes from genesis
    certificate: SnapshotCertificate | None     # on a lagged network: what certifies its bytes


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
                           Commit.from_wire(proof[2]), [(Block.from_wire(b), Commit.from_wire(c)) for b, c in proof[3]],
                           SnapshotCertificate.from_wire(proof[4]) if len(proof) > 4 else None)


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
        try:
            why = core.install_snapshot(fetched.data, fetched.commit_at, fetched.next_block, fetched.next_commit,
                                        fetched.proofs, lambda app_bytes: ExchangeState.restore(params, app_bytes,
                                                                                                chain_id),
                                        self.clock(), fetched.certificate)
        except Exception as exc:  # noqa: BLE001 - a peer's bytes, whatever they made raise: refused like any
            why = f"bad snapshot: {type(exc).__name__}: {exc}"
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
