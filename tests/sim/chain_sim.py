"""Deterministic simulation of a chain network: ChainCores on a faulty network, with Byzantine validators.

One heap of timed events (deliveries, ticks, client submissions, crashes, restarts) drives the cores
directly; everything random comes from one seeded `random.Random`, so a seed replays exactly. The
network delays each copy independently (so messages reorder), drops and duplicates some, and cuts the
nodes into groups for a while. Crashed nodes restart from what a real node would have on disk: the
blocks it stored (minus a few unsynced ones) and its consensus write-ahead log.

Safety is checked continuously: every commit by any honest node is compared with the first commit
at that height anywhere (same block, same resulting state hash), so a fork is caught the moment it
happens, not at the end. After the faults stop, liveness is checked: every transaction a live honest
node accepted is final everywhere, and every honest node reached the same height and state.
"""
from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any, assert_never

from exchange.chain.types.blocks import Block, Commit, Header, Proposal, Vote
from exchange.chain.core import ChainCore
from exchange.chain.config import CoreConfig
from exchange.crypto import SigningKey, node_id_for
from exchange.chain.effects import (Broadcast, ChainEffect, Committed, Forward, Halt, HoldReading, NeedSnapshot, OwnDone,
                                    Penalize, SendFollowers, SendTo, SendValidators, WalRecord)
from exchange.chain.types.genesis import Genesis
from exchange.chain.state.seats import MAX_TOKEN_USES
from exchange.chain.state.snapshot_maker import SnapshotMaker
from exchange.chain.config import ConsensusConfig
from exchange.app.txs import CancelOp, SignedTx, sign_tx

BASE_TIME = 1_700_000_000.0


class FakeKeys:
    """A cheap stand-in for Ed25519 (the simulation tests the protocol, not the curve): a signature is a
    hash of a per-key secret and the message; only the simulation's verifier knows the secrets."""

    def __init__(self, name: str) -> None:
        self.secret = hashlib.sha256(b"secret:" + name.encode()).digest()
        self.public_key = hashlib.sha256(b"public:" + self.secret).digest()
        self.node_id = node_id_for(self.public_key)
        FakeKeys.registry[self.public_key] = self.secret

    registry: dict[bytes, bytes] = {}

    def sign(self, data: bytes) -> bytes:
        return hashlib.sha512(self.secret + data).digest()


def fake_verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    secret = FakeKeys.registry.get(public_key)
    return secret is not None and hashlib.sha512(secret + data).digest() == signature


class SimApp:
    """A deterministic stand-in exchange: applies each transaction once within its validity window."""

    def __init__(self) -> None:
        self.applied: dict[str, int] = {}        # tx id -> expires (the replay window)
        self.resolved: dict[str, str] = {}       # tx id -> applied / expired: every transaction a block took
        self.sequence: list[str] = []
        self.hash = bytes(32)
        self.time_ms = 0

    def precheck(self, tx: SignedTx, chain_id: str, now_ms: int) -> str | None:
        if tx.id in self.applied:
            return "duplicate"
        if tx.expires <= now_ms:
            return "expired"
        return None

    def begin_block(self, height: int, time_ms: int) -> None:
        self.time_ms = time_ms
        self.applied = {k: e for k, e in self.applied.items() if e > time_ms}

    def order(self, order_id: str) -> Any:
        return None

    def apply_tx(self, tx: SignedTx) -> str:
        if tx.id in self.applied:
            return "duplicate"
        if tx.expires <= self.time_ms:
            self.resolved.setdefault(tx.id, "expired")
            self.hash = hashlib.sha256(self.hash + b"expired:" + tx.id.encode()).digest()
            return "expired"
        self.resolved[tx.id] = "applied"
        self.applied[tx.id] = tx.expires
        self.sequence.append(tx.id)
        self.hash = hashlib.sha256(self.hash + tx.id.encode()).digest()
        return "applied"

    def reject_tx(self, tx: SignedTx, reason: str) -> str:
        self.hash = hashlib.sha256(self.hash + b"refused:" + tx.id.encode()).digest()
        return reason

    def end_block(self) -> list:
        return []

    @property
    def app_hash(self) -> bytes:
        return self.hash

    def snapshot(self) -> bytes:
        return self.hash

    def snapshot_parts(self) -> list[bytes]:
        return [self.hash]


