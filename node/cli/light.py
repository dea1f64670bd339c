"""`exchange-node light status|book|trades|order|fills --node URL [--witness URL ...]`: what a node says, verified before it
is printed (the state reads by their proofs against the certified state root, `node/light/reads.py`).

The trust root (the chain id, shown by its fingerprint) is learnt on first use into a file, or pinned with --trust;
it is never replaced silently. A node whose answer does not verify is named on stderr and dropped; the command exits 1
with one line when no node verifies or two nodes serve conflicting certified headers (kept as evidence).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from typing import TYPE_CHECKING, Callable, TypeVar
from urllib.parse import quote

import click

from node.cli.main import fail

if TYPE_CHECKING:
    from node.light.client import LightStatus, TrustRoot
    from node.light.reads import Check, VerifiedRead

DEFAULT_TRUST_DIR = Path(os.environ.get("EXCHANGE_NODE_LIGHT_DIR", Path.home() / ".exchange-node" / "light"))
ANSWER_BYTES = 64 * 1024 * 1024     # a node's answer read at most (a whole book with its proofs is a few MiB)


def _options(command: Callable[..., None]) -> Callable[..., None]:
    """The options every light command takes: the nodes, the trust root, freshness, the output."""
    for option in reversed((
            click.option("--node", "primary", required=True, metavar="API_URL", help="The node to ask first."),
            click.option("--witness", "witnesses", multiple=True, metavar="API_URL",
                         help="Another node, checked the same way and compared with the first (repeatable)."),
            click.option("--trust", "pin", default=None, metavar="CHAIN_ID", help="The chain id to trust (64 hex digits)."),
            click.option("--trust-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_TRUST_DIR,
                         show_default=True, help="Where the trust root and any evidence of a fork are kept."),
            click.option("--max-age", type=click.FloatRange(1.0, 3600.0), default=30.0, show_default=True,
                         help="Seconds a certifying header may be old (a live chain decides a block a second)."),
            click.option("--json", "as_json", is_flag=True, help="One JSON object."))):
        command = option(command)
    return command


def _checked_pin(pin: str | None) -> None:
    if pin is not None and not (len(pin) == 64 and all(c in "0123456789abcdef" for c in pin)):
        fail(f"--trust must be a chain id of 64 lower-case hex digits, got {pin[:70]!r}", 2)


T = TypeVar("T", "LightStatus", "VerifiedRead")


def _verified(primary: str, witnesses: tuple[str, ...], pin: str | None, trust_dir: Path, token: str | None,
              ask: Callable[[list[str], "TrustRoot", Callable[[str, str], object]], T]) -> T:
    """What `ask` makes of the nodes' answers, verified; exits 1 with one line when nothing verifies or the nodes
    serve a fork, and names each node refused on stderr."""
    from node.cli.client import call
    from node.light.client import NoneVerified, TrustChanged, TrustRoot
    from node.light.verify import Conflict

    _checked_pin(pin)
    nodes = [url.rstrip("/") for url in (primary, *witnesses)]

    def fetch(node: str, path: str) -> object:
        return call(node, "GET", path, timeout=10.0, token=token, deadline=10.0, max_bytes=ANSWER_BYTES)[1]
    try:
        found = ask(nodes, TrustRoot.load(trust_dir / "trust.json"), fetch)
    except TrustChanged as exc:
        fail(str(exc))
    except Conflict as exc:
        fail(f"{exc}; evidence kept in {trust_dir}")
    except NoneVerified as exc:
        fail(f"nothing verified: {exc}")
    for refusal in found.refused:
        click.echo(f"exchange-node: refused {refusal.node}: {refusal.message} ({refusal.reason})", err=True)
    return found


def _verified_read(primary: str, witnesses: tuple[str, ...], pin: str | None, trust_dir: Path, max_age: float,
                   path: str, check: "Check", token: str | None) -> "VerifiedRead":
    """The first node's proved answer to `path` that verifies; exits 1 with one line when none does."""
    from node.light.reads import read
    return _verified(primary, witnesses, pin, trust_dir, token, lambda nodes, trust, fetch: read(
        nodes, trust, fetch, path, check, pin=pin, max_age_ms=int(max_age * 1000), evidence_dir=trust_dir))


def _show(found: "VerifiedRead", as_json: bool, text: Callable[[dict[str, object]], str]) -> None:
    """The verified read as one JSON object, or the line saying what verified it and `text` of its result."""
    if as_json:
        click.echo(json.dumps(found.as_json()))
        return
    head = found.certified_by
    click.echo(f"verified at height {found.height} by {head.signers} of {head.validators} validators (the header of "
               f"height {head.height}), from {head.node}; chain {found.chain_id[:16]}")
    click.echo(text(found.result))


