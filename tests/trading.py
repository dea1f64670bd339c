"""Order load for real-process tests: traders that post and cancel orders at one node each, through a
recording client (tests/history.py), until told to stop.

Prices straddle one mid price so orders from different nodes cross and trade with each other; each
trader signs with its own node's accounts, so every cross-node trade moves value between accounts held
on different machines. Each trader keeps at most one request in flight, bounded in count and time.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.harness import ROOT
from tests.history import RecordingClient


def create_accounts(data_dir: Path, *names: str) -> None:
    """Account key pairs in a node's DATA_DIR, as its operator makes them (`exchange-node account new`),
    before the node starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_NODE")}
    for name in names:
        done = subprocess.run([sys.executable, "-m", "node.cli", "account", "new", name, "--data-dir", str(data_dir)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 or "exists" in done.stderr, done.stderr


def random_order(rng: random.Random, account: str, market: str = "BTC-USD", mid: int = 100) -> dict[str, Any]:
    side = rng.choice(["buy", "sell"])
    kind = rng.choice(["limit"] * 6 + ["ioc", "post_only"])
    offset = rng.randint(-3, 3)
    price = mid + (offset if side == "buy" else -offset)
    return {"market": market, "side": side, "type": kind, "price": f"{price}.{rng.randint(0, 9)}0",
            "qty": f"{rng.randint(1, 20) / 10:.1f}", "account": account}


class Trader(threading.Thread):
    """Posts orders (and now and then cancels one of its resting orders) at one node until stopped."""

    def __init__(self, client: RecordingClient, accounts: list[str], seed: int, stop: threading.Event, *,
                 wait: float = 1.0, cancel_share: float = 0.1, max_orders: int = 5000) -> None:
        super().__init__(name=f"trader-{client.name}", daemon=True)
        self.client = client
        self.accounts = accounts
        self.rng = random.Random(seed)
        self.stop_event = stop
        self.wait = wait
        self.cancel_share = cancel_share
        self.max_orders = max_orders
        self.resting: list[str] = []
        self.sent = 0
        self.outcomes: dict[int, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set() and self.sent < self.max_orders:
                self.step()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test through `error`
            self.error = exc

    def step(self) -> None:
        if self.resting and self.rng.random() < self.cancel_share:
            order_id = self.resting.pop(self.rng.randrange(len(self.resting)))
            self.client.cancel(order_id, wait=self.wait)
            return
        status, body = self.client.post_order(random_order(self.rng, self.rng.choice(self.accounts)), wait=self.wait)
        self.sent += 1
        self.outcomes[status] = self.outcomes.get(status, 0) + 1
        if status == 201 and body["order"]["status"] in ("open", "partially_filled"):
            self.resting.append(body["order"]["id"])
        elif status in (0, 503):
            self.stop_event.wait(0.2)       # the node is down or not ready: try again shortly


def run_traders(traders: list[Trader]) -> None:
    for trader in traders:
        trader.start()


def stop_traders(traders: list[Trader], stop: threading.Event, timeout: float = 40.0) -> None:
    stop.set()
    deadline = time.monotonic() + timeout
    for trader in traders:
        trader.join(max(0.1, deadline - time.monotonic()))
        assert not trader.is_alive(), f"{trader.name} did not stop"
        if trader.error is not None:
            raise trader.error
