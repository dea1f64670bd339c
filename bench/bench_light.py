"""The light client's costs (node/light): checking a certified header, and checking a proved state read.

- Header verification at 4, 7, 31 and 100 validators: `verified_header` on a header signed by a quorum of the set
  (decode, the set proven from the genesis, each signature checked with Ed25519), wall ms, median; the baseline is
  the 4-validator set measured in the same run.
- A proved read's checks on top of its header (`node/light/reads.py`: the proofs decoded and walked from the state
  root, the answer compared with what they prove), for a book's top 20 levels and whole, an order, the newest 100
  fills and positions of the busiest account, on the state `bench commitments` leaves after its 1,000 orders/s
  blocks; the baseline is one SHA-256 of the proofs' bytes.
Run: `python -m bench light [--repeat=N] [--smoke]`.
"""
from __future__ import annotations

import base64
import hashlib
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

from bench.options import parse_options
from bench.table import print_table
from exchange.chain.types.blocks import GENESIS_PARENT, PRECOMMIT, Block, Commit, Header, vote_bytes
from exchange.chain.types.codec import pack
from exchange.chain.types.genesis import Genesis
from exchange.crypto import SigningKey
from bench.bench_commitments import apply_blocks, order_blocks
from exchange.app import ExchangeState
from exchange.app.views import trade_view
from exchange.commitments.layout import unpack
from exchange.commitments.proofs import Proof
from exchange.commitments.queries import prove_account, prove_book, prove_order
from node.light.reads import Check, book_check, fills_check, order_check
from node.light.verify import Proven, proven, verified_header

SEED = 20261129
NOW_MS = 1_700_000_000_000


def _b64(value: object) -> str:
    return base64.b64encode(pack(value)).decode()


def certified_header(size: int) -> tuple[Callable[[], object], int]:
    """A call that verifies a header of a chain founded by `size` validators, and how many signatures it checks."""
    keys = [SigningKey(bytes([n % 256, n // 256]) + bytes(30)) for n in range(size)]
    genesis = Genesis("bench-light", 1_000, keys[0].public_key, tuple(k.public_key for k in keys), max_validators=size,
                      pinned=True)
    chain = proven("bench", None, {"genesis": _b64(genesis.wire())}, {"proofs": []})
    validators = genesis.first_validators()
    header = Header(genesis.chain_id, 1, NOW_MS, GENESIS_PARENT, keys[0].public_key, bytes(32), validators.hash,
                    Block.txs_hash([]), None)
    by_key = {k.public_key: k for k in keys}
    sigs = tuple((i, by_key[key].sign(vote_bytes(genesis.chain_id, PRECOMMIT, 1, 0, header.id)))
                 for i, key in enumerate(validators.keys[:validators.quorum]))
    answer = {"header": _b64(header.wire()), "commit": _b64(Commit(1, 0, header.id, sigs).wire())}
    return (lambda: verified_header("bench", chain, answer, now_ms=NOW_MS + 500)), len(sigs)


def _check(check: Check, chain: Proven, root: bytes, answer: dict[str, object], wire: list[bytes]) -> object:
    return check("bench", chain, root, answer, [Proof.decode(data) for data in wire])


def read_rows(state: ExchangeState, chain: Proven, repeat: int) -> list[list[object]]:
    maps, root = state.commitment, state.state_root
    assert maps is not None and root is not None
    order_id = next(iter(state.open_orders))
    busiest = max(maps.accounts, key=lambda a: len(maps.accounts[a].fills))
    held = maps.account_maps(busiest)
    assert held is not None
    rows = [unpack(value) for _, value in held[0].iterate()][:100]
    fills = {"fills": [trade_view(tuple(r[1:]), state.params.registry.get(r[0])) for r in rows],  # type: ignore[index]
             "positions": state.position(busiest)["positions"]}
    cases: list[tuple[str, Check, dict[str, object], list[Proof]]] = [
        ("book, top 20 levels a side", book_check("BTC-USD", 20), dict(state.book("BTC-USD", 20, with_digest=False)),
         prove_book(maps, "BTC-USD", 20)),
        ("book, every level", book_check("BTC-USD", None), dict(state.book("BTC-USD", 100_000, with_digest=False)),
         prove_book(maps, "BTC-USD", None)),
        ("an order", order_check(order_id), {"order": state.order(order_id)}, prove_order(maps, order_id)),
        (f"{len(rows)} fills + positions", fills_check(busiest, 100), fills, prove_account(maps, busiest, 100)),
    ]
    made = []
    for name, check, answer, proofs in cases:
        wire = [proof.encode() for proof in proofs]
        ms = timed(partial(_check, check, chain, root, answer, wire), repeat) * 1e3
        sha = timed(partial(hashlib.sha256, b"".join(wire)), repeat) * 1e3
        made.append([name, sum(map(len, wire)), ms, sha, f"{ms / sha:,.0f}x"])
    return made


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main(flags: list[str]) -> None:
    opts = parse_options(flags, {"repeat": 50}, smoke={"repeat": 2})
    random.seed(SEED)
    rows: list[list[object]] = []
    base = None
    for size in (4, 7, 31, 100):
        check, signatures = certified_header(size)
        ms = timed(check, opts["repeat"]) * 1e3
        base = base or ms
        rows.append([size, signatures, ms, ms / signatures, f"{ms / base:.2f}x"])
    print_table(f"Header verification (Python, node/light/verify.py): wall ms, median of {opts['repeat']}, against "
                f"the 4-validator set in the same run",
                ["validators", "signatures checked", "verify ms", "ms per signature", "vs 4"], rows)
    rate, blocks = (1_000, 10) if opts["repeat"] > 2 else (100, 3)
    _, state = apply_blocks(order_blocks(random.Random(SEED), rate, blocks), blocks, True)
    genesis = Genesis("bench-light", 1_000, bytes(32), (bytes(32),), exchange=state.params.to_wire())
    chain = Proven(genesis, ())
    print_table(f"A proved read's checks past its header (node/light/reads.py: decode, proofs from the state root, "
                f"the answer compared), wall ms, median of {opts['repeat']}, on {len(state.open_orders):,} resting "
                f"orders, against one SHA-256 of the proofs' bytes",
                ["read", "proof bytes", "verify ms", "sha256 ms", "vs sha256"], read_rows(state, chain, opts["repeat"]))
