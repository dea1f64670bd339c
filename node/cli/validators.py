"""CLI commands for validator seats: `exchange-node validators [add|remove NODE_ID]`, `validators recover
--keep ID,...` (the way out of a permanent halt) and the join tokens validators issue: `validators token new
[--uses N] [--ttl D] [--out FILE]`, `token list`, `token revoke ID`."""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from config import parsers as p
from node.cli.client import JsonObject
from node.locate import NodeTarget

# exchange/chain/state/seats.py's bounds (not imported: the CLI loads no chain code), tests/unit/node/test_validator_tokens.py
# keeps them equal
MAX_TOKEN_USES = 16
MAX_TOKEN_TTL_S = 7 * 86400.0
parse_ttl = p.duration(at_most=MAX_TOKEN_TTL_S)


def _print_seats(data: JsonObject) -> None:
    from node.cli.main import print_table

    size, faults = data["size"], data["faults_tolerated"]
    rule = "pinned" if data["pinned"] else f"seat rule {data['seat_rule']}, max {data['max_validators']}"
    click.echo(f"epoch {data['epoch']}: {size} validator(s), quorum {data['quorum']}, tolerates {faults} faulty "
               f"validator(s) ({rule})")
    rows = []
    for member in data["validators"]:
        heard = member["heard_s_ago"]
        state = "this node" if member["me"] else ("never heard" if heard is None else
                                                  ("live" if heard < 3 else f"silent {heard:g}s"))
        absent = f"{member['absent_s']:g}s" if member["absent_s"] else "-"
        rows.append([member["node_id"], state, member["last_signed_height"], absent])
    print_table(["validator", "state", "last signed height", "absent for"], rows)
    if data["standby"]:
        waiting = (f"waiting for {data['next_size'] - size} more to reach {data['next_size']} seats"
                   if data["next_size"] and len(data["standby"]) < data["next_size"] - size else "waiting for a seat")
        click.echo(f"\nstandby (approved, {waiting}):")
        print_table(["node", "since height", "by", "live"],
                    [[s["node_id"], s["since_height"], s.get("via", "-"),
                      "yes" if s.get("live") else ("never seen" if s.get("alive_s_ago") is None
                                                   else f"no, {s['alive_s_ago']:g}s ago")] for s in data["standby"]])
    if data["pending"]:
        click.echo("\napprovals pending:")
        print_table(["action", "node", "approvals", "needed"],
                    [[p["action"], p["node_id"], p["approvals"], p["needed"]] for p in data["pending"]])