class MemoryStore:
    """A node's committed blocks as its disk would hold them."""

    def __init__(self) -> None:
        self.blocks: dict[int, tuple[Block, Commit]] = {}

    def get(self, height: int) -> tuple[Block, Commit] | None:
        return self.blocks.get(height)


def pinned_core(prefix: str, count: int, me: FakeKeys | None = None) -> tuple[ChainCore, list[FakeKeys], Genesis]:
    """A started core on a pinned set of `count` validators (`prefix`-0 ... founds it), its effects taken: one of
    them (the first) unless `me` is given, else a follower. For tests of one node's view."""
    keys = [FakeKeys(f"{prefix}-{i}") for i in range(count)]
    own = me or keys[0]
    genesis = Genesis(network_id="t", created_ms=int(BASE_TIME * 1000), founder=keys[0].public_key,
                      validators=tuple(k.public_key for k in keys), pinned=True)
    core = ChainCore(genesis, SimApp(), public_key=own.public_key, sign=own.sign, verify=fake_verify,
                     blocks=MemoryStore(), now=BASE_TIME)
    core.start(BASE_TIME)
    core.take_effects()
    return core, keys, genesis


SIM_CONSENSUS = ConsensusConfig(timeout_propose=0.3, timeout_propose_delta=0.1, timeout_prevote=0.1,
                                timeout_prevote_delta=0.05, timeout_precommit=0.1, timeout_precommit_delta=0.05,
                                rebroadcast_interval=0.4)
SIM_CORE = CoreConfig(consensus=SIM_CONSENSUS, empty_block_interval=0.5, join_retry=1.0, alive_interval=0.5,
                      resubmit_interval=0.5, sync_retry=0.5, live_after=1.5)


@dataclass
class Scenario:
    validators: int = 4
    followers: int = 2
    byzantine: dict[int, str] = field(default_factory=dict)     # validator index -> behaviour
    pinned: bool = True
    max_validators: int = 7
    joiners: int = 0                                            # followers holding the join token (unpinned runs)
    approvals: list[tuple[float, int]] = field(default_factory=list)   # (at, node): validators approve its seat
    leaves: list[tuple[float, int]] = field(default_factory=list)      # (at, node): it hands its seat back
    seat_rule: str = "bft"
    drop: float = 0.05
    duplicate: float = 0.05
    delay: tuple[float, float] = (0.001, 0.03)
    partitions: list[tuple[float, float, list[set[int]]]] = field(default_factory=list)
    crashes: list[tuple[float, float, int]] = field(default_factory=list)   # (at, back at, node)
    submit_rate: float = 20.0
    fault_until: float = 4.0
    settle: float = 6.0
    clock_skew: dict[int, float] = field(default_factory=dict)
    tx_lifetime: float = 50.0                                   # seconds from submission to a tx's expiry
    snapshot_interval: int = 500
    snapshot_lag: int = 0
    snapshot_min_ms: int = 0


@dataclass
class SimNode:
    index: int
    keys: FakeKeys
    core: ChainCore | None
    store: MemoryStore
    wal: list
    outbox: dict = field(default_factory=dict)
    byzantine: str | None = None
    crashed: bool = False
    committed: list = field(default_factory=list)


class SafetyViolation(AssertionError):
    pass


