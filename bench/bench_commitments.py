"""The ordered Merkle map (exchange/commitments): what a state commitment would cost and what its proofs weigh.

- Update cost per touched key at 10^3..10^6 keys: batches of random writes (half new keys, half new values
  of present keys, as a block's orders and fills would be) applied with `update` and hashed with `root()`,
  in CPU time per key, beside the baseline of one plain SHA-256 of the same key and value bytes per key
  measured in the same run, and the tree's depth.
- Proofs: a book's top 20 price levels (first-n proof over a levels map of 2 x 1,000 levels), a whole book of
  10,000 resting orders (range proof over the orders map in price-time order) and one order's status (key
  proof over 10,000 order ids) and an account's last 100 fills (first-n proof over an account map of 10,000
  fills keyed newest first, 50 open orders and 5 positions): bytes, build and Python verify time (decode
  included), beside a plain SHA-256 of the same answer bytes; and, when Node.js is installed, the browser
  verifier (node/console/static/proofs.js, WebCrypto) on the very same proofs.
- The state machine with and without its commitment (exchange/app/commitment.py): CPU time to apply a block of
  1,000 and of 5,000 limit orders (a second of 1,000 and 5,000 orders/s, one block a second) from 200 accounts,
  priced around a mid so about half cross, on a book already holding the orders of the warm-up blocks; and a
  snapshot's restore with the maps built from its rows against the same restore with the build left out.
Keys as docs/tradeoffs.md lays them out: a level is side (1 byte) | price key (8: the price for asks, its
complement for bids, so the best level sorts first on either side); an order is side | price key | sequence
(8); an order's status is keyed by the SHA-256 of its id; an account's row is kind (1) | 12 bytes (a fill:
2^64 - 1 - height, 2^32 - 1 - index in the block).
Run: `python -m bench commitments [--max_keys=N] [--batch=N] [--repeat=N] [--quick | --smoke]`.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import msgpack

from bench.options import parse_options
from bench.table import print_table
from exchange.app import ExchangeParams, ExchangeState
from exchange.app.commitment import StateCommitment
from exchange.app.txs import NewOrderOp, SignedTx
from exchange.commitments.proofs import Proof
from exchange.commitments.queries import (prove_account, prove_book, prove_order, verify_account, verify_book,
                                          verify_order)
from exchange.commitments.tree import MerkleMap
from exchange.commitments.verify import verify_first, verify_get, verify_range

SEED = 20261129
BID, ASK = 0, 1
TOP64, TOP32 = (1 << 64) - 1, (1 << 32) - 1
OPEN, FILL, POSITION = 0, 1, 2          # an account map's kinds, its keys' first byte
VERIFIER = Path(__file__).resolve().parents[1] / "node" / "console" / "static" / "proofs.js"


def level_key(side: int, price: int) -> bytes:
    return bytes([side]) + (TOP64 - price if side == BID else price).to_bytes(8, "big")


def order_key(side: int, price: int, seq: int) -> bytes:
    return level_key(side, price) + seq.to_bytes(8, "big")


# --------------------------------------------------------------------------- update cost

def update_row(rnd: random.Random, size: int, batch: int, repeat: int) -> list[object]:
    keys = [rnd.randbytes(32) for _ in range(size)]
    tree = MerkleMap.build(32, {k: rnd.randbytes(24) for k in keys})
    tree.root()
    tree_cpu, base_cpu = [], []
    for _ in range(repeat):
        changes: dict[bytes, bytes | None] = {rnd.randbytes(32): rnd.randbytes(24) for _ in range(batch // 2)}
        changes.update({rnd.choice(keys): rnd.randbytes(24) for _ in range(batch - batch // 2)})
        started = time.process_time()
        tree.update(changes)
        tree.root()
        tree_cpu.append((time.process_time() - started) / len(changes))
        started = time.process_time()
        for key, value in changes.items():
            hashlib.sha256(key + (value or b"")).digest()
        base_cpu.append((time.process_time() - started) / len(changes))
    per_key, base = statistics.median(tree_cpu), statistics.median(base_cpu)
    return [f"{size:,}", batch, tree.depth(), per_key * 1e6, base * 1e6, f"{per_key / base:.0f}x"]


# --------------------------------------------------------------------------- proofs

def books(rnd: random.Random, levels: int, orders: int) -> tuple[MerkleMap, MerkleMap, MerkleMap, bytes]:
    level_map = MerkleMap.build(9, {level_key(side, 10_000 + (p if side == ASK else -p)):
                                    msgpack.packb([rnd.randrange(1, 10_000), rnd.randrange(1, 50)])
                                    for side in (BID, ASK) for p in range(1, levels + 1)})
    resting = {order_key(rnd.choice((BID, ASK)), 10_000 + rnd.randrange(-levels, levels), seq):
               msgpack.packb([rnd.randbytes(16), rnd.randbytes(32), rnd.randrange(1, 1_000)]) for seq in range(orders)}
    order_map = MerkleMap.build(17, resting)
    ids = [rnd.randbytes(16) for _ in range(orders)]
    status_map = MerkleMap.build(32, {hashlib.sha256(i).digest(): msgpack.packb(["resting", 0, rnd.randbytes(17)])
                                      for i in ids})
    return level_map, order_map, status_map, hashlib.sha256(ids[len(ids) // 2]).digest()


def verify_answer(op: str, root: bytes, lo: bytes, hi: bytes, n: int, data: bytes) -> object:
    """What a light client does with a node's answer: decode the proof and check it against the root."""
    proof = Proof.decode(data)
    if op == "first":
        return verify_first(root, lo, hi, n, proof)
    return verify_range(root, lo, hi, proof) if op == "range" else verify_get(root, lo, proof)


