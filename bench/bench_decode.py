"""Decode + dispatch benchmark: nanoseconds per message from the bytes a socket hands a link to the handler that
takes the message, for the messages that matter most on the wire, against a bare decode of the same frames.

Two peer managers in one process are linked over loopback (Noise XX, hellos), each with its message router.
What the sender writes is captured instead of sent (its link's transport and cipher are wrapped): the encrypted
bytes, and the plaintext frames they hold. Each row then feeds the captured bytes to the receiving link's
`data_received`, as its socket would, one write per event-loop pass, and times until the last message reached its
handler (a counter registered where the node registers the real one: a router subscriber for chain types, a link
handler for peer exchange, a broadcast subscriber for a Plumtree broadcast). What the path does on the way is
all there: decryption, framing, msgpack decoding, the link's read turns, schema checks, the router's inbound
limit, the seen cache, the unicast or Plumtree path, the subscribers. The link's read budget and the router's rate
are set high enough never to hold or drop a row's messages: they are limits, measured by their own tests.

Rows (each message as the chain or the node builds it):
- `vote`: a `chain_vote` (a precommit, signature bytes included) unicast to us;
- `block`: a `chain_block` carrying a block of BLOCK_TXS signed one-order transactions, unicast;
- `order`: a `chain_tx` carrying one signed order, as a validator hands it to the others (unicast);
- `decision`: a `chain_decision` Plumtree broadcast (a block id and its commit of four signatures);
- `pex`: a peer-exchange record of MAX_ENTRIES addresses, a link-local message.

Baseline, measured in the same run: `msgpack.unpackb` of each of the same frames' bodies (the library's decode,
nothing else); `ratio` is the path's time over it. For reference, `frames ns` is `FrameDecoder.feed` over the same
plaintext (frame splitting and the decode with its complexity guard, as the link runs it).

`python -m bench decode [--quick | --smoke] [--messages=N] [--rounds=N]`.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import struct
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

from bench.options import parse_options
from bench.table import print_table
from config import load_settings
from exchange.app.txs import NewOrderOp, sign_tx
from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, Vote
from exchange.crypto import SigningKey
from node.chain_network import CHAIN_SCHEMAS
from node.configs import peer_config, router_config
from node.identity import NodeIdentity
from p2p.connection import PeerLink
from p2p.discovery.pex import MAX_ENTRIES, MSG_TYPE as PEX_TYPE, PEX_SCHEMAS
from p2p.framing import FrameDecoder
from p2p.peer_hooks import PeerHooks
from p2p.peers import PeerManager
from p2p.router import MessageRouter

MESSAGES = 20_000
ROUNDS = 5
BATCH = 32              # messages the sender queues in one event-loop pass (its link seals them as one write)
BLOCK_TXS = 8
CHAIN_ID = "c" * 64


class Capture:
    """A link's transport that keeps what the link writes instead of sending it."""

    def __init__(self, real: asyncio.Transport) -> None:
        self.real = real
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.real.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class PlainCapture:
    """A link's cipher that also keeps the plaintext it seals (the frames, for the baseline)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.plain: list[bytes] = []

    def seal(self, data: bytes) -> bytes:
        self.plain.append(bytes(data))
        sealed: bytes = self.real.seal(data)
        return sealed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@dataclass
class Rig:
    sender: PeerManager
    receiver: PeerManager
    sender_router: MessageRouter
    receiver_router: MessageRouter
    out: PeerLink            # the sender's link to the receiver
    into: PeerLink           # the receiver's link from the sender
    wire: Capture
    plain: PlainCapture
    counts: dict[str, int]
    done: dict[str, asyncio.Future[None]]
    wanted: dict[str, int]


def _node(tmp: str, name: str) -> tuple[PeerManager, MessageRouter]:
    # limits high enough never to hold or drop what the rows send (the path is measured, not the limits), and
    # heartbeats rare enough that neither side gives up on the other while a row is captured or fed
    settings = load_settings(env={}, cli={"data_dir": os.path.join(tmp, name), "p2p_host": "127.0.0.1", "p2p_port": 0,
                                          "target_outbound": 0, "discovery_mdns": "false", "heartbeat_interval": "30",
                                          "dead_after": "3600", "peer_read_rate": str(1 << 40),
                                          "router_rate_limit": "1000000000", "router_rate_burst": "1000000000"})
    peers = PeerManager(peer_config(settings), NodeIdentity.generate(), verify=NodeIdentity.verify,
                        node_id_for=NodeIdentity.node_id_for)
    router = MessageRouter(peers, router_config(settings))
    router.declare_broadcast("chain_decision", validator=lambda message, sender: True)
    peers.attach(PeerHooks("chain", schemas=CHAIN_SCHEMAS))
    peers.attach(router)
    return peers, router


async def _rig(tmp: str) -> Rig:
    sender, sender_router = _node(tmp, "a")
    receiver, receiver_router = _node(tmp, "b")
    counts: dict[str, int] = {}
    done: dict[str, asyncio.Future[None]] = {}
    wanted: dict[str, int] = {}

    def counter(kind: str) -> Callable[..., None]:
        def count(*_: object) -> None:
            counts[kind] = counts.get(kind, 0) + 1
            if counts[kind] >= wanted.get(kind, 1 << 62) and kind in done and not done[kind].done():
                done[kind].set_result(None)
        return count

    for kind in ("chain_vote", "chain_block", "chain_tx", "chain_decision"):
        receiver_router.subscribe(kind, counter(kind))
    receiver.attach(PeerHooks("pex", schemas=PEX_SCHEMAS, handlers={PEX_TYPE: counter(PEX_TYPE)}))
    sender.attach(PeerHooks("pex", schemas=PEX_SCHEMAS))
    for peers, router in ((sender, sender_router), (receiver, receiver_router)):
        await peers.start()
        await router.start()
    assert receiver.listen_port is not None
    out = await sender.dial("127.0.0.1", receiver.listen_port)
    while sender.node_id not in receiver.links:
        await asyncio.sleep(0.01)
    into = receiver.links[sender.node_id]
    assert out.transport is not None
    wire = Capture(out.transport)
    plain = PlainCapture(out._secure)
    out.transport = wire                    # type: ignore[assignment]  # the bench keeps what the link writes
    out._secure = plain                     # type: ignore[assignment]
    return Rig(sender, receiver, sender_router, receiver_router, out, into, wire, plain, counts, done, wanted)


def _signed_order(key: SigningKey, nonce: int) -> list[object]:
    op = NewOrderOp.parse("BTC-USD", "buy", "limit", "50000.5", "0.25", None)
    tx = sign_tx(key.sign, key.public_key, CHAIN_ID, f"n{nonce}", 1_900_000_000_000, [op])
    return tx.wire()


def _messages(rig: Rig) -> dict[str, Callable[[int], None]]:
    """Per row, how the sender sends its i-th message."""
    key = SigningKey(os.urandom(32))
    validator = os.urandom(32)
    target = rig.receiver.node_id
    order_wire = _signed_order(key, 0)
    txs = [["a", _signed_order(key, n)] for n in range(BLOCK_TXS)]
    sigs = tuple((i, os.urandom(64)) for i in range(4))

    def block(height: int) -> list[object]:
        header = Header(CHAIN_ID, height + 1, 1_800_000_000_000 + height, os.urandom(32), key.public_key,
                        os.urandom(32), os.urandom(32), Block.txs_hash(txs), Commit(height, 0, os.urandom(32), sigs))
        return Block(header, txs).wire()

    def vote(i: int) -> None:
        body = Vote(PRECOMMIT, i + 1, 0, os.urandom(32), validator, os.urandom(64)).wire()
        rig.sender_router.send_to_peer(target, {"type": "chain_vote", "body": body})

    def block_part(i: int) -> None:
        rig.sender_router.send_to_peer(target, {"type": "chain_block", "body": block(i)})

    def order(i: int) -> None:
        rig.sender_router.send_to_peer(target, {"type": "chain_tx", "body": order_wire, "n": i})

    def decision(i: int) -> None:
        rig.sender_router.broadcast({"type": "chain_decision",
                                     "body": [i + 1, os.urandom(32), Commit(i + 1, 0, os.urandom(32), sigs).wire()]})

    entries = [[f"10.0.{n // 250}.{n % 250 + 1}", 7000 + n, None] for n in range(MAX_ENTRIES)]

    def pex(i: int) -> None:
        rig.out.send({"type": PEX_TYPE, "peers": entries})

    return {"vote": vote, "block": block_part, "order": order, "decision": decision, "pex": pex}


KINDS = {"vote": "chain_vote", "block": "chain_block", "order": "chain_tx", "decision": "chain_decision",
         "pex": PEX_TYPE}


async def _capture(rig: Rig, send: Callable[[int], None], count: int) -> tuple[list[bytes], list[bytes]]:
    """What the sender wrote since the last capture (a heartbeat between rows too: the receiver's cipher must see
    every record, in order), and the plaintext of the row's own writes."""
    rig.plain.plain.clear()
    for start in range(0, count, BATCH):
        for i in range(start, min(count, start + BATCH)):
            send(i)
        await asyncio.sleep(0)          # the link seals and writes this pass's frames
    await asyncio.sleep(0)
    writes, rig.wire.writes = rig.wire.writes, []
    return writes, list(rig.plain.plain)