class ChainSimulation:
    def __init__(self, seed: int, scenario: Scenario) -> None:
        self.seed = seed
        self.s = scenario
        self.rng = random.Random(seed)
        self.now = 0.0
        self.queue: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        total = scenario.validators + scenario.followers
        keys = [FakeKeys(f"sim-{seed}-{i}") for i in range(total)]
        self.admission = FakeKeys(f"sim-{seed}-join-token")
        self.genesis = Genesis(network_id="sim", created_ms=int(BASE_TIME * 1000), founder=keys[0].public_key,
                               validators=tuple(k.public_key for k in keys[:scenario.validators]),
                               max_validators=scenario.max_validators, pinned=scenario.pinned,
                               absent_blocks=20, absent_ms=3000, snapshot_interval=scenario.snapshot_interval,
                               snapshot_lag=scenario.snapshot_lag, snapshot_min_ms=scenario.snapshot_min_ms,
                               seat_rule=scenario.seat_rule,
                               exchange={"order_ttl_ms": max(60_000, int(scenario.tx_lifetime * 1000) + 1000)})
        self.nodes = [SimNode(i, k, None, MemoryStore(), [], byzantine=scenario.byzantine.get(i)) for i, k in enumerate(keys)]
        self.by_id = {n.keys.node_id: n for n in self.nodes}
        for node in self.nodes:
            node.core = self._make_core(node)
            node.core.start(self._clock(node))
            self._drain(node)
        self.decided: dict[int, tuple[bytes, bytes]] = {}     # height -> (block id, state hash after it)
        self.accepted: dict[str, int] = {}                    # tx id -> the honest node that accepted it
        self.account = SigningKey(hashlib.sha256(f"account-{seed}".encode()).digest())
        self.stats = {"delivered": 0, "dropped": 0, "duplicated": 0, "cut": 0, "penalties": 0, "byzantine_msgs": 0,
                      "final_rollbacks": 0, "approvals": 0, "leaves": 0}
        self.honest_penalties: list[tuple[str, str, str]] = []
        self.commits: list[tuple[float, int, int, int]] = []     # (sim time, node, height, block time ms)
        self.max_round = 0
        self.tx_count = 0
        for at, back, index in scenario.crashes:
            self._at(at, "crash", index)
            self._at(back, "restart", index)
        for at, index in scenario.approvals:
            self._at(at, "approve", index)
        for at, index in scenario.leaves:
            self._at(at, "leave", index)
        if scenario.joiners and not scenario.pinned:
            self._at(0.05, "grant", 0)
        t = 0.0
        while t < scenario.fault_until:
            t += self.rng.expovariate(scenario.submit_rate)
            self._at(t, "submit", None)
        for node in self.nodes:
            self._at(self.rng.uniform(0, 0.01), "tick", node.index)

    # ------------------------------------------------------------------ plumbing
    def _make_core(self, node: SimNode) -> ChainCore:
        joiner = not self.s.pinned and self.s.validators <= node.index < self.s.validators + self.s.joiners
        core = ChainCore(self.genesis, SimApp(), public_key=node.keys.public_key, sign=node.keys.sign,
                         verify=fake_verify, blocks=node.store, config=SIM_CORE, rng=random.Random(node.index),
                         now=self._clock(node), join_token=self.admission if joiner else None)
        return core

    def _clock(self, node: SimNode) -> float:
        return BASE_TIME + self.now + self.s.clock_skew.get(node.index, 0.0)

    def _at(self, when: float, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, kind, payload))

    def _faults_on(self) -> bool:
        return self.now < self.s.fault_until

    def _cut(self, a: int, b: int) -> bool:
        for start, end, groups in self.s.partitions:
            if start <= self.now < end:
                ga = next((i for i, g in enumerate(groups) if a in g), -1)
                gb = next((i for i, g in enumerate(groups) if b in g), -1)
                if ga != gb:
                    return True
        return False

    def _send(self, src: int, dst: int, kind: str, body: Any) -> None:
        if src == dst:
            return
        if self._cut(src, dst):
            self.stats["cut"] += 1
            return
        faulty = self._faults_on()
        if faulty and self.rng.random() < self.s.drop:
            self.stats["dropped"] += 1
            return
        low, high = self.s.delay
        self._at(self.now + self.rng.uniform(low, high), "deliver", (src, dst, kind, body))
        if faulty and self.rng.random() < self.s.duplicate:
            self.stats["duplicated"] += 1
            self._at(self.now + self.rng.uniform(low, 3 * high), "deliver", (src, dst, kind, body))

    def _validators(self, node: SimNode) -> list[int]:
        assert node.core is not None
        return [self.by_id[nid].index for nid in node.core.state.validators.node_ids if nid in self.by_id]

    def _drain(self, node: SimNode) -> None:
        core = node.core
        if core is None:
            return
        for effect in core.take_effects():
            self._act(node, effect)

    def _act(self, node: SimNode, effect: ChainEffect) -> None:
        match effect:
            case WalRecord(record):
                node.wal.append(record)
            case OwnDone(tx_id, _):
                node.outbox.pop(tx_id, None)
            case SendValidators(message):
                for target in self._validators(node):
                    for body in self._byzantine_variants(node, message, target):
                        self._send(node.index, target, message["type"], body)
            case SendFollowers(message):
                seated = set(self._validators(node))
                for other in self.nodes:
                    if other.index not in seated:
                        for body in self._byzantine_variants(node, message, other.index):
                            self._send(node.index, other.index, message["type"], body)
            case SendTo(node_id, message):
                addressee = self.by_id.get(node_id)
                if addressee is not None:
                    self._send(node.index, addressee.index, message["type"], message["body"])
            case Broadcast(message):
                for other in self.nodes:
                    self._send(node.index, other.index, message["type"], message["body"])
            case Forward(tx):
                validators = [v for v in self._validators(node) if v != node.index]
                if validators:
                    self._send(node.index, self.rng.choice(validators), "submit", tx.wire())
            case HoldReading():
                self.stats["holds"] = self.stats.get("holds", 0) + 1
            case Penalize(peer, _, reason):
                self.stats["penalties"] += 1
                culprit = self.by_id.get(peer)
                if node.byzantine is None and culprit is not None and culprit.byzantine is None:
                    self.honest_penalties.append((node.keys.node_id[:8], peer[:8], reason))
            case Committed(block, commit, outcome, _):
                self._on_commit(node, block, commit, outcome.state_hash)
            case Halt(reason):
                if node.byzantine is None:
                    raise SafetyViolation(f"seed {self.seed}: honest node {node.index} halted: {reason}")
            case NeedSnapshot():
                pass                # the simulation serves no snapshots (no store compacts): it syncs from others
            case _:
                assert_never(effect)

    def _on_commit(self, node: SimNode, block: Block, commit: Commit, state_hash: bytes) -> None:
        height = block.height
        node.store.blocks[height] = (block, commit)      # durable before the node moves on (as the service does)
        node.wal = [r for r in node.wal if r[0] == "signed" and r[1][0] > height]
        self.commits.append((self.now, node.index, height, block.header.time_ms))
        if height <= len(node.committed):
            self.stats["final_rollbacks"] += 1       # a height this node had already finalised, finalised again
        node.committed.append(block.id)
        if len(node.committed) != height:
            raise SafetyViolation(f"seed {self.seed}: node {node.index} committed height {height} after "
                                  f"{len(node.committed) - 1} blocks")
        if node.byzantine is not None:
            return
        first = self.decided.get(height)
        if first is None:
            self.decided[height] = (block.id, state_hash)
        elif first != (block.id, state_hash):
            raise SafetyViolation(f"seed {self.seed} t={self.now:.3f}: FORK at height {height}: node "
                                  f"{node.index} has {block.id.hex()[:12]}, another {first[0].hex()[:12]}")

    # ------------------------------------------------------------------ Byzantine behaviour
    def _byzantine_variants(self, node: SimNode, message: dict, target: int) -> list:
        """What a validator actually sends to one target (honest: the message itself)."""
        mode = node.byzantine
        body = message["body"]
        # what followers are sent (precommit_quorum.py) is a vote or a proposal too, and lies the same way
        kind = {"chain_precommit": "chain_vote", "chain_block": "chain_proposal"}.get(message["type"], message["type"])
        if mode is None or kind not in ("chain_vote", "chain_proposal"):
            return [body]
        self.stats["byzantine_msgs"] += 1
        if mode == "silent":
            return []
        if mode == "equivocate":
            return [self._conflicting(node, kind, body, target)]
        if mode == "forge":
            other = self.nodes[(node.index + 1) % self.s.validators]
            forged = list(body)
            if kind == "chain_vote":
                forged[4] = other.keys.public_key           # claims to be another validator
                forged[3] = None if forged[3] is not None else hashlib.sha256(b"x").digest()
            else:
                forged[5] = bytes(64)                        # a zero signature
            return [body, forged]
        if mode == "replay":
            old = [b for b in node.wal if b[0] == "signed"]
            extra = [self.rng.choice(old)[3]] if old else []
            huge = list(body)
            if kind == "chain_vote":
                huge[2] = 10 ** 6                              # a far-future round, properly signed
                huge[5] = node.keys.sign(_vote_bytes(self.genesis.chain_id, huge))
            return [body, huge] + [e for e in extra if len(e) == 6 and type(e[3]) is not list]
        return [body]

    def _conflicting(self, node: SimNode, kind: str, body: list, target: int) -> list:
        """Half the validators get a different, properly signed message for the same height and round."""
        if target % 2 == 0:
            return body
        chain_id = self.genesis.chain_id
        if kind == "chain_vote":
            vote = Vote.from_wire(body)
            other = None if vote.block_id is not None else hashlib.sha256(b"other" + body[5]).digest()
            return Vote.create(chain_id, vote.kind, vote.height, vote.round, other, vote.validator,
                               node.keys.sign).wire()
        proposal = Proposal.from_wire(body)
        h = proposal.block.header
        header = Header(h.chain_id, h.height, h.time_ms + 1, h.prev_id, h.proposer, h.app_hash, h.validators_hash,
                        h.txs_hash, h.last_commit)
        block = Block(header, proposal.block.txs)
        return Proposal.create(chain_id, proposal.height, proposal.round, proposal.valid_round, block,
                               proposal.proposer, node.keys.sign).wire()

    # ------------------------------------------------------------------ events
    def _submit(self) -> None:
        live = [n for n in self.nodes if not n.crashed and n.byzantine is None and n.core is not None]
        if not live:
            return
        node = self.rng.choice(live)
        self.tx_count += 1
        expires = int((BASE_TIME + self.now + self.s.tx_lifetime) * 1000)
        tx = sign_tx(self.account.sign, self.account.public_key, self.genesis.chain_id, f"n{self.tx_count}",
                     expires, [CancelOp.parse("BTC-USD", f"o{self.tx_count}")])
        assert node.core is not None
        if node.core.intake.precheck(tx) is None:
            node.outbox[tx.id] = tx                # durable before the node answers (the service does this)
            if node.core.submit(tx, self._clock(node)) is None:
                self.accepted[tx.id] = node.index
        self._drain(node)

    def _deliver(self, src: int, dst: int, kind: str, body: Any) -> None:
        node = self.nodes[dst]
        if node.crashed or node.core is None:
            return
        self.stats["delivered"] += 1
        now = self._clock(node)
        if kind == "heartbeat":
            node.core.peer_height(self.nodes[src].keys.node_id, body, now)
        elif kind == "submit":
            node.core.submit(SignedTx.from_wire(body), now, own=False)
        else:
            node.core.on_message(kind, body, self.nodes[src].keys.node_id, now)
            if kind in ("chain_decision", "chain_vote", "chain_proposal") and src != dst:
                height = body[1] if kind == "chain_vote" else (body[0] if kind == "chain_proposal" else None)
                if height is not None:
                    node.core.peer_height(self.nodes[src].keys.node_id, height - 1, now)
        self._drain(node)

    def _crash(self, index: int) -> None:
        node = self.nodes[index]
        node.crashed = True
        node.core = None

    def _restart(self, index: int) -> None:
        node = self.nodes[index]
        node.crashed = False
        node.core = core = self._make_core(node)
        for height in sorted(node.store.blocks):
            block, commit = node.store.blocks[height]
            core.load_block(block, commit)
        core.take_effects()
        core.intake.restore(list(node.outbox.values()), self._clock(node))
        core.start(self._clock(node), wal=list(node.wal))
        self._drain(node)

    def _approve(self, index: int) -> None:
        """Every live honest validator's operator approves a seat for node `index`."""
        key = self.nodes[index].keys.public_key
        for node in self.nodes:
            core = node.core
            if core is None or node.byzantine is not None or not core.is_validator:
                continue
            try:
                core.seat_requests.approve("add", key, self._clock(node))
                self.stats["approvals"] += 1
            except ValueError:
                pass
            self._drain(node)

    def _grant(self, index: int) -> None:
        """Founder `index` issues the joiners' token through the log (a join token is granted, never given)."""
        node = self.nodes[index]
        if node.core is not None and not node.crashed:
            node.core.seat_requests.offer_grant(self.admission.public_key, MAX_TOKEN_USES, 3600.0, self._clock(node))
            self._drain(node)

    def _leave(self, index: int) -> None:
        node = self.nodes[index]
        if node.core is not None and node.core.seat_requests.request_leave(self._clock(node)) is not None:
            self.stats["leaves"] += 1
            self._drain(node)

    def faults_end(self) -> float:
        """When the last fault stops: `fault_until` ends loss and duplication, but a scenario's partitions and
        crashes are drawn on their own (`random_scenario` lets a partition end up to 1 s, and a restart up to
        0.5 s, after it). The run settles for `settle` seconds after this, not after `fault_until`: seed 7410's
        validator 0, locked on a block that only its own proposals could get final (an equivocator held every
        other proposer's block short of a quorum), restarted at 4.35 s, missed its round-5 turn by 2 ms and
        got the block final in its next turn, round 9, at 9.63 s; the last transaction was final at 10.3 s,
        5.9 s after that restart but past the 10.0 s the run used to stop at. A crash for good (restart after
        the run) ends no fault."""
        nominal = self.s.fault_until + self.s.settle
        ends = [end for _, end, _ in self.s.partitions] + [back for _, back, _ in self.s.crashes if back < nominal]
        return max([self.s.fault_until, *ends])

    def run(self) -> dict[str, Any]:
        end = self.faults_end() + self.s.settle
        while self.queue and self.queue[0][0] <= end:
            when, _, kind, payload = heapq.heappop(self.queue)
            self.now = when
            if kind == "deliver":
                self._deliver(*payload)
            elif kind == "tick":
                node = self.nodes[payload]
                if not node.crashed and node.core is not None:
                    node.core.tick(self._clock(node))
                    self._drain(node)
                    if node.byzantine is None:
                        self.max_round = max(self.max_round, node.core.consensus.round)
                    if int(self.now / 0.02) % 10 == payload % 10:      # link heartbeats carry the height
                        for other in self.nodes:
                            self._send(node.index, other.index, "heartbeat", node.core.state.height)
                self._at(self.now + 0.02, "tick", payload)
            elif kind == "submit":
                self._submit()
            elif kind == "crash":
                self._crash(payload)
            elif kind == "restart":
                self._restart(payload)
            elif kind == "approve":
                self._approve(payload)
            elif kind == "leave":
                self._leave(payload)
            elif kind == "grant":
                self._grant(payload)
        return self.check_end()

    def check_end(self) -> dict[str, Any]:
        honest = [n for n in self.nodes if n.byzantine is None and n.core is not None]
        heights = {n.index: n.core.state.height for n in honest}    # type: ignore[union-attr]
        # heights followers made final from the precommits they were sent, not a decision (precommit_quorum.py)
        self.stats["decided_from_precommits"] = sum(
            n.core.precommits.decided for n in honest if n.core is not None)
        top = max(heights.values())
        problems: list[str] = []
        leader = max(honest, key=lambda n: n.core.state.height)      # type: ignore[union-attr]
        validators = leader.core.state.validators                     # type: ignore[union-attr]
        down = [nid for nid in validators.node_ids if self.by_id[nid].crashed or self.by_id[nid].byzantine]
        if len(validators) - len(down) < validators.quorum:
            # more validators are gone for good than the set tolerates: the chain must halt, not fork
            return {"seed": self.seed, "height": top, "txs": len(self.accepted), "problems": problems,
                    "halted_without_quorum": True, **self.stats}
        for node in honest:
            core = node.core
            assert core is not None
            if core.state.height < top - 1:
                problems.append(f"node {node.index} at height {core.state.height}, others at {top}")
            # a node that never came back cannot hand on what it accepted (its disk holds it)
            app = core.state.app
            assert isinstance(app, SimApp)          # every simulated node runs the stand-in exchange
            missing = [tx_id for tx_id, by in self.accepted.items() if tx_id not in app.resolved
                       and not self.nodes[by].crashed]
            if missing and core.state.height >= top - 1:
                problems.append(f"node {node.index} lacks {len(missing)} accepted txs, e.g. {missing[0]}")
        if self.honest_penalties:
            problems.append(f"honest nodes penalised honest nodes: {self.honest_penalties[:3]}")
        return {"seed": self.seed, "height": top, "txs": len(self.accepted), "problems": problems,
                "halted_without_quorum": False, **self.stats}


