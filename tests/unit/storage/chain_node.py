"""A one-validator chain node in process, on any FileSystem, driven step by step with a fake clock: the real
ChainService, ChainCore, ExchangeState and ChainStore, with no network and no background ticker, so a run is
deterministic and every disk operation happens at the same point each time (what crash enumeration needs).

    node = await ChainNode.boot(fs, record)     # record: a Record shared by every boot of one run
    answer = await node.place(n)                # ("accepted", tx) / ("failed", exc) / ("refused", why)
    node.step(0.3)                              # advance the clock, tick, pump
    node.collect_finals()                       # 201 answers the API would give now

`Record` is what the outside world saw: transactions answered 202 (durable in the outbox), answers final
(201, with the order as it was shown), failures, decision broadcasts, and every consensus message the
validator key signed, across restarts — the facts a crash must never contradict.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
from dataclasses import dataclass, field, fields
from typing import Any

from exchange.chain.types.blocks import PRECOMMIT, Commit, Proposal, Vote
from exchange.chain.types.codec import unpack
from exchange.chain.config import CoreConfig
from exchange.crypto import SigningKey, node_id_for
from exchange.chain.types.genesis import Genesis
from exchange.chain.ports import NotReady
from exchange.chain.service import ChainService
from exchange.app import ExchangeParams
from exchange.chain.store.block_store import ChainStore
from exchange.app.txs import NewOrderOp, SignedTx, sign_tx
from storage import FileSystem, StorageError

DATA_DIR = "/node"
MARKETS = "BTC-USD"
START = 1_700_000_000.0
VALIDATOR_SEED = hashlib.sha256(b"crash-validator").digest()
ACCOUNT = SigningKey(hashlib.sha256(b"crash-account").digest())


@dataclass
class Record:
    """What callers and peers were told, across every boot of one run."""

    accepted: dict[str, SignedTx] = field(default_factory=dict)      # tx id -> tx (answered 202 or 201)
    finals: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # order id -> order as answered 201
    failed: dict[str, SignedTx] = field(default_factory=dict)        # answered 507/503: nothing accepted
    unknown: dict[str, SignedTx] = field(default_factory=dict)       # the error said the outcome is unknown
    decisions: dict[int, bytes] = field(default_factory=dict)        # height -> block id broadcast
    signed: dict[tuple, set[bytes | None]] = field(default_factory=dict)  # (what, height, round) -> block ids
    published: dict[tuple, bytes | None] = field(default_factory=dict)    # signatures that left the node
    waiting: dict[str, asyncio.Future] = field(default_factory=dict)
    now: float = START                                               # the clock when the run stopped

    def __deepcopy__(self, memo: dict) -> "Record":
        """A copy for one more check of the same crashed run: the answers it waited for are over (their loop
        is closed), so none is copied."""
        copied = Record()
        for each in fields(self):
            if each.name != "waiting":
                setattr(copied, each.name, copy.deepcopy(getattr(self, each.name), memo))
        return copied


class RecordingSigner:
    """The validator's key; every vote and proposal it signs is written down before the signature exists."""

    def __init__(self, record: Record) -> None:
        self._key = SigningKey(VALIDATOR_SEED)
        self.public_key_bytes = self._key.public_key
        self.node_id = node_id_for(self._key.public_key)
        self._record = record

    def sign(self, data: bytes) -> bytes:
        try:
            message = unpack(data)
        except ValueError:
            message = None
        if type(message) is list and message and message[0] == "exchange-node/vote/v1":
            _, _, kind, height, round_, block_id = message
            self._record.signed.setdefault((f"vote{kind}", height, round_), set()).add(block_id)
        elif type(message) is list and message and message[0] == "exchange-node/proposal/v1":
            _, _, height, round_, _, block_id = message
            self._record.signed.setdefault(("proposal", height, round_), set()).add(block_id)
        return self._key.sign(data)


class RecordingNetwork:
    """No peers: broadcast decisions are written down (they are what followers would hold)."""

    def __init__(self, record: Record) -> None:
        self._record = record

    def send(self, node_id: str, message: dict) -> None:
        pass

    def broadcast(self, message: dict) -> None:
        if message.get("type") == "chain_decision":
            commit = Commit.from_wire(message["body"][1])
            block_id = bytes.fromhex(message["id"])
            assert self._record.decisions.setdefault(commit.height, block_id) == block_id, \
                f"two decisions at height {commit.height}"
            self._record.published[(f"vote{PRECOMMIT}", commit.height, commit.round)] = commit.block_id

    def penalize(self, node_id: str, points: float, reason: str) -> None:
        raise AssertionError(f"a lone validator penalised {node_id}: {reason}")

    def network_of(self, node_id: str) -> str | None:
        return None

    def hold_reading(self, node_id: str, seconds: float) -> None:
        raise AssertionError(f"a lone validator held back {node_id}: it has no neighbour to meter")

    def keep_linked(self, node_ids: set[str]) -> None:
        pass

    def linked_providers(self, service: str) -> list[str]:
        return []

    def offer(self, service: str, handler: Any) -> None:
        pass

    def withdraw(self, service: str) -> None:
        pass

    async def call(self, service: str, payload: Any, timeout: float, peer: str | None = None) -> Any:
        raise ConnectionError("no peers")


