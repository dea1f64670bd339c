"""The honest trader of the red team's real-process tests: a thread placing one order at a time on a node and
recording how long each took to be final, so an attack's cost is read as that trader's latency; and the way the
attacks post signed transactions as any client would."""
from __future__ import annotations

import asyncio
import os
import threading
import time
from types import TracebackType
from typing import Sequence

import aiohttp

from exchange.app.txs import Op, SignedTx, sign_tx
from exchange.crypto import SigningKey
from tests.flood import p99
from tests.harness import NodeProcess, wait_until


class Honest(threading.Thread):
    """The node's own account placing a far-off post-only order every 0.1 s, each waited for until final; used as
    `with Honest(node) as honest:` (stopped and joined on leaving)."""

    def __init__(self, node: NodeProcess) -> None:
        super().__init__(daemon=True)
        self.node, self.failed = node, 0
        self.done = threading.Event()
        self.samples: list[tuple[float, float]] = []       # (sent, latency)
        self.started_at = 0.0

    def __enter__(self) -> "Honest":
        self.started_at = time.monotonic()
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.done.set()
        self.join(60)

    def baseline(self, samples: int = 30, timeout: float = 30.0) -> float:
        """Wait for `samples` answers before any attack; the time the baseline ends."""
        wait_until(lambda: len(self.samples) >= samples, timeout, message="the honest baseline")
        return time.monotonic()

    def run(self) -> None:
        n = 0
        while not self.done.is_set():
            n += 1
            order = {"market": "BTC-USD", "side": "sell", "price": str(900 + n % 50), "qty": "0.01",
                     "type": "post_only"}
            sent = time.monotonic()
            status, _ = self.node.api("POST", "/orders?wait=10", order, timeout=20)
            if status == 201:
                self.samples.append((sent, time.monotonic() - sent))
            else:
                self.failed += 1
            self.done.wait(max(0.0, 0.1 - (time.monotonic() - sent)))

    def window(self, start: float, end: float) -> list[float]:
        return [latency for sent, latency in self.samples if start <= sent < end]

    def p99(self, start: float, end: float) -> float:
        return p99(self.window(start, end))


def signed(chain_id: str, key: SigningKey, ops: Sequence[Op], acting_for: bytes | None = None) -> SignedTx:
    """`ops` signed by `key` (for `acting_for`, as its agent), a fresh nonce, expiring in a minute."""
    return sign_tx(key.sign, key.public_key, chain_id, os.urandom(8).hex(), int(time.time() * 1000) + 60_000, ops,
                   acting_for)


async def post_signed(node: NodeProcess, txs: list[SignedTx], wait: float, retry_for: float = 0.0) -> list[int]:
    """POST each signed transaction to /orders/batch (32 at a time): 200 applied or admitted, 422 when an op was
    refused, 429 when the rates refused it; one told to wait (429, account_rate) is sent again, as any client
    would, for `retry_for` seconds."""
    gate = asyncio.Semaphore(32)
    deadline = time.monotonic() + retry_for
    async with aiohttp.ClientSession(headers=node.auth_headers()) as session:
        async def one(tx: SignedTx) -> int:
            while True:
                async with gate, session.post(f"{node.api_url}/orders/batch?wait={wait}",
                                              json={"signed": tx.as_json()}) as answer:
                    body = await answer.json(content_type=None)
                    refused = [r["error"]["code"] for r in body.get("results", []) if r.get("error")]
                    if answer.status != 429 and "account_rate" not in refused:
                        return answer.status if not refused else 422
                    retry = min(1.0, float(answer.headers.get("Retry-After", "0.25")))
                if time.monotonic() + retry >= deadline:
                    return 429
                await asyncio.sleep(retry)
        return list(await asyncio.gather(*(one(tx) for tx in txs)))