def _vote_bytes(chain_id: str, wire: list) -> bytes:
    from exchange.chain.types.blocks import vote_bytes
    return vote_bytes(chain_id, wire[0], wire[1], wire[2], wire[3])


def random_scenario(seed: int) -> Scenario:
    """A seed's faults: sizes, Byzantine validators, partitions of every shape, crashes."""
    rng = random.Random(seed * 7919 + 1)
    if seed % 4 == 3:
        return _membership_scenario(rng)
    n = rng.choice([1, 4, 4, 4, 5, 7]) if seed % 10 else 4
    followers = rng.randint(0, 3)
    f = (n - 1) // 3
    byzantine = {}
    for index in rng.sample(range(n), rng.randint(0, f)):
        byzantine[index] = rng.choice(["silent", "equivocate", "forge", "replay"])
    total = n + followers
    partitions = []
    t = 0.3
    while t < 3.5 and rng.random() < 0.7:
        length = rng.uniform(0.3, 1.5)
        members = list(range(total))
        rng.shuffle(members)
        cut = rng.randint(1, total - 1) if total > 1 else 1
        groups = [set(members[:cut]), set(members[cut:])]
        if rng.random() < 0.3 and total > 2:
            third = rng.randint(cut, total - 1)
            groups = [set(members[:cut]), set(members[cut:third]), set(members[third:])]
        partitions.append((t, t + length, [g for g in groups if g]))
        t += length + rng.uniform(0.1, 0.8)
    crashes = []
    honest = [i for i in range(total) if i not in byzantine]
    for _ in range(rng.randint(0, 2)):
        index = rng.choice(honest)
        at = rng.uniform(0.2, 3.0)
        crashes.append((at, at + rng.uniform(0.2, 1.5), index))
    skew: dict[int, float] = {i: rng.choice([10 ** 5, -10 ** 5]) for i in byzantine if rng.random() < 0.5}
    return Scenario(validators=n, followers=followers, byzantine=byzantine, partitions=partitions, crashes=crashes,
                    drop=rng.choice([0.0, 0.02, 0.1]), duplicate=rng.choice([0.0, 0.05]),
                    delay=(0.0005, rng.choice([0.01, 0.03, 0.08])), clock_skew=skew)