def signature_key(record: list) -> tuple[tuple, bytes | None] | None:
    """(what, height, round) and the block id of a WAL "signed" record, as RecordingSigner writes them down."""
    if type(record) is not list or not record or record[0] != "signed":
        return None
    _, _, tag, wire = record
    if tag == "p":
        proposal = Proposal.from_wire(wire)
        return ("proposal", proposal.height, proposal.round), proposal.block.id
    vote = Vote.from_wire(wire)
    return (f"vote{vote.kind}", vote.height, vote.round), vote.block_id


class ChainNode:
    def __init__(self, service: ChainService, store: ChainStore, clock: list[float], record: Record) -> None:
        self.service = service
        self.store = store
        self._clock = clock
        self.record = record

    @classmethod
    async def boot(cls, fs: FileSystem, record: Record, *, now: float = START,
                   segment_bytes: int = 1536, small_segment_bytes: int = 1024, snapshot_interval: int = 500,
                   keep_blocks: int = 1000) -> ChainNode:
        clock = [now]
        signer = RecordingSigner(record)
        store = ChainStore(DATA_DIR, fs=fs, segment_bytes=segment_bytes, small_segment_bytes=small_segment_bytes,
                           keep_blocks=keep_blocks)
        if store.load_genesis() is None:
            params = ExchangeParams(markets=MARKETS, order_ttl_ms=600_000)
            store.save_genesis(Genesis(network_id="crash", created_ms=int(START * 1000) - 1000,
                                       founder=signer.public_key_bytes, validators=(signer.public_key_bytes,),
                                       pinned=True, exchange=params.to_wire(), snapshot_interval=snapshot_interval))
        service = ChainService(signer, RecordingNetwork(record), store, network_id="crash", markets=MARKETS,
                               found_after=0.0, snapshot_interval=snapshot_interval, config=CoreConfig(),
                               clock=lambda: clock[0])
        await service.start()
        for task in service._tasks:     # the test is the clock: no background ticker
            task.cancel()
        await asyncio.gather(*service._tasks, return_exceptions=True)
        service._tasks = []
        node = cls(service, store, clock, record)
        node.pump()
        return node

    @property
    def now(self) -> float:
        return self._clock[0]

    def pump(self) -> None:
        """Run the service's pending actions now (and only now: a pump it scheduled itself is cancelled)."""
        service = self.service
        if service._pump_handle is not None:
            service._pump_handle.cancel()
            service._pump_handle = None
        service.pump()

    def step(self, seconds: float) -> None:
        self._clock[0] += seconds
        self.record.now = self.now
        service = self.service
        if service.disk_error is None:
            assert service.core is not None
            service.core.tick(self.now)
        else:
            service.durability.flush()
        self.pump()
        self.collect_finals()

    def make_tx(self, n: int) -> SignedTx:
        side = "buy" if n % 2 else "sell"
        price = f"{100 + (n % 5) * (1 if side == 'sell' else -1)}.00"
        op = NewOrderOp("BTC-USD", side, "limit", price, f"{1 + n % 3}", None)
        assert self.service.genesis is not None
        return sign_tx(ACCOUNT.sign, ACCOUNT.public_key, self.service.genesis.chain_id, f"order-{n}",
                       int(self.now * 1000) + 300_000, [op])

    async def place(self, n: int) -> tuple[str, Any]:
        """Submit order `n` as the API would and write down what the API would answer."""
        tx = self.make_tx(n)
        try:
            why, future = await self.service.submissions.submit(tx)
        except StorageError as exc:
            (self.record.unknown if exc.outcome_unknown else self.record.failed)[tx.id] = tx
            return "failed", exc
        except NotReady as exc:
            return "refused", exc.code
        finally:
            self.pump()
        if why is not None:
            return "refused", why
        self.record.accepted[tx.id] = tx
        self.record.waiting[tx.id] = future
        self.collect_finals()
        return "accepted", tx

    def collect_finals(self) -> None:
        app = self.service.app
        assert app is not None
        for tx_id, future in list(self.record.waiting.items()):
            if future.done():
                del self.record.waiting[tx_id]
                if not future.cancelled() and future.result() is not None:
                    order_id = self.record.accepted[tx_id].order_id(0)
                    self.record.finals[order_id] = app.order(order_id)

    async def stop(self) -> None:
        await self.store.outbox_commit.close()
        await self.service.stop()
