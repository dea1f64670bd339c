"""`exchange-node indexer --node API_URL --db sqlite:///PATH | postgresql://...`: copy a node's final trades and fills
into a database (node/indexer.py), following it until stopped (Ctrl-C or SIGTERM), resuming where it stopped after a
crash."""
from __future__ import annotations

import logging
import signal
import sys
import time

import click

from node.cli.main import fail


def register(cli: click.Group) -> None:
    @cli.command()
    @click.option("--node", "node_url", required=True, metavar="API_URL", help="The node's control API to follow.")
    @click.option("--db", required=True, metavar="sqlite:///PATH|postgresql://...",
                  help="Where to keep the history: a SQLite file, or a PostgreSQL database.")
    @click.option("--token", envvar="EXCHANGE_NODE_TOKEN", default=None, help="The node's API token, if it asks one.")
    @click.option("--interval", type=click.FloatRange(0.05, 60.0), default=1.0, show_default=True,
                  help="Seconds between polls once caught up.")
    def indexer(node_url: str, db: str, token: str | None, interval: float) -> None:
        """Keep a node's trades and fills in a database (tables `trades` and `fills`, keyed by id)."""
        from node.cli.client import ApiFailure, NodeUnreachable, call
        from node.indexer import NodeTrades, follow, open_store

        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
        try:
            store = open_store(db)
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises for a database it cannot open, said
            fail(f"cannot open {db}: {exc}", 2)
        stopping = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.append(True))
        source = NodeTrades(node_url.rstrip("/"), token, call)
        while not stopping:
            try:
                follow(store, source, interval, lambda: not stopping)
            except (NodeUnreachable, ApiFailure) as exc:      # the node restarts or is busy: keep trying, loudly
                logging.getLogger("exchange_node.indexer").warning("the node at %s: %s; retrying", node_url, exc)
                time.sleep(interval)
        store.close()