def account(rnd: random.Random, fills: int) -> MerkleMap:
    """One account's map: open orders, `fills` fills newest first (one a block, index 0) and a few positions."""
    rows = {bytes([OPEN]) + rnd.randbytes(32)[:12]: msgpack.packb([rnd.randrange(1, 1_000)]) for _ in range(50)}
    rows |= {bytes([FILL]) + (TOP64 - height).to_bytes(8, "big") + TOP32.to_bytes(4, "big"):
             msgpack.packb([rnd.randbytes(16), rnd.randrange(9_000, 11_000), rnd.randrange(1, 100)])
             for height in range(1, fills + 1)}
    rows |= {bytes([POSITION]) + rnd.randbytes(12): msgpack.packb([rnd.randrange(-500, 500), 0]) for _ in range(5)}
    return MerkleMap.build(13, rows)


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def proof_rows(rnd: random.Random, levels: int, orders: int, repeat: int) -> tuple[list[list[object]], list[dict[str, object]]]:
    level_map, order_map, status_map, one_id = books(rnd, levels, orders)
    account_map = account(rnd, orders)
    fills_lo, fills_hi = bytes([FILL]) + bytes(12), bytes([FILL]) + b"\xff" * 12
    lo, hi = level_key(BID, TOP64 - 0), level_key(BID, 0)      # every bid level, best first
    every_lo, every_hi = bytes(17), b"\xff" * 17
    cases = [
        ("top 20 bid levels", "first", level_map, lo, hi, 20, lambda: level_map.prove_first(lo, hi, 20)),
        (f"whole book, {len(order_map):,} orders", "range", order_map, every_lo, every_hi, 0,
         lambda: order_map.prove_range(every_lo, every_hi)),
        ("one order's status", "get", status_map, one_id, one_id, 0, lambda: status_map.prove_get(one_id)),
        (f"last 100 of {orders:,} fills", "first", account_map, fills_lo, fills_hi, 100,
         lambda: account_map.prove_first(fills_lo, fills_hi, 100)),
    ]
    rows, for_js = [], []
    for name, op, tree, a, b, n, prove in cases:
        root = tree.root()
        build = timed(prove, repeat)
        answer, proof = prove()
        data = proof.encode()
        check = partial(verify_answer, op, root, a, b, n, data)
        check()
        entries = answer if isinstance(answer, list) else [(a, answer or b"")]
        plain = b"".join(k + v for k, v in entries)
        verify = timed(check, repeat)
        base = timed(partial(hashlib.sha256, plain), max(repeat, 50))
        rows.append([name, len(entries), f"{len(plain):,}", f"{len(data):,}", f"{len(data) / len(plain):.2f}x",
                     build * 1e3, verify * 1e3, base * 1e3, f"{verify / base:,.0f}x"])
        for_js.append({"name": name, "op": op, "root": root.hex(), "lo": a.hex(), "hi": b.hex(), "n": n,
                       "proof": data.hex(), "entries": len(entries)})
    return rows, for_js


JS = """
import { verifyRange, verifyGet, verifyFirst } from %s;
import { readFileSync } from "node:fs";
const hex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
const { cases, repeat } = JSON.parse(readFileSync(0, "utf8"));
const out = [];
for (const c of cases) {
  const [root, lo, hi, proof] = [hex(c.root), hex(c.lo), hex(c.hi), hex(c.proof)];
  const run = () => c.op === "first" ? verifyFirst(root, lo, hi, c.n, proof)
    : c.op === "range" ? verifyRange(root, lo, hi, proof) : verifyGet(root, lo, proof);
  const got = await run();
  const count = c.op === "get" ? (got === null ? 0 : 1) : got.length;
  if (count !== c.entries) throw new Error(`${c.name}: ${count} entries, expected ${c.entries}`);
  const samples = [];
  for (let i = 0; i < repeat; i++) { const t = performance.now(); await run(); samples.push(performance.now() - t); }
  samples.sort((a, b) => a - b);
  const plain = new Uint8Array(proof.length);
  const base = [];
  for (let i = 0; i < Math.max(repeat, 50); i++) {
    const t = performance.now(); await crypto.subtle.digest("SHA-256", plain); base.push(performance.now() - t);
  }
  base.sort((a, b) => a - b);
  out.push([c.name, samples[samples.length >> 1], base[base.length >> 1]]);
}
process.stdout.write(JSON.stringify(out));
"""


