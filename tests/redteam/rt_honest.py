"""The honest trader of the red team's real-process tests: a thread placing one order at a time on a node and
recording how long each took to be final, so an attack's cost is read as that trader's latency."""
from __future__ import annotations

import threading
import time

from tests.harness import NodeProcess


class Honest(threading.Thread):
    """The node's own account placing a far-off limit order every 0.1 s, each waited for until final."""

    def __init__(self, node: NodeProcess) -> None:
        super().__init__(daemon=True)
        self.node, self.failed = node, 0
        self.done = threading.Event()
        self.samples: list[tuple[float, float]] = []       # (sent, latency)

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
