"""CLI commands for validator seats: `exchange-node validators [add|remove NODE_ID]` and `join-token`."""
from __future__ import annotations

from typing import Any

import click

from node.locate import NodeTarget


def _print_seats(data: dict[str, Any]) -> None:
    from node.cli import print_table

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
    from node.cli import api_option, emit_json, json_option, request

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

    def _approval(action: str) -> Any:
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

    @cli.command("join-token")
    @api_option
    @json_option
    def join_token(api: NodeTarget, as_json: bool) -> None:
        """Print the network's join token (founder only): a node started with JOIN_TOKEN=<it> gets a seat."""
        data = request(api, "GET", "/validators/join-token", expect=("token",))
        emit_json(data) if as_json else click.echo(data["token"])