def _membership_scenario(rng: random.Random) -> Scenario:
    """An unpinned network: a few founders, followers admitted by join token or by the validators' approvals
    (promoted to the sizes the seat rule allows), validators that hand their seats back, crash for good (and
    are jailed as absent, a standby taking the seat) or come back."""
    founders = rng.randint(1, 3)
    followers = rng.randint(2, 4)
    total = founders + followers
    crashes = []
    for _ in range(rng.randint(0, 2)):
        index = rng.randrange(total)
        at = rng.uniform(0.5, 3.0)
        back = at + rng.uniform(0.3, 1.5) if rng.random() < 0.6 else 1e9
        crashes.append((at, back, index))
    partitions = []
    if rng.random() < 0.5:
        members = list(range(total))
        rng.shuffle(members)
        cut = rng.randint(1, total - 1)
        start = rng.uniform(0.5, 2.5)
        partitions.append((start, start + rng.uniform(0.3, 1.5), [set(members[:cut]), set(members[cut:])]))
    joiners = rng.randint(0, followers)
    approvals = [(rng.uniform(0.3, 2.5), index) for index in range(founders + joiners, total) if rng.random() < 0.7]
    leaves = [(rng.uniform(1.0, 3.5), index) for index in rng.sample(range(total), rng.randint(0, 2))]
    return Scenario(validators=founders, followers=followers, pinned=False, max_validators=rng.choice([3, 4, 5, 7]),
                    joiners=joiners, approvals=approvals, leaves=leaves, seat_rule=rng.choice(["bft", "any"]),
                    partitions=partitions, crashes=crashes, drop=rng.choice([0.0, 0.02, 0.05]),
                    duplicate=rng.choice([0.0, 0.05]), delay=(0.0005, rng.choice([0.01, 0.03])), settle=8.0)