async def _path_ns(rig: Rig, row: str, writes: list[bytes], count: int) -> tuple[float, float]:
    """(wall, CPU) nanoseconds per message from the first byte fed to the last message handled; the wall time
    includes what the path leaves to later event-loop turns (the link's read turns), the CPU time only work."""
    kind = KINDS[row]
    rig.counts[kind] = 0
    rig.wanted[kind] = count
    rig.done[kind] = asyncio.get_running_loop().create_future()
    started, cpu = time.perf_counter_ns(), time.process_time_ns()
    for data in writes:             # one read per event-loop pass, as the socket's reads come
        rig.into.data_received(data)
        await asyncio.sleep(0)
    try:
        await asyncio.wait_for(rig.done[kind], 60)
    except asyncio.TimeoutError:
        raise RuntimeError(f"{row}: {rig.counts[kind]} of {count} reached the handler (links {rig.out.state}, "
                           f"{rig.into.state}; receiver {rig.receiver.status().get('close_reasons')})") from None
    return (time.perf_counter_ns() - started) / count, (time.process_time_ns() - cpu) / count


def _frames_ns(plain: list[bytes], count: int) -> float:
    decoder = FrameDecoder()
    started = time.perf_counter_ns()
    decoded = 0
    for data in plain:
        decoded += len(decoder.feed(data))
    elapsed = time.perf_counter_ns() - started
    assert decoded >= count, (decoded, count)
    return elapsed / count