def js_rows(cases: list[dict[str, object]], repeat: int) -> list[list[object]] | None:
    node = shutil.which("node")
    if node is None:
        return None
    done = subprocess.run([node, "--input-type=module", "-e", JS % json.dumps(VERIFIER.as_uri())],
                          input=json.dumps({"cases": cases, "repeat": repeat}), capture_output=True, text=True,
                          timeout=600, check=True)
    return [[name, verify, base, f"{verify / base:,.0f}x"] for name, verify, base in json.loads(done.stdout)]


# --------------------------------------------------------------------------- the state machine with and without

CHAIN = "ab" * 32
T0 = 1_700_000_000_000


def order_blocks(rnd: random.Random, per_block: int, blocks: int) -> list[list[SignedTx]]:
    """Blocks of one-order transactions from 200 accounts, limit orders within 20 ticks of a mid (about half cross)."""
    accounts = [rnd.randbytes(32) for _ in range(200)]
    made = []
    for height in range(1, blocks + 1):
        txs = []
        for n in range(per_block):
            side = rnd.choice(("buy", "sell"))
            ticks = 10_000 + rnd.randint(-20, 20) + (5 if side == "sell" else -5)
            op = NewOrderOp.parse("BTC-USD", side, "limit", f"{ticks // 100}.{ticks % 100:02d}",
                                  f"0.{rnd.randint(1, 99):04d}", None)
            txs.append(SignedTx(CHAIN, rnd.choice(accounts), f"{height}-{n}", T0 + height * 1_000 + 20_000, (op,),
                                bytes(64)))
        made.append(txs)
    return made


def apply_blocks(blocks: list[list[SignedTx]], warm: int, commitments: bool) -> tuple[list[float], ExchangeState]:
    """CPU seconds of each block after the first `warm` (begin_block, apply_tx each, end_block)."""
    state = ExchangeState(ExchangeParams("BTC-USD", max_open_orders=None), CHAIN, commitments=commitments)
    times = []
    for height, txs in enumerate(blocks, 1):
        started = time.process_time()
        state.begin_block(height, T0 + height * 1_000)
        for tx in txs:
            state.apply_tx(tx)
        state.end_block()
        if height > warm:
            times.append(time.process_time() - started)
    return times, state


def state_proof_rows(state: ExchangeState, repeat: int) -> list[list[object]]:
    """The proofs a node serves (exchange/commitments/queries.py) from a state the apply rows left: bytes of the
    chain of proofs from the state root, build and verify (decode included) wall ms."""
    maps, root = state.commitment, state.state_root
    assert maps is not None and root is not None
    order_id = next(iter(state.open_orders))
    account = max(maps.accounts, key=lambda a: len(maps.accounts[a].fills))
    fills = min(100, len(maps.accounts[account].fills))
    cases: list[tuple[str, Callable[[], list[Proof]], Callable[[list[Proof]], object]]] = [
        ("book, top 20 levels a side", lambda: prove_book(maps, "BTC-USD", 20),
         lambda proofs: verify_book(root, "BTC-USD", 20, proofs)),
        ("book, every level", lambda: prove_book(maps, "BTC-USD", None),
         lambda proofs: verify_book(root, "BTC-USD", None, proofs)),
        ("an order's status", lambda: prove_order(maps, order_id), lambda proofs: verify_order(root, order_id, proofs)),
        (f"an account's last {fills} fills + positions", lambda: prove_account(maps, account, 100),
         lambda proofs: verify_account(root, account, 100, proofs)),
    ]
    rows: list[list[object]] = []
    for name, prove, check in cases:
        proofs = prove()
        wire = [proof.encode() for proof in proofs]
        rows.append([name, len(proofs), sum(map(len, wire)), timed(prove, repeat) * 1e3,
                     timed(partial(_decode_and_check, check, wire), repeat) * 1e3])
    return rows


def _decode_and_check(check: Callable[[list[Proof]], object], wire: list[bytes]) -> object:
    return check([Proof.decode(data) for data in wire])