def joining_core(sim: "ChainSimulation", snapshots: SnapshotMaker | None = None, name: str = "newcomer") -> ChainCore:
    """A brand-new core of `sim`'s chain, as a node that joins it late (from a snapshot, or replaying blocks)."""
    keys = FakeKeys(name)
    return ChainCore(sim.genesis, SimApp(), public_key=keys.public_key, sign=keys.sign, verify=fake_verify,
                     blocks=MemoryStore(), config=SIM_CORE, rng=random.Random(0), now=sim._clock(sim.nodes[0]),
                     snapshots=snapshots)


def sim_app_from(data: bytes) -> SimApp:
    """A SimApp restored from its snapshot (its hash is its whole state)."""
    app = SimApp()
    app.hash = data
    return app


def run_seed(seed: int, scenario: Scenario | None = None) -> dict[str, Any]:
    return ChainSimulation(seed, scenario or random_scenario(seed)).run()


def _run_safely(seed: int) -> dict[str, Any]:
    try:
        return run_seed(seed)
    except SafetyViolation as exc:
        return {"seed": seed, "problems": [f"SAFETY: {exc}"], "final_rollbacks": 0, "halted_without_quorum": False}


def run_many(seeds: list[int], workers: int = 2) -> list[dict[str, Any]]:
    """Run seeds in `workers` processes (the simulation is CPU-bound and shares nothing)."""
    import multiprocessing

    if workers <= 1:
        return [_run_safely(seed) for seed in seeds]
    with multiprocessing.get_context("fork").Pool(workers, initializer=_quiet) as pool:
        return pool.map(_run_safely, seeds, chunksize=8)


def _quiet() -> None:
    import logging

    logging.disable(logging.CRITICAL)   # Byzantine runs log every refusal; the results say what matters
