"""The `exchange-node` CLI with one component made faulty, for lifecycle tests:
`python -m tests.integration.faulty_node start ...` with FAULTY=<component>.<start|stop>.<raise|hang>
(e.g. `chain.start.raise`, `chain.stop.hang`). A hang ignores cancellation, the worst case a stop can meet."""
from __future__ import annotations

import asyncio
import os
from typing import Any

from config import Settings
from node.app import ExchangeNode
from node.cli.main import main


def make_faulty() -> None:
    component, when, how = os.environ["FAULTY"].split(".")
    original = ExchangeNode.__init__

    def init(self: ExchangeNode, settings: Settings) -> None:
        original(self, settings)

        async def fault(*_: Any) -> None:
            if how == "raise":
                raise RuntimeError(f"{component} {when} broke (injected)")
            print(f"FAULT {component}.{when} hanging", flush=True)
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    continue

        setattr(getattr(self, component), when, fault)

    ExchangeNode.__init__ = init  # type: ignore[method-assign]


if __name__ == "__main__":
    make_faulty()
    main()
