"""`exchange-node indexer --node API_URL [--node API_URL ...] --db sqlite:///PATH | postgresql://...`: replay a
network's certified blocks, verified (node/indexer_replica.py), into a database of its trades and fills
(node/indexer.py), following it until stopped (Ctrl-C or SIGTERM), resuming where it stopped after a crash."""
from __future__ import annotations

import logging
import signal
import sys

import click

from node.cli.main import fail


def register(cli: click.Group) -> None:
    @cli.command()
    @click.option("--node", "node_urls", required=True, multiple=True, metavar="API_URL",
                  help="A node's control API to take blocks from; several: the next when one is refused.")
    @click.option("--db", required=True, metavar="sqlite:///PATH|postgresql://...",
                  help="Where to keep the history: a SQLite file, or a PostgreSQL database.")
    @click.option("--token", envvar="EXCHANGE_NODE_TOKEN", default=None,
                  help="The nodes' API token, if they ask one (the chain routes are public).")
    @click.option("--interval", type=click.FloatRange(0.05, 60.0), default=1.0, show_default=True,
                  help="Seconds between polls once caught up.")
    def indexer(node_urls: tuple[str, ...], db: str, token: str | None, interval: float) -> None:
        """Keep a network's verified trades and fills in a database (tables `trades` and `fills`, keyed by id)."""
        from node.cli.client import call
        from node.indexer import open_store
        from node.indexer_follow import Follower, NodeBlocks, follow
        from node.indexer_replica import Diverged

        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
        try:
            store = open_store(db)
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises for a database it cannot open, said
            fail(f"cannot open {db}: {exc}", 2)
        stopping = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.append(True))
        follower = Follower(store, [NodeBlocks(url.rstrip("/"), token, call) for url in node_urls])
        try:
            follow(follower, interval, lambda: not stopping)
        except (Diverged, ValueError) as exc:
            fail(f"indexer stopped: {exc}", 1)
        finally:
            store.close()