def _bodies(plain: list[bytes]) -> list[bytes]:
    """The msgpack body of every frame in the plaintext (each a 4-byte length, then the body)."""
    bodies = []
    for data in plain:
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack_from(">I", data, pos)
            bodies.append(data[pos + 4:pos + 4 + length])
            pos += 4 + length
    return bodies


def _msgpack_ns(bodies: list[bytes], count: int) -> float:
    unpackb = msgpack.unpackb
    started = time.perf_counter_ns()
    for body in bodies:
        unpackb(body, raw=False)
    return (time.perf_counter_ns() - started) / count


@dataclass
class Row:
    """One row's measurements, a value per round."""

    paths: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    frames: list[float] = field(default_factory=list)
    bares: list[float] = field(default_factory=list)
    size: int = 0

    def add(self, path: float, cpu: float, frames: float, bare: float, size: int) -> None:
        self.paths.append(path)
        self.cpus.append(cpu)
        self.frames.append(frames)
        self.bares.append(bare)
        self.size = size


async def _run(messages: int, rounds: int) -> dict[str, Row]:
    with tempfile.TemporaryDirectory() as tmp:
        rig = await _rig(tmp)
        senders = _messages(rig)
        found: dict[str, Row] = {row: Row() for row in senders}
        try:
            for _ in range(rounds):         # rows interleaved, so drift on a shared machine hits all alike
                for row, send in senders.items():
                    writes, plain = await _capture(rig, send, messages)
                    path, cpu = await _path_ns(rig, row, writes, messages)
                    bodies = _bodies(plain)
                    found[row].add(path, cpu, _frames_ns(plain, messages), _msgpack_ns(bodies, messages),
                                   sum(map(len, bodies)) // len(bodies))
        finally:
            for peers, router in ((rig.sender, rig.sender_router), (rig.receiver, rig.receiver_router)):
                await router.stop()
                await peers.stop()
        return found


def main(argv: list[str]) -> None:
    opts = parse_options(argv, {"messages": MESSAGES, "rounds": ROUNDS}, quick={"messages": 5_000, "rounds": 3},
                         smoke={"messages": 200, "rounds": 1})
    found = asyncio.run(_run(opts["messages"], opts["rounds"]))
    rows = []
    for row, found_row in found.items():
        path, bare = statistics.median(found_row.paths), statistics.median(found_row.bares)
        rows.append([row, KINDS[row], found_row.size, round(bare), round(statistics.median(found_row.frames)),
                     round(path), round(statistics.median(found_row.cpus)), path / bare, round(1e9 / path)])
    print_table(f"decode + dispatch per message, socket bytes to handler ({opts['messages']} messages, median of "
                f"{opts['rounds']} rounds)",
                ["row", "type", "body bytes", "msgpack ns", "frames ns", "path ns", "path CPU ns", "ratio", "messages/s"],
                rows)
