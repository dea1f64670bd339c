"""`exchange-node light status --node URL [--witness URL ...]`: what a node says, verified before it is printed.

The trust root (the chain id, shown by its fingerprint) is learnt on first use into a file, or pinned with --trust;
it is never replaced silently. A node whose answer does not verify is named on stderr and dropped; the command exits 1
with one line when no node verifies or two nodes serve conflicting certified headers (kept as evidence).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from node.cli.main import fail

DEFAULT_TRUST_DIR = Path(os.environ.get("EXCHANGE_NODE_LIGHT_DIR", Path.home() / ".exchange-node" / "light"))


def register(cli: click.Group) -> None:
    @cli.group()
    def light() -> None:
        """Verify what nodes serve against the validators' signatures (a light client)."""

    @light.command("status")
    @click.option("--node", "primary", required=True, metavar="API_URL", help="The node to ask first.")
    @click.option("--witness", "witnesses", multiple=True, metavar="API_URL",
                  help="Another node, checked the same way and compared with the first (repeatable).")
    @click.option("--trust", "pin", default=None, metavar="CHAIN_ID", help="The chain id to trust (64 hex digits).")
    @click.option("--trust-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_TRUST_DIR,
                  show_default=True, help="Where the trust root and any evidence of a fork are kept.")
    @click.option("--max-age", type=click.FloatRange(1.0, 3600.0), default=30.0, show_default=True,
                  help="Seconds a latest header may be old (a live chain decides a block a second).")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object.")
    def light_status(primary: str, witnesses: tuple[str, ...], pin: str | None, trust_dir: Path, max_age: float,
                     as_json: bool) -> None:
        """The newest header a node serves, verified: its height, and how many validators signed it."""
        from node.cli.client import call
        from node.light.client import NoneVerified, TrustChanged, TrustRoot, status
        from node.light.verify import Conflict, fingerprint

        if pin is not None and not (len(pin) == 64 and all(c in "0123456789abcdef" for c in pin)):
            fail(f"--trust must be a chain id of 64 lower-case hex digits, got {pin[:70]!r}", 2)
        nodes = [url.rstrip("/") for url in (primary, *witnesses)]

        def fetch(node: str, path: str) -> object:
            return call(node, "GET", path, timeout=10.0)[1]
        try:
            trust = TrustRoot.load(trust_dir / "trust.json")
            found = status(nodes, trust, fetch, pin=pin, max_age_ms=int(max_age * 1000), evidence_dir=trust_dir)
        except TrustChanged as exc:
            fail(str(exc))
        except Conflict as exc:
            fail(f"{exc}; evidence kept in {trust_dir}")
        except NoneVerified as exc:
            fail(f"nothing verified: {exc}")
        for refusal in found.refused:
            click.echo(f"exchange-node: refused {refusal.node}: {refusal.message} ({refusal.reason})", err=True)
        if as_json:
            click.echo(json.dumps(found.as_json()))
            return
        head = found.verified
        if found.learnt:
            click.echo(f"trusting chain {fingerprint(found.chain_id)} from now on (learnt from {head.node}, kept in "
                       f"{trust_dir / 'trust.json'})")
        click.echo(f"verified at height {head.height} by {head.signers} of {head.validators} validators (epoch "
                   f"{head.epoch}), from {head.node}; chain {fingerprint(found.chain_id)}")
        if found.agreeing:
            click.echo(f"witnesses agreeing: {', '.join(w.node for w in found.agreeing)}")
