"""`exchange-node account new|list|show`: the account keys in DATA_DIR/accounts, and what a node knows of one.

`new` and `list` work on the directory itself, node running or not; `show` adds the account's positions
and open orders when a node answers.
"""
from __future__ import annotations

import os
from urllib.parse import quote, urlencode

import click

from node.accounts import ACCOUNT_ID, DEFAULT_ACCOUNT, Account, AccountError, AccountStore, check_name
from node.cli.main import (api_option, emit_json, fail, failure_message, json_option, pending_reason, print_table,
                           unreachable_message)
from node.cli.client import ApiFailure, Json, JsonObject, NodeUnreachable, call, when, with_iso
from node.locate import LocateError, NodeTarget, resolve_data_dir


def complete_account(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion: the account names in the DATA_DIR the command line names (or the default one)."""
    try:
        directory = resolve_data_dir(ctx.params.get("data_dir"), os.environ)
        return [a.name for a in AccountStore(directory).list() if a.name.startswith(incomplete)]
    except (AccountError, LocateError, OSError):
        return []


def _account_json(account: Account) -> JsonObject:
    return {"name": account.name, "id": account.id, "key_file": str(account.path)}


def _store_at(data_dir: str | None) -> AccountStore:
    try:
        return AccountStore(resolve_data_dir(data_dir, os.environ))
    except LocateError as exc:
        fail(str(exc), 2)


def register(cli: click.Group) -> None:
    data_dir_option = click.option("--data-dir", "data_dir", default=None, metavar="DIR",
                                   help="The node's DATA_DIR [default: DATA_DIR, else ~/.local/share/exchange-node]")

    @cli.group("account")
    def account_group() -> None:
        """Account keys: every order, cancel and replace is signed by its account's key."""

    @account_group.command("new")
    @click.argument("name", required=False, default=None)
    @data_dir_option
    @json_option
    def account_new(name: str | None, data_dir: str | None, as_json: bool) -> None:
        """Create an account key in DATA_DIR/accounts (named account-N when NAME is not given).
        Works whether the node runs or not; a running node sees the account at once."""
        if name is not None:
            try:
                check_name(name)
            except AccountError as exc:
                raise click.BadParameter(str(exc), param_hint="NAME") from None
        try:
            account = _store_at(data_dir).new(name)
        except AccountError as exc:
            fail(str(exc))
        if as_json:
            return emit_json(_account_json(account))
        click.echo(f"created account {account.name}\nid        {account.id}\nkey file  {account.path}")

    @account_group.command("list")
    @data_dir_option
    @json_option
    def account_list(data_dir: str | None, as_json: bool) -> None:
        """List the accounts whose keys are in DATA_DIR/accounts."""
        store = _store_at(data_dir)
        try:
            accounts = store.list()
        except AccountError as exc:
            fail(str(exc))
        if as_json:
            return emit_json({"accounts": [_account_json(a) for a in accounts]})
        if not accounts:
            click.echo(f"no accounts in {store.directory} (the node creates `{DEFAULT_ACCOUNT}` at its first "
                       f"start; `exchange-node account new NAME` adds one)")
            return
        print_table(["name", "id"], [[a.name, a.id] for a in accounts])

    @account_group.command("show")
    @click.argument("account", required=False, default=DEFAULT_ACCOUNT, shell_complete=complete_account)
    @api_option
    @json_option
    def account_show(account: str, api: NodeTarget, as_json: bool) -> None:
        """Show an account (a name in DATA_DIR/accounts or a 64-hex id; default `default`): its id and, when
        a node answers, its positions and open orders."""
        name, account_id = _identify(AccountStore(api.data_dir), account)
        positions, position_note = _ask(api, f"/accounts/{quote(account_id, safe='')}", "GET /accounts/{id}",
                                        "positions")
        orders, orders_note = _ask(api, "/orders?" + urlencode({"account": account_id, "status": "open"}),
                                   "GET /orders", "open orders")
        if as_json:
            return emit_json({"name": name, "id": account_id,
                              "account": with_iso(positions, "cancel_all_at") if isinstance(positions, dict) else None,
                              "open_orders": orders.get("orders") if isinstance(orders, dict) else None,
                              "pending_orders": positions.get("pending_orders") if isinstance(positions, dict) else None,
                              "notes": [n for n in (position_note, orders_note) if n]})
        click.echo(f"account   {name or '(not held in this DATA_DIR)'}\nid        {account_id}")
        if position_note:
            click.echo(position_note, err=True)
        elif isinstance(positions, dict):
            rows = _position_rows(positions.get("positions"))
            click.echo("")
            if rows:
                print_table(["asset", "position"], rows)
            else:
                click.echo("no positions yet")
            if isinstance(positions.get("cancel_all_at"), int):
                click.echo(f"\ndead-man's switch armed: every open order is cancelled at block time "
                           f"{when(positions['cancel_all_at'])} unless `cancel-after` refreshes it")
        if orders_note:
            click.echo(orders_note, err=True)
        elif isinstance(orders, dict):
            click.echo("")
            open_orders = orders.get("orders") or []
            if open_orders:
                print_table(["open order", "market", "side", "type", "price", "qty", "remaining"],
                            [[o.get("id"), o.get("market"), o.get("side"), o.get("type"), o.get("price") or "-",
                              o.get("qty"), o.get("remaining")] for o in open_orders])
            else:
                click.echo("no open orders")
        pending = positions.get("pending_orders") if isinstance(positions, dict) else None
        if pending:     # answered 202: no block holds them yet
            click.echo("")
            print_table(["pending order", "market", "side", "type", "price", "qty", "reason"],
                        [[o.get("id"), o.get("market"), o.get("side"), o.get("type"), o.get("price") or "-",
                          o.get("qty"), pending_reason(o) if o.get("reason") else ""] for o in pending])


def _identify(store: AccountStore, account: str) -> tuple[str | None, str]:
    """(local name or None, id) for a name in the store or any 64-hex id."""
    try:
        held = store.get(account)
        return held.name, held.id
    except KeyError:
        if ACCOUNT_ID.fullmatch(account):
            return None, account
        fail(f"no account {account!r} in {store.directory}; `exchange-node account list` shows the names, "
             f"or give a 64-hex account id")
    except AccountError as exc:
        fail(str(exc))


def _ask(api: NodeTarget, path: str, endpoint: str, what: str) -> tuple[Json, str]:
    """(answer, "") or (None, a one-line note saying why `what` is not shown)."""
    try:
        return call(api.url, "GET", path, token=api.token)[1], ""
    except NodeUnreachable as exc:
        return None, f"{what} not shown: {unreachable_message(api, exc)}"
    except ApiFailure as exc:
        return None, f"{what} not shown: {failure_message(api, exc, endpoint)}"


def _position_rows(positions: Json) -> list[list[object]]:
    """`{"BTC": "1.5", ...}` or `[{"asset": "BTC", "position": "1.5"}, ...]` -> table rows."""
    if isinstance(positions, dict):
        return [[asset, amount] for asset, amount in sorted(positions.items())]
    if isinstance(positions, list):
        return [[p.get("asset"), p.get("position", p.get("amount"))] for p in positions if isinstance(p, dict)]
    return []
