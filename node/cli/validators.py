"""CLI commands for validator seats: `exchange-node validators [add|remove NODE_ID]`, `validators recover
--keep ID,...` (the way out of a permanent halt) and `join-token`."""
from __future__ import annotations

import time

import click

from node.cli.client import JsonObject
from node.locate import NodeTarget


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
        print_table(["node", "approved at height"], [[s["node_id"], s["since_height"]] for s in data["standby"]])
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

    @cli.command("join-token")
    @api_option
    @json_option
    def join_token(api: NodeTarget, as_json: bool) -> None:
        """Print the network's join token (founder only): a node started with JOIN_TOKEN=<it> gets a seat."""
        data = request(api, "GET", "/validators/join-token", expect=("token",))
        emit_json(data) if as_json else click.echo(data["token"])


RECOVER_WARNING = """\
This is the way out of a halt with validators gone for good: the validators below take the chain on
from its last certified block, as the whole new validator set:
{keep}
Every final block stays as it is. It takes effect once every one of them has consented.

DANGER: if the validators left out are in fact alive (behind a partition, or only stopped) and their
side recovers too, the chain forks after the last certified block, as etcd's --force-new-cluster warns.
Consent only when you know they are gone for good (their machines or data lost) and every operator of
the kept validators agrees."""
