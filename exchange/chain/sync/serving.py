"""What this node serves its peers over RPC: the genesis of its chain (`chain.genesis`, to a node adopting
it), its newest snapshot with its proof (`chain.snapshot`, `statesync.py`), and, on a validator, a
follower's transactions (`chain.submit`, offered and withdrawn as the role changes by `forwarding.py`).
"""
from __future__ import annotations

from typing import Callable, TypedDict

from exchange.app.txs import InvalidTx, SignedTx
from exchange.chain.seats.founding_loop import GENESIS_SERVICE
from exchange.chain.ports import CannotServe, ChainHost, ChainNetwork, ChainStore, RpcValue
from exchange.chain.sync.statesync import SNAPSHOT_SERVICE, SnapshotChunk, SnapshotServer
from exchange.wire import Wire


class SubmitAnswer(TypedDict, total=False):
    """A validator's answer to a follower's `chain.submit`: `error` names a refusal (or why it cannot serve)."""

    ok: bool
    error: str | None


class ChainServing:
    """The chain's RPC handlers (the service's `serving`)."""

    def __init__(self, host: ChainHost, network: ChainNetwork, store: ChainStore,
                 clock: Callable[[], float], snapshot_cache_bytes: int = 64 << 20) -> None:
        self.host = host
        self.network = network
        self.clock = clock
        self.snapshots = SnapshotServer(store, snapshot_cache_bytes, self._snapshot_lag, self._certificate_preimage)

    def offer(self) -> None:
        """Serve the genesis and snapshots from now on (`chain.submit` goes by role: `forwarding.py`)."""
        self.network.offer(GENESIS_SERVICE, self.serve_genesis)
        self.network.offer(SNAPSHOT_SERVICE, self.serve_snapshot)

    def serve_genesis(self, payload: RpcValue, peer: str) -> Wire:
        genesis = self.host.genesis
        if genesis is None:
            raise CannotServe("no chain yet")
        return genesis.wire()

    def serve_snapshot(self, payload: RpcValue, peer: str) -> SnapshotChunk:
        """A chunk of our newest snapshot. What it costs is charged by the RPC layer's serving budget, to the
        requester and the neighbour relaying it, before this runs (p2p/rpc/serve_budget.py): past it the joiner
        is told `rate_limited` with the seconds to wait, and waits (`statesync._chunk`)."""
        return self.snapshots.serve(payload)

    def _snapshot_lag(self) -> int:
        genesis = self.host.genesis
        return 0 if genesis is None else genesis.snapshot_lag

    def _certificate_preimage(self, height: int) -> Wire | None:
        core = self.host.core
        return None if core is None else core.state.certificates.get(height)

    def serve_submit(self, payload: RpcValue, peer: str) -> SubmitAnswer:
        """A follower hands us a transaction (RPC `chain.submit`)."""
        core = self.host.core
        if core is None or not core.is_validator:
            return {"error": "not_validator"}
        if core.holds_wire(payload):
            return {"ok": True, "error": None}     # held already (another validator relayed it): no budget spent
        if not core.intake.within_tx_budget(peer, self.clock()):
            self.host.schedule_pump()       # carries out the hold the spent budget asked for
            return {"error": "sender_quota"}
        try:
            tx = SignedTx.from_wire(payload)
        except InvalidTx as exc:
            self.network.penalize(peer, 20.0, f"malformed_tx:{exc.code}")
            return {"error": exc.code}
        why = core.submit(tx, self.clock(), own=False, lane=peer)
        self.host.schedule_pump()
        if why in ("bad_signature",):
            self.network.penalize(peer, 50.0, "bad_tx_signature")
        return {"ok": why is None, "error": why}