def register(cli: click.Group) -> None:
    from node.cli.main import api_option, emit_json, json_option, request

    @cli.group("validators", invoke_without_command=True)
    @api_option
    @json_option
    @click.pass_context
    def validators(ctx: click.Context, api: NodeTarget, as_json: bool) -> None:
        """The validator set: each member's state, standbys and approvals pending. `add` and `remove` record
        this validator's approval (the change applies once more than two thirds of the validators approved)."""
        ctx.obj = {"api": api, "as_json": as_json}
        if ctx.invoked_subcommand is None:
            data = request(api, "GET", "/validators", expect=("validators",))
            emit_json(data) if as_json else _print_seats(data)

    def _approval(action: str) -> click.Command:
        @validators.command(action)
        @click.argument("node_id")
        @api_option
        @json_option
        def command(node_id: str, api: NodeTarget, as_json: bool) -> None:
            data = request(api, "POST", f"/validators/{action}", {"node_id": node_id.lower()}, expect=("approval",))
            if as_json:
                return emit_json(data)
            click.echo(f"approved: {action} {node_id} (signed by this validator; applies once more than two thirds "
                       f"of the validators approved)")
            _print_seats(data)
        command.__doc__ = (f"Approve that NODE_ID {'gets' if action == 'add' else 'loses'} a validator seat "
                           f"(signed by this node's validator key).")
        return command

    _approval("add")
    _approval("remove")

    @validators.command("recover")
    @click.option("--keep", required=True, metavar="NODE_ID,NODE_ID,...",
                  help="The validators that take the chain on (this one among them): every validator still here.")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.option("--wait", type=float, default=0.0, metavar="SECONDS",
                  help="Wait this long for every kept validator's consent and the recovered set (0: do not wait).")
    @api_option
    @json_option
    def recover(keep: str, yes: bool, wait: float, api: NodeTarget, as_json: bool) -> None:
        """The way out of a permanent halt: validators gone for good. Consent (signed by this validator) that the
        validators KEEP take the chain on from the last certified block, as the whole new set. It takes effect
        once every one of them consented (run it on each of their nodes); every final block stays as it is."""
        kept = [n.strip().lower() for n in keep.split(",") if n.strip()]
        if not yes:
            click.echo(RECOVER_WARNING.format(keep="\n".join(f"  {n}" for n in kept)), err=True)
            click.confirm("Consent to this recovery?", abort=True, err=True)
        data = request(api, "POST", "/validators/recover", {"keep": kept}, expect=("recovery",))
        deadline = time.monotonic() + wait
        while wait > 0 and sorted(v["node_id"] for v in data["validators"]) != sorted(kept):
            if time.monotonic() >= deadline:
                missing = ", ".join(data["recovery"]["missing"]) if data.get("recovery") else "?"
                fail_msg = f"not recovered within {wait:g}s: waiting for the consent of {missing}"
                raise click.ClickException(fail_msg)
            time.sleep(0.25)
            data = {**request(api, "GET", "/validators", expect=("validators",)),
                    "recovery": data["recovery"]}
        if as_json:
            return emit_json(data)
        recovery = data["recovery"]
        if sorted(v["node_id"] for v in data["validators"]) == sorted(kept):
            click.echo(f"recovered: the {len(kept)} validators kept certify height {recovery['height']} and on")
        else:
            missing = ", ".join(recovery["missing"]) or "none"
            click.echo(f"consent recorded for height {recovery['height']} ({recovery['state']}); waiting for the "
                       f"consent of: {missing} (run the same command on each of their nodes)")
        _print_seats(data)

    @validators.group("token")
    def token() -> None:
        """Join tokens: a node started with one gets a seat (standby first) without the validators' approvals. A
        validator issues each through the chain, for a number of joins and until it expires; any validator can
        revoke one."""

    @token.command("new")
    @click.option("--uses", type=click.IntRange(1, MAX_TOKEN_USES), default=1, show_default=True,
                  help="How many nodes may join with it.")
    @click.option("--ttl", default="24h", show_default=True, metavar="DURATION",
                  help="How long it is valid: 90s, 30m, 24h, 7d (at most), or seconds.")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
                  help="Write the token to FILE (mode 0600) and print only its id.")
    @api_option
    @json_option
    def token_new(uses: int, ttl: str, out: Path | None, api: NodeTarget, as_json: bool) -> None:
        """Issue a join token (run against a validator's node). It is printed alone on standard output, so
        `> FILE` keeps it, or written to --out FILE; start the new node with `--join-token-file FILE`, never with
        the token on its command line."""
        try:
            seconds = parse_ttl(ttl)
        except p.InvalidValue as exc:
            raise click.BadParameter(str(exc), param_hint="--ttl") from None
        data = request(api, "POST", "/validators/tokens", {"uses": uses, "ttl": seconds}, timeout=20,
                       expect=("token", "id"))
        if out is not None:
            _write_private(out, data["token"], data["id"])
        if as_json:
            return emit_json({**data, "token": None, "out": str(out)} if out is not None else data)
        click.echo(data["id"] if out is not None else data["token"])
        where = (f"written to {out} (start a node with `--join-token-file {out}`)" if out is not None else
                 "printed above: keep it secret, and give it to a node in a file (`--join-token-file`)")
        click.echo(f"token {data['id']}: {data['uses']} join(s) until {_when(data['expires_ms'])}; {where}"
                   + ("" if data.get("final") else "; not in a certified block yet (a node using it may wait)"),
                   err=True)

    @token.command("list")
    @api_option
    @json_option
    def token_list(api: NodeTarget, as_json: bool) -> None:
        """The join tokens on the chain (never their secrets): uses left, expiry, whom each admitted."""
        from node.cli.main import print_table

        data = request(api, "GET", "/validators/tokens", expect=("tokens",))
        if as_json:
            return emit_json(data)
        if not data["tokens"]:
            click.echo("no join tokens: `exchange-node validators token new` issues one")
            return
        print_table(["token", "state", "uses left", "expires", "issuer", "admitted"],
                    [[t["id"], _state(t), t["uses_left"], _when(t["expires_ms"]), t["issuer"],
                      ", ".join(t["admitted"]) or "-"] for t in data["tokens"]])

    @token.command("revoke")
    @click.argument("token_id", metavar="ID")
    @api_option
    @json_option
    def token_revoke(token_id: str, api: NodeTarget, as_json: bool) -> None:
        """Revoke a join token (its id from `token list`, or its first 8 characters or more): no node joins with it
        any more, and the standbys it admitted leave the standby list (validators it seated keep their seats:
        `validators remove` removes them)."""
        data = request(api, "DELETE", f"/validators/tokens/{token_id.strip().lower()}", timeout=20, expect=("id",))
        if as_json:
            return emit_json(data)
        click.echo(f"revoked token {data['id']}: nobody joins with it any more, and the standbys it admitted leave "
                   f"the list")

    @cli.command("join-token", hidden=True)
    def join_token() -> None:
        """Gone: a validator issues join tokens with `exchange-node validators token new`."""
        from node.cli.main import fail

        fail("a network has no one join token any more: a validator issues each with `exchange-node validators "
             "token new [--uses N] [--ttl D] [--out FILE]`")


def _when(ms: int) -> str:
    """A time in ms since the epoch as ISO-8601 UTC, to the second."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(token: JsonObject) -> str:
    if token.get("revoked"):
        return "revoked"
    if token.get("expired", token["expires_ms"] <= time.time() * 1000):     # by the chain's time when it says
        return "expired"
    return "active" if token["uses_left"] > 0 else "used up"


def _write_private(path: Path, text: str, token_id: str) -> None:
    """Write `text` to `path` readable by its owner only, whole or not at all (a node waiting for the file never
    reads half a token)."""
    from node.cli.main import fail

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fail(f"cannot write the token to {path}: {exc.strerror or exc} (token {token_id} was issued: "
             f"`exchange-node validators token revoke {token_id}` withdraws it)")


RECOVER_WARNING = """\
This is the way out of a halt with validators gone for good: the validators below take the chain on
from its last certified block, as the whole new validator set:
{keep}
Every final block stays as it is. It takes effect once every one of them has consented.

DANGER: if the validators left out are in fact alive (behind a partition, or only stopped) and their
side recovers too, the chain forks after the last certified block, as etcd's --force-new-cluster warns.
Consent only when you know they are gone for good (their machines or data lost) and every operator of
the kept validators agrees."""
