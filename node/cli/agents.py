"""CLI for agent keys: `agent add` makes a key and approves it for an account of this DATA_DIR, `agent list`,
`agent revoke ID`; and the signing `order ... --key FILE` and `cancel ... --key FILE` use, as the agent.

An agent's key file is JSON, written owner-only: `{"agent", "account", "seed", "chain_id", "scope"}` (hex; the
seed is the agent's Ed25519 private key, the account the one it trades for). Whoever holds it can trade within
the scope and nothing more; the account's own key never leaves DATA_DIR.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import click

from exchange.app.txs import AGENT_OPERATIONS, InvalidTx, Op, SignedTx, sign_tx
from exchange.crypto import SigningKey
from node.cli.accounts import complete_account
from node.cli.main import api_option, emit_json, fail, json_option, print_table, request
from node.cli.client import JsonObject, iso_utc
from node.locate import NodeTarget

AGENT_TX_SECONDS = 30          # an agent's transaction expires this long after it is signed (inside any order TTL)
_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


class Duration(click.ParamType[int]):
    """`90`, `90s`, `15m`, `12h` or `30d`: whole seconds, at most a year."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        match = _DURATION.fullmatch(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a duration like 90s, 15m, 12h or 30d", param, ctx)
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        if not 0 < seconds <= 366 * 86_400:
            self.fail(f"{value!r} is not between 1 second and a year", param, ctx)
        return seconds


def load_key(path: str) -> tuple[SigningKey, bytes]:
    """The agent's signing key and the account it trades for, from its key file (exit 1 saying what is wrong)."""
    try:
        data = json.loads(Path(path).read_text())
        key = SigningKey(bytes.fromhex(data["seed"]))
        account = bytes.fromhex(data["account"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f"{path} is not an agent key file as `exchange-node agent add --out FILE` writes it ({exc})")
    if len(account) != 32:
        fail(f"{path}: account is not a 64-hex account id")
    return key, account


def signed_as_agent(api: NodeTarget, path: str, ops: list[Op]) -> SignedTx:
    """`ops` signed with the agent key in `path`, for the account it trades for, on the node's chain."""
    key, account = load_key(path)
    chain_id = request(api, "GET", "/status", expect=("chain_id",))["chain_id"]
    if not chain_id:
        fail("the node has not joined a network yet")
    try:
        return sign_tx(key.sign, key.public_key, chain_id, f"n{time.time_ns()}",
                       int(time.time() * 1000) + AGENT_TX_SECONDS * 1000, ops, account)
    except InvalidTx as exc:
        fail(f"{exc.field or 'order'}: {exc}")


def _write_key(path: Path, body: JsonObject) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle, indent=1)
    os.replace(tmp, path)


def register(cli: click.Group) -> None:
    @cli.group()
    def agent() -> None:
        """Agent keys: keys that trade for an account within a scope (markets, operations, a notional cap, an
        expiry) and can never grant credit or approve keys. The account revokes them at any time."""

    @agent.command("add")
    @click.option("--markets", default=None, metavar="M,...", help="Only these markets [default: every market].")
    @click.option("--operations", default=",".join(AGENT_OPERATIONS), show_default=True, metavar="OP,...",
                  help="What the agent may do: place, cancel, replace.")
    @click.option("--cap", default=None, metavar="AMOUNT",
                  help="Largest notional of one order, in its market's quote asset [default: none].")
    @click.option("--expires", type=Duration(), default=None, metavar="DURATION",
                  help="The approval ends this long from now (90s, 15m, 12h, 30d) [default: until revoked].")
    @click.option("--account", default=None, shell_complete=complete_account,
                  help="Account that approves (it signs) [default: default].")
    @click.option("--out", "out", required=True, type=click.Path(dir_okay=False, writable=True),
                  help="Where to write the agent's key file (created owner-only; refused if it exists).")
    @click.option("--wait", type=float, default=5.0, show_default=True, help="Seconds to wait for the approval.")
    @api_option
    @json_option
    def agent_add(markets: str | None, operations: str, cap: str | None, expires: int | None, account: str | None,
                  out: str, wait: float, api: NodeTarget, as_json: bool) -> None:
        """Make an agent key, approve it for the account and write its key file to --out."""
        target = Path(out)
        if target.exists():
            fail(f"{out} exists: choose another --out (a key file is never overwritten)")
        seed = os.urandom(32)
        key = SigningKey(seed)
        body: JsonObject = {"agent": key.public_key.hex(), "operations": operations.split(","),
                            "markets": None if markets is None else markets.split(","), "cap": cap,
                            "expires": None if expires is None else int((time.time() + expires) * 1000)}
        if account:
            body["account"] = account
        data = request(api, "POST", f"/agents?wait={wait}", body, timeout=wait + 10, expect=("approve_agent",))
        result = data["approve_agent"]
        if result["status"] == "rejected":
            fail(f"approval rejected: {result.get('reason')}")
        _write_key(target, {"agent": key.public_key.hex(), "account": result["account"], "seed": seed.hex(),
                            "chain_id": request(api, "GET", "/status", expect=("chain_id",))["chain_id"],
                            "scope": {k: body[k] for k in ("markets", "operations", "cap", "expires")}})
        if as_json:
            return emit_json({**data, "key_file": str(target)})
        state = "approved" if data.get("final") else f"pending ({data.get('reason')})"
        click.echo(f"agent {key.public_key.hex()} {state} for account {result['account']}; key file {out}")
        if not data.get("final"):
            fail("the approval is not final yet; `exchange-node agent list` shows when it is", 3)

    @agent.command("list")
    @click.option("--account", default=None, shell_complete=complete_account, help="Account [default: default].")
    @api_option
    @json_option
    def agent_list(account: str | None, api: NodeTarget, as_json: bool) -> None:
        """The account's agent keys and their scopes."""
        query = f"?{urlencode({'account': account})}" if account else ""
        data = request(api, "GET", f"/agents{query}", expect=("agents",))
        if as_json:
            return emit_json(data)
        if not data["agents"]:
            click.echo(f"no agents for account {data['account']}")
            return
        print_table(["agent", "markets", "operations", "cap", "expires (UTC)"],
                    [[a["agent"], ",".join(a["markets"] or ["*"]), ",".join(a["operations"]), a["cap"] or "-",
                      "-" if a["expires"] is None else iso_utc(a["expires"]) + (" (expired)" if a["expired"] else "")]
                     for a in data["agents"]])

    @agent.command("revoke")
    @click.argument("agent_id", metavar="ID")
    @click.option("--account", default=None, shell_complete=complete_account, help="Account [default: default].")
    @click.option("--wait", type=float, default=5.0, show_default=True, help="Seconds to wait for the revoke.")
    @api_option
    @json_option
    def agent_revoke(agent_id: str, account: str | None, wait: float, api: NodeTarget, as_json: bool) -> None:
        """Revoke an agent key: its transactions are refused from the block that holds this on."""
        query = urlencode({"wait": wait, **({"account": account} if account else {})})
        data = request(api, "DELETE", f"/agents/{quote(agent_id, safe='')}?{query}", timeout=wait + 10,
                       expect=("revoke_agent",))
        result = data["revoke_agent"]
        if as_json:
            emit_json(data)
        else:
            click.echo(f"revoke {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))
        if result["status"] == "rejected":
            fail(f"revoke rejected: {result.get('reason')}")