def register(cli: click.Group) -> None:
    @cli.group()
    def light() -> None:
        """Verify what nodes serve against the validators' signatures (a light client)."""

    token_option = click.option("--token", envvar="EXCHANGE_NODE_TOKEN", default=None, metavar="TOKEN",
                                help="The API token sent with each read (or EXCHANGE_NODE_TOKEN).")

    @light.command("book")
    @click.argument("market")
    @click.option("--depth", type=click.IntRange(1, 100_000), default=None,
                  help="The best N levels of each side (default: every level).")
    @token_option
    @_options
    def light_book(market: str, depth: int | None, token: str | None, primary: str, witnesses: tuple[str, ...],
                   pin: str | None, trust_dir: Path, max_age: float, as_json: bool) -> None:
        """A market's book, proved against the certified state root."""
        from node.light.reads import book_check
        path = f"/book/{quote(market, safe='')}?proof=1" + ("" if depth is None else f"&depth={depth}")
        found = _verified_read(primary, witnesses, pin, trust_dir, max_age, path, book_check(market, depth), token)

        def levels(result: dict[str, object]) -> str:
            asks, bids = result["asks"], result["bids"]
            assert isinstance(asks, list) and isinstance(bids, list)
            return "\n".join([*(f"ask {price:>14} {qty:>14}" for price, qty in reversed(asks)),
                              *(f"bid {price:>14} {qty:>14}" for price, qty in bids)])
        _show(found, as_json, levels)

    @light.command("trades")
    @click.argument("market")
    @token_option
    @_options
    def light_trades(market: str, token: str | None, primary: str, witnesses: tuple[str, ...], pin: str | None,
                     trust_dir: Path, max_age: float, as_json: bool) -> None:
        """The trades of the newest block in a market, proved: each one's inclusion in the block that made it."""
        from node.light.reads import trades_check
        path = f"/trades/{quote(market, safe='')}?proof=1"
        found = _verified_read(primary, witnesses, pin, trust_dir, max_age, path, trades_check(market), token)
        _show(found, as_json, lambda result: json.dumps(result["trades"], indent=1))

    @light.command("order")
    @click.argument("order_id")
    @token_option
    @_options
    def light_order(order_id: str, token: str | None, primary: str, witnesses: tuple[str, ...], pin: str | None,
                    trust_dir: Path, max_age: float, as_json: bool) -> None:
        """An order's status, proved (or proved absent) against the certified state root."""
        from node.light.reads import order_check
        path = f"/orders/{quote(order_id, safe='')}?proof=1"
        found = _verified_read(primary, witnesses, pin, trust_dir, max_age, path, order_check(order_id), token)
        _show(found, as_json, lambda result: json.dumps(result["order"]) if result["order"] is not None
              else f"order {order_id}: not in the state (never accepted, or past the closed-order history)")

    @light.command("fills")
    @click.argument("account")
    @click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
                  help="The newest N fills.")
    @token_option
    @_options
    def light_fills(account: str, limit: int, token: str | None, primary: str, witnesses: tuple[str, ...],
                    pin: str | None, trust_dir: Path, max_age: float, as_json: bool) -> None:
        """An account's newest fills and its positions, proved against the certified state root."""
        from node.light.reads import fills_check
        if not (len(account) == 64 and all(c in "0123456789abcdef" for c in account)):
            fail(f"ACCOUNT must be an account id of 64 lower-case hex digits, got {account[:70]!r}", 2)
        path = f"/accounts/{account}/fills?proof=1&limit={limit}"
        found = _verified_read(primary, witnesses, pin, trust_dir, max_age, path, fills_check(account, limit), token)
        _show(found, as_json, lambda result: json.dumps({"positions": result["positions"], "fills": result["fills"]},
                                                        indent=1))

    @light.command("status")
    @token_option
    @_options
    def light_status(token: str | None, primary: str, witnesses: tuple[str, ...], pin: str | None, trust_dir: Path,
                     max_age: float, as_json: bool) -> None:
        """The newest header a node serves, verified: its height, and how many validators signed it."""
        from node.light.client import status
        from node.light.verify import fingerprint

        found = _verified(primary, witnesses, pin, trust_dir, token, lambda nodes, trust, fetch: status(
            nodes, trust, fetch, pin=pin, max_age_ms=int(max_age * 1000), evidence_dir=trust_dir))
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