def apply_rows(rnd: random.Random, rates: list[int], warm: int, timed: int, repeat: int,
               proofs: list[list[object]]) -> list[list[object]]:
    rows: list[list[object]] = []
    for rate in rates:
        blocks = order_blocks(rnd, rate, warm + timed)
        samples: dict[bool, list[float]] = {False: [], True: []}
        state = None
        for _ in range(repeat):
            for commitments in (False, True):           # interleaved: the shared machine's load hits both
                times, state = apply_blocks(blocks, warm, commitments)
                samples[commitments] += times
        without, with_ = statistics.median(samples[False]), statistics.median(samples[True])
        assert state is not None and state.commitment is not None
        if not proofs:
            proofs += state_proof_rows(state, repeat)
        rows.append([f"{rate:,} orders/s", "block apply", len(state.open_orders), without * 1e3, with_ * 1e3,
                     f"{(with_ / without - 1) * 100:+.1f} %"])
        data = state.snapshot()
        restores: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeat):
            for commitments in (False, True):           # interleaved, as the blocks are
                restores[commitments].append(restore_cpu(state.params, data, commitments))
        plain, whole = statistics.median(restores[False]), statistics.median(restores[True])
        rows.append([f"{rate:,} orders/s", f"restore ({len(data):,} B)", len(state.open_orders), plain * 1e3,
                     whole * 1e3, f"{(whole / plain - 1) * 100:+.1f} %"])
    return rows


def restore_cpu(params: ExchangeParams, data: bytes, commitments: bool) -> float:
    """CPU seconds of a snapshot's restore, with its maps built or (commitments False) with the build left out:
    the same restore as a node's, the build replaced by nothing for the baseline."""
    real = StateCommitment.__dict__["build"]
    if not commitments:
        StateCommitment.build = classmethod(lambda cls, state: None)  # type: ignore[method-assign,assignment]
    try:
        started = time.process_time()
        ExchangeState.restore(params, data, CHAIN)
        return time.process_time() - started
    finally:
        StateCommitment.build = real  # type: ignore[method-assign]


def main(flags: list[str]) -> None:
    opts = parse_options(flags, {"max_keys": 1_000_000, "batch": 1_000, "repeat": 5, "levels": 1_000,
                                 "orders": 10_000, "warm": 10, "timed": 5, "only_state": 0},
                         quick={"max_keys": 100_000, "repeat": 3},
                         smoke={"max_keys": 10_000, "batch": 200, "repeat": 1, "levels": 100, "orders": 1_000,
                                "warm": 2, "timed": 1})
    rnd = random.Random(SEED)
    served: list[list[object]] = []
    rates = [1_000, 5_000] if opts["max_keys"] > 10_000 else [100]
    print_table(f"The state machine with and without its commitment: CPU ms per block (median of {opts['timed']} "
                f"blocks x {opts['repeat']}, after {opts['warm']} warm-up blocks; one block a second), and a "
                f"snapshot's restore without and with the maps built",
                ["rate", "what", "resting orders", "without ms", "with ms", "cost"],
                apply_rows(rnd, rates, opts["warm"], opts["timed"], opts["repeat"], served))
    print_table(f"The proofs a node serves, from the state of the first row (queries.py): proofs from the state "
                f"root, their bytes, prove and verify (decode included) wall ms, median of {opts['repeat']}",
                ["answer", "proofs", "bytes", "prove ms", "verify ms"], served)
    if opts["only_state"]:
        return
    rnd = random.Random(SEED)
    sizes = [s for s in (1_000, 10_000, 100_000, 1_000_000) if s <= opts["max_keys"]]
    rows = [update_row(rnd, size, opts["batch"], opts["repeat"]) for size in sizes]
    print_table(f"Update cost per touched key: batches of {opts['batch']:,} writes (half new keys) then root(), "
                f"32-byte keys, CPU time, median of {opts['repeat']}",
                ["keys", "batch", "depth", "us/key", "sha256 us/key", "vs sha256"], rows)
    proofs, for_js = proof_rows(rnd, opts["levels"], opts["orders"], opts["repeat"])
    print_table("Proofs (Python): answer bytes (keys + values), proof bytes, prove and verify (decode included) "
                f"wall ms, median of {opts['repeat']}, against one SHA-256 of the answer's bytes",
                ["proof", "entries", "answer B", "proof B", "proof/answer", "prove ms", "verify ms", "sha256 ms",
                 "verify vs sha256"], proofs)
    browser = js_rows(for_js, max(opts["repeat"], 5))
    if browser is None:
        print("\n  (no Node.js: the browser verifier's table is skipped)")
    else:
        print_table("Proofs (node/console/static/proofs.js under Node.js, WebCrypto): verify wall ms, median, against "
                    "one WebCrypto SHA-256 of as many bytes as the proof",
                    ["proof", "verify ms", "sha256 ms", "verify vs sha256"], browser)
