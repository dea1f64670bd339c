"""`exchange-node`: `start` runs the daemon; the other commands talk to a running node's control API."""
from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, Callable

import click
import orjson

from config import Settings, SettingsError, load_settings
from config.version import VERSION
from node.client import ApiFailure, NodeUnreachable, call

# Short flags users reach for first; every setting also has --<field-name>.
FLAG_ALIASES = {"p2p_port": ["--port"], "p2p_host": ["--host"], "bootstrap_peers": ["--bootstrap"],
                "network_id": ["--network"], "grape_urls": ["--grape-url"], "markets": ["--market"]}


def _settings_options(func: Callable) -> Callable:
    for info in reversed(Settings.describe()):
        flags = [f"--{info.name.replace('_', '-')}"] + FLAG_ALIASES.get(info.name, [])
        func = click.option(*flags, info.name, default=None, metavar="VALUE",
                            help=f"{info.help} [env {info.env}; default {info.default!r}]")(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(VERSION, prog_name="exchange-node")
def cli() -> None:
    """Hybrid peer-to-peer exchange node."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file of settings (keys are the setting names below, lower case).")
@_settings_options
def start(config_file: str | None, **flags: Any) -> None:
    """Run a node until SIGINT/SIGTERM (then say goodbye to peers, save them, exit 0)."""
    from node.identity import IdentityError

    try:
        settings = load_settings(cli=flags, config_file=config_file or os.environ.get("EXCHANGE_NODE_CONFIG"))
    except SettingsError as exc:
        if flags.get(exc.setting) is not None:  # came from a flag: name the flag the user typed
            exc = SettingsError(_flag_used(exc.setting), exc.value, exc.message, source=exc.source)
        click.echo(f"exchange-node: {exc}", err=True)
        sys.exit(2)
    from node.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        _run(settings)
    except IdentityError as exc:
        click.echo(f"exchange-node: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"exchange-node: cannot start: {exc}", err=True)
        sys.exit(1)


def _flag_used(setting: str) -> str:
    """The spelling on the command line (an alias like --port, or --p2p-port) for a setting's field name."""
    spellings = [f"--{setting.replace('_', '-')}"] + FLAG_ALIASES.get(setting, [])
    typed = [arg.split("=", 1)[0] for arg in sys.argv[1:]]
    return next((s for s in spellings if s in typed), spellings[0])


def _run(settings: Settings) -> None:
    from node.app import ExchangeNode

    async def main() -> None:
        node = ExchangeNode(settings)
        await node.run()

    loop_factory = None
    if settings.event_loop in ("auto", "uvloop"):
        try:
            import uvloop  # optional: `pip install exchange-node[fast]`
            loop_factory = uvloop.new_event_loop
        except ImportError:
            if settings.event_loop == "uvloop":
                raise OSError("EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


# --- client commands ------------------------------------------------------------------------
def _default_api() -> str:
    if os.environ.get("EXCHANGE_NODE_API"):
        return os.environ["EXCHANGE_NODE_API"]
    host = os.environ.get("API_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{os.environ.get('API_PORT', '7947')}"


api_option = click.option("--api", default=_default_api, show_default="http://API_HOST:API_PORT",
                          help="Control API of the node to talk to.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def request(api: str, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """Call the API or exit with a clear message: 1 when no node answers, 1 on an API error."""
    try:
        return call(api, method, path, body, timeout)[1]
    except NodeUnreachable as exc:
        click.echo(f"exchange-node: {exc}", err=True)
        sys.exit(1)
    except ApiFailure as exc:
        field = f" (field {exc.error['field']})" if exc.error.get("field") else ""
        click.echo(f"exchange-node: {exc.error.get('code', 'error')}: {exc.error.get('message', '')}{field}", err=True)
        sys.exit(1)


def emit_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, time.time() - ts)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


@cli.command()
@api_option
@json_option
def status(api: str, as_json: bool) -> None:
    """Show the node's identity, links and discovery."""
    data = request(api, "GET", "/status")
    if as_json:
        return emit_json(data)
    click.echo(f"node      {data['node_id']}  (exchange-node {data['version']}, network {data.get('network_id')})")
    click.echo(f"listen    {data['listen']}    uptime {data.get('uptime_s', 0):.0f}s")
    p2p = data.get("p2p", {})
    click.echo(f"peers     {data['peers_connected']} connected ({p2p.get('outbound', 0)} out, "
               f"{p2p.get('inbound', 0)} in), {p2p.get('known_addresses', 0)} known addresses")
    click.echo(f"markets   {', '.join(data.get('markets', []))}")
    for extra in ("exchange", "router"):
        if isinstance(data.get(extra), dict) and data[extra].get("summary"):
            click.echo(f"{extra:<9} {data[extra]['summary']}")
    if data.get("discovery"):
        click.echo("")
        print_table(["strategy", "found", "dialled", "connected", "last error"],
                    [[n, s["found"], s["dialled"], s["connected"], s.get("last_error") or "-"]
                     for n, s in data["discovery"].items()])


@cli.command()
@api_option
@json_option
def peers(api: str, as_json: bool) -> None:
    """List peers: status, direction, which discovery strategy found them, RTT."""
    data = request(api, "GET", "/peers")
    if as_json:
        return emit_json(data)
    rows = [[p["node_id"][:16], f"{p['host']}:{p['port']}", p["status"], p["direction"], p["source"],
             "-" if p.get("rtt_ms") is None else f"{p['rtt_ms']:.2f}", _ago(p.get("last_seen")),
             p.get("close_reason") or ""]
            for p in sorted(data["peers"], key=lambda p: (p["status"] != "connected", p["node_id"]))]
    if not rows:
        click.echo("no peers yet")
        return
    print_table(["node", "address", "status", "dir", "source", "rtt ms", "last seen", "reason"], rows)


def main() -> None:
    for register in _extensions():
        register(cli)
    cli(prog_name="exchange-node")


def _extensions() -> list[Callable[[click.Group], None]]:
    """Command groups contributed by other parts of the node (orders, routing)."""
    found = []
    for module_name in ("node.cli_orders", "node.cli_rpc"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        found.append(module.register)
    return found


if __name__ == "__main__":
    main()
