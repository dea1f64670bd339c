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
from exchange.chain.blocks import Block, Commit
from exchange.chain.ports import BadRequest, CannotServe, ChainNetwork, ChainStore, CoreGate, RpcValue
from exchange.chain.snapshot_proof import SnapshotCertificate
from exchange.wire import Wire
from storage import StorageError

log = logging.getLogger("exchange.chain")

SNAPSHOT_SERVICE = "chain.snapshot"
SNAPSHOT_CHUNK = 256 * 1024
FETCH_TIMEOUT = 10.0        # s per chunk
RELOAD_AFTER = 5.0          # s a snapshot read from disk is served from memory before the newest is read again


class SnapshotChunk(TypedDict):
    """One answer of `chain.snapshot`: the bytes from `offset` of the snapshot at `height`."""

    height: int
    total: int
    offset: int
    chunk: bytes
    proof: NotRequired[list[Wire]]       # in the first chunk: [commit at, next block, its commit, epoch proofs,
                                         # and on a lagged network the certificate of its bytes]


class SnapshotServer:
    """Our newest provable snapshot for joining peers, with its proof; the chunks of one snapshot come from one
    read, and a first chunk asked for again within RELOAD_AFTER seconds of the read comes from it too (asking
    for the first chunk over and over must not make us read the whole snapshot from disk each time). `lag` and
    `preimage` read the chain's: its snapshot lag, and what the state hash that certified a snapshot covered
    besides its digest (`ChainState.certificates`)."""

    def __init__(self, store: ChainStore, clock: Callable[[], float], lag: Callable[[], int] = lambda: 0,
                 preimage: Callable[[int], Wire | None] = lambda height: None) -> None:
        self.store = store
        self.clock = clock
        self.lag = lag
        self.preimage = preimage
        self._served: tuple[int, bytes, list[Wire]] | None = None   # height, snapshot, proof
        self._loaded_at = float("-inf")

    def serve(self, payload: RpcValue) -> SnapshotChunk:
        offset = payload.get("offset", 0) if isinstance(payload, dict) else 0
        if type(offset) is not int or offset < 0:
            raise BadRequest("offset must be a non-negative integer")
        if self._served is None or (offset == 0 and self.clock() - self._loaded_at >= RELOAD_AFTER):
            self._served = self._newest_provable()
            self._loaded_at = self.clock()
        height, data, extras = self._served
        answer: SnapshotChunk = {"height": height, "total": len(data), "offset": offset,
                                 "chunk": data[offset:offset + SNAPSHOT_CHUNK]}
        if offset == 0:
            answer["proof"] = extras
        return answer

    def _newest_provable(self) -> tuple[int, bytes, list[Wire]]:
        heights = self.store.snapshot_heights()
        if not heights:
            raise CannotServe("no snapshot here")
        for height in heights:
            proof = self._proof(height)
            data = self.store.load_snapshot_at(height) if proof is not None else None
            if proof is not None and data is not None:
                return height, data, proof
        raise CannotServe("the blocks that certify our snapshots are not stored yet")

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


async def fetch_snapshot(network: ChainNetwork, peer: str) -> FetchedSnapshot:
    """Every chunk of `peer`'s snapshot and its proof, decoded (not yet checked). Raises on a bad answer."""
    first = await network.call(SNAPSHOT_SERVICE, {"offset": 0}, timeout=FETCH_TIMEOUT, peer=peer)
    height, total, proof = first["height"], first["total"], first["proof"]
    parts = [first["chunk"]]
    size = len(first["chunk"])
    while size < total:
        more = await network.call(SNAPSHOT_SERVICE, {"offset": size}, timeout=FETCH_TIMEOUT, peer=peer)
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
        why = core.install_snapshot(fetched.data, fetched.commit_at, fetched.next_block, fetched.next_commit,
                                    fetched.proofs, lambda app_bytes: ExchangeState.restore(params, app_bytes, chain_id),
                                    self.clock(), fetched.certificate)
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
