"""`exchange-node`: `start` runs the daemon; the other commands talk to a running node's control API."""
from __future__ import annotations

import ipaddress

import asyncio
import dataclasses
import functools
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence, TypeVar

import click
import orjson

from config import Settings, SettingsError, load_settings
from config.parsers import metavar as parser_metavar
from config.settings import SettingInfo
from config.version import VERSION
from node.cli.client import ApiFailure, Json, JsonObject, NodeUnreachable, call
from node.cookie import cookie_path
from node.locate import LocateError, NodeTarget, locate_node

# Short flags users reach for first; every setting also has --<field-name>.
FLAG_ALIASES = {"p2p_port": ["--port"], "p2p_host": ["--host"], "bootstrap_peers": ["--bootstrap"],
                "network_id": ["--network"], "grape_urls": ["--grape-url"], "markets": ["--market"]}


_Command = TypeVar("_Command", bound=Callable[..., object])
_Result = TypeVar("_Result")

# Placeholders a parser's own (N, TEXT, NUMBER ...) would say less well.
METAVARS = {"network_id": "NAME", "grape_service": "NAME", "markets": "MARKETS", "join_token": "-",
            "chain_id": "HEX", "test_service_fault": "SPEC", "bootstrap_peers": "HOST:PORT,...",
            "mdns_interfaces": "IP,...", "grape_urls": "URL,...", "validators": "NODE_ID,...",
            "grenache_services": "SERVICE,..."}


def _settings_options(func: _Command) -> _Command:
    for info in reversed(Settings.describe()):
        flags = [f"--{info.name.replace('_', '-')}"] + FLAG_ALIASES.get(info.name, [])
        func = click.option(*flags, info.name, default=None, metavar=setting_metavar(info),
                            help=f"{info.help} [env {info.env}; default {shown_default(info.default)}]")(func)
    return func


def setting_metavar(info: SettingInfo) -> str:
    """What `--help` shows as a setting's value: PORT, SECONDS, BYTES, HOST, PATH, N, true|false, a|b ..."""
    if info.name in METAVARS:
        return METAVARS[info.name]
    shown = parser_metavar(Settings.parser_for(info.name))
    if info.name.endswith("_port"):
        return "PORT"
    if shown == "NUMBER" and "seconds" in info.help.lower():
        return "SECONDS"
    if shown == "N" and info.name.endswith("_bytes"):
        return "BYTES"
    return shown


def shown_default(value: object) -> str:
    """A default as a user would type it: paths as paths (~ for home), lists comma-separated, "none" for an
    empty list or an unset value, booleans true/false, numbers without a needless .0."""
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        home = Path.home()
        return f"~/{value.relative_to(home)}" if value.is_relative_to(home) and value != home else str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(shown_default(item) for item in value)
    return str(value)


ABBREVIATIONS = frozenset({"e.g.", "i.e.", "etc.", "vs.", "cf."})
NEGATIVE_NUMBER = re.compile(r"^-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def short_help(text: str, limit: int = 45) -> str:
    """The first sentence of a command's help, shortened to `limit` with "...": an abbreviation such as
    "e.g." does not end the sentence (click's own rule cuts "Place an order, e.g. `order ...`" at "e.g.")."""
    words = text.partition("\n\n")[0].split()
    if words and words[0] == "\b":
        words = words[1:]
    for i, word in enumerate(words):
        if word.endswith(".") and word.lower() not in ABBREVIATIONS:
            words = words[:i + 1]
            break
    sentence = " ".join(words)
    if len(sentence) <= limit:
        return sentence
    kept: list[str] = []
    for word in words:
        if len(" ".join(kept + [word])) + 3 > limit:
            break
        kept.append(word)
    while kept and kept[-1].lower() in ABBREVIATIONS:     # not "..., e.g...."
        kept.pop()
    return " ".join(kept).rstrip(",;:") + "..."


class NodeCommand(click.Command):
    """Every `exchange-node` command: its short help keeps abbreviations, and a negative number among its
    arguments (`order buy BTC-USD -1`) is a value for the command to judge, not an unknown option."""

    def get_short_help_str(self, limit: int = 45) -> str:
        if self.short_help:
            return super().get_short_help_str(limit)
        return short_help(self.help or "", limit)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {name for param in self.params for name in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])}
        if any(NEGATIVE_NUMBER.match(arg) and arg not in names for arg in args):
            ctx.ignore_unknown_options = True
        return super().parse_args(ctx, args)


class NodeGroup(click.Group):
    command_class = NodeCommand
    group_class = type          # subgroups are NodeGroups too

    def get_short_help_str(self, limit: int = 45) -> str:
        if self.short_help:
            return super().get_short_help_str(limit)
        return short_help(self.help or "", limit)


@click.group(cls=NodeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(VERSION, prog_name="exchange-node")
def cli() -> None:
    """Hybrid peer-to-peer exchange node."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file of settings (keys are the setting names below, lower case).")
@_settings_options
def start(config_file: str | None, **flags: object) -> None:
    """Run a node until SIGINT/SIGTERM (then say goodbye to peers, save them, exit 0)."""
    from node.accounts import AccountError, AccountStore
    from exchange.chain.boot import StoredChainUnusable
    from node.app import NodeFailed
    from node.lifecycle import StartFailed
    from node.identity import IdentityError

    from node.cli import join_token as token_input

    token_flag, flags["join_token"] = flags.get("join_token"), None     # only `-` (stdin) is taken from argv
    try:
        settings = load_settings(cli=flags, config_file=config_file or os.environ.get("EXCHANGE_NODE_CONFIG"))
        _check_markets(settings, flags)
        token_from = token_input.token_source(token_flag, settings.join_token, settings.join_token_file)
        if token_from == "stdin":
            settings = dataclasses.replace(settings, join_token=token_input.read_stdin())
    except SettingsError as exc:
        if flags.get(exc.setting) is not None:  # came from a flag: name the flag the user typed
            exc = SettingsError(_flag_used(exc.setting), exc.value, exc.message, source=exc.source)
        fail(str(exc), 2)
    except token_input.TokenRefused as exc:
        fail(str(exc), 2)
    from node.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    from storage.errors import StorageError
    from storage.lock import DataDirLock

    try:  # before anything touches DATA_DIR: a second node on it would share its identity and history
        data_dir_lock = DataDirLock.acquire(settings.data_dir)
    except StorageError as exc:
        fail(str(exc), 2)
    try:
        with data_dir_lock:
            AccountStore(settings.data_dir).ensure_default()
            if token_from == "file":
                assert settings.join_token_file is not None
                settings = dataclasses.replace(settings, join_token=_wait_for_token(settings.join_token_file))
            _run(settings)
    except StartFailed as exc:  # what had started is stopped; say which part failed, in one line
        cause = exc.cause
        if isinstance(cause, (IdentityError, AccountError)):
            fail(str(cause), 2)
        if isinstance(cause, (NodeFailed, StorageError, StoredChainUnusable)):
            fail(str(cause), 3)
        fail(f"cannot start the {exc.step}: {_one_line(cause)}")
    except (IdentityError, AccountError) as exc:
        fail(str(exc), 2)
    except (NodeFailed, StorageError, StoredChainUnusable) as exc:
        fail(str(exc), 3)
    except OSError as exc:
        fail(f"cannot start: {exc}")


def _wait_for_token(path: Path) -> str:
    """The token in JOIN_TOKEN_FILE once it holds one; a Ctrl-C or SIGTERM meanwhile stops cleanly (exit 0)."""
    from node.cli import join_token as token_input

    try:
        return token_input.wait_for_file(path)
    except token_input.TokenRefused as exc:
        fail(str(exc), 2)
    except token_input.WaitStopped as exc:
        click.echo(f"exchange-node: stopped ({exc}) while waiting for the join token at {path}", err=True)
        sys.exit(0)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _check_markets(settings: Settings, flags: dict[str, object]) -> None:
    """MARKETS is parsed by the exchange; a bad entry is a settings error (exit 2) like any other."""
    from exchange.errors import InvalidMarketSpec
    from exchange.markets import parse_markets

    try:
        parse_markets(settings.markets)
    except InvalidMarketSpec as exc:
        raise SettingsError("markets" if flags.get("markets") is not None else "MARKETS", settings.markets,
                            exc.message) from None


def _flag_used(setting: str) -> str:
    """The spelling on the command line (an alias like --port, or --p2p-port) for a setting's field name."""
    spellings = [f"--{setting.replace('_', '-')}"] + FLAG_ALIASES.get(setting, [])
    typed = [arg.split("=", 1)[0] for arg in sys.argv[1:]]
    return next((s for s in spellings if s in typed), spellings[0])


def _run(settings: Settings) -> None:
    from node.app import EXIT_UNCLEAN, ExchangeNode, StopUnclean, exit_now

    async def main() -> None:
        node = ExchangeNode(settings)
        try:
            await node.run()
        except StopUnclean as exc:  # a hung step may have left threads the event loop would wait for
            exit_now(str(exc), EXIT_UNCLEAN)

    loop_factory = None
    if settings.event_loop in ("auto", "uvloop"):
        try:
            import uvloop  # optional: `pip install exchange-node[fast]`
            loop_factory = uvloop.new_event_loop
        except ImportError:
            if settings.event_loop == "uvloop":
                raise OSError("EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)") from None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


# --- client commands ------------------------------------------------------------------------
def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"exchange-node: {message}", err=True)
    sys.exit(code)


def pending_reason(answer: JsonObject) -> str:
    """A pending answer's reason, with what a validator last said when none took it (the node hands it on again)."""
    reason = str(answer.get("reason") or "no reason given")
    refusal = answer.get("validator_refusal")
    return f"{reason}; a validator refused it for now: {refusal['error']}" if isinstance(refusal, dict) else reason


_TARGET_OPTIONS = (
    click.option("--api", "api", default=None, metavar="URL",
                 help="Control API of the node, http://HOST:PORT or HOST:PORT [default: EXCHANGE_NODE_API, else the "
                      "address in DATA_DIR/node.json, else http://API_HOST:API_PORT]"),
    click.option("--data-dir", "data_dir", default=None, metavar="DIR",
                 help="The node's DATA_DIR, where its node.json and cookie are [default: DATA_DIR, else "
                      "~/.local/share/exchange-node]"),
    click.option("--token", "token", default=None, metavar="TOKEN",
                 help="Bearer token for the API [default: EXCHANGE_NODE_TOKEN, else the cookie in DATA_DIR]"),
)


def api_option(func: Callable[..., _Result]) -> Callable[..., _Result]:
    """Adds --api/--data-dir/--token; the command receives `api`, the NodeTarget they (or the defaults) name."""

    @functools.wraps(func)
    def command(*args: Any, api: str | None, data_dir: str | None, token: str | None, **kwargs: Any) -> _Result:
        try:
            target = locate_node(api, data_dir, token)
        except LocateError as exc:
            fail(str(exc), 2)
        return func(*args, api=target, **kwargs)

    for option in reversed(_TARGET_OPTIONS):
        command = option(command)
    return command


class Seconds(click.ParamType[float]):
    """A finite, non-negative number of seconds (click's FloatRange lets nan through)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,  # Any: click's raw value, text or a default
                ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or not 0 <= seconds <= 3600:
            self.fail(f"{value!r} is not between 0 and 3600 seconds", param, ctx)
        return seconds


SECONDS = Seconds()
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def request(api: NodeTarget, method: str, path: str, body: object = None, timeout: float = 10.0,
            expect: tuple[str, ...] = ()) -> Json:
    """Call the API or exit 1 with a clear message (no node answering, refused credentials, an API error,
    an answer without the `expect`ed top-level fields, as from a server that is not an exchange-node)."""
    try:
        data = call(api.url, method, path, body, timeout, token=api.token)[1]
    except NodeUnreachable as exc:
        fail(unreachable_message(api, exc))
    except ApiFailure as exc:
        fail(failure_message(api, exc, f"{method} {path.split('?')[0]}"))
    missing = [key for key in expect if not isinstance(data, dict) or key not in data]
    if missing:
        fail(f"the answer from {api.address} to {method} {path} has no {missing[0]!r} field: is it an "
             f"exchange-node control API?")
    return data


def unreachable_message(api: NodeTarget, exc: NodeUnreachable) -> str:
    hint = ("start one with `exchange-node start`, or point --api or EXCHANGE_NODE_API at a running node"
            if exc.reason == "connection refused" else "check the address")
    return f"{exc.reason} at {api.address} (address from {api.source}); {hint}"


def failure_message(api: NodeTarget, exc: ApiFailure, endpoint: str = "") -> str:
    """One line for an API error; `endpoint` ("GET /orders") names what a node without that route lacks."""
    if endpoint and exc.error.get("code") in ("not_found", "method_not_allowed") and exc.status in (404, 405):
        return f"the node at {api.address} does not serve {endpoint} (HTTP {exc.status}); is it an older version?"
    field = f" (field {exc.error['field']})" if exc.error.get("field") else ""
    text = f"{exc.error.get('code', 'error')}: {exc.error.get('message', '')}{field}"
    if exc.status == 401:
        sent = f"sent the token from {api.token_source}" if api.token else \
            f"no token sent (no cookie at {cookie_path(api.data_dir)}, or the node is not on loopback)"
        text += (f"; {sent}. Run the CLI with the node's --data-dir (its cookie is read from there), "
                 f"or pass --token / EXCHANGE_NODE_TOKEN with its API_TOKEN")
    return text


def emit_json(data: object) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def print_table(headers: list[str], rows: Sequence[Sequence[object]]) -> None:
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


def reach_line(nat: JsonObject) -> str:
    """Our addresses as peers see them, how each was learnt and whether a dial-back reached it; our relays."""
    parts = [f"{a['host']}:{a['port']} {a['how']} "
             f"({'confirmed' if a['confirmed'] else 'not reached' if a.get('checks') else 'unchecked'})"
             for a in nat.get("addresses", [])[:4]]
    relays = (nat.get("relay_client") or {}).get("relays") or []
    if relays:
        parts.append(f"relayed via {', '.join(r[:12] for r in relays)}")
    return "; ".join(parts) or "no peer has told us our address yet"


def reach_word(nat: JsonObject) -> str:
    """Reachability as far as it was measured (the console's words, node/console/static/words.js): a node that
    calls itself public only because peers on loopback or its LAN dialled it back says so."""
    reach = nat.get("reachability")
    if reach != "public":
        return str(reach)
    scopes = {address_scope(str(a.get("host", ""))) for a in nat.get("addresses", []) if a.get("confirmed")}
    if "global" in scopes:
        return "public"
    if "lan" in scopes:
        return "public on this LAN only (no dial-back from outside it)"
    if "loopback" in scopes:
        return "unknown (only dialled back on loopback)"
    return "unknown (no address confirmed by a dial-back)"


def address_scope(host: str) -> str:
    """"loopback", "lan" (private, carrier-grade NAT, link-local, unique local) or "global"."""
    try:
        address = ipaddress.ip_address(host.strip("[]").lower())
    except ValueError:
        return "loopback" if host == "localhost" else "lan"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified or (address.version == 4 and address.packed[0] == 0):
        return "loopback"
    if any(address in network for network in _LAN_NETWORKS if network.version == address.version):
        return "lan"
    return "global"


_LAN_NETWORKS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                                    "169.254.0.0/16", "fc00::/7", "fe80::/10")]


@cli.command()
@api_option
@json_option
def status(api: NodeTarget, as_json: bool) -> None:
    """Show the node's identity, links and discovery."""
    data = request(api, "GET", "/status", expect=("node_id", "version", "listen", "peers_connected"))
    if as_json:
        return emit_json(data)
    click.echo(f"node      {data['node_id']}  (exchange-node {data['version']}, network {data.get('network_id')})")
    click.echo(f"listen    {data['listen']}    uptime {data.get('uptime_s', 0):.0f}s")
    p2p = data.get("p2p", {})
    click.echo(f"peers     {data['peers_connected']} connected ({p2p.get('outbound', 0)} out, "
               f"{p2p.get('inbound', 0)} in), {p2p.get('known_addresses', 0)} known addresses")
    nat = data.get("nat")
    if nat:
        click.echo(f"reach     {reach_word(nat)}: {reach_line(nat)}")
    click.echo(f"markets   {', '.join(data.get('markets', []))}")
    if data.get("chain_id"):
        validators = data.get("validators") or []
        click.echo(f"chain     {data['chain_id']}  height {data.get('height')}  epoch {data.get('epoch')}")
        click.echo(f"role      {data.get('role')}: {len(validators)} validators, quorum {data.get('quorum_size')} "
                   f"({'present' if data.get('quorum') else 'NOT reachable: new orders stay pending'}), "
                   f"finality lag {data.get('finality_lag_s')}s")
        click.echo(f"seats     tolerates {data.get('faults_tolerated', 0)} faulty validator(s); "
                   f"{data.get('standby', 0)} standby; chain trusted by {data.get('trust', '?')} "
                   f"(`exchange-node validators` for each member)")
        for node_id, conflict in (data.get("conflicting_networks") or {}).items():
            click.echo(f"WARNING   peer {node_id} is on another network: chain {conflict.get('chain_id')} "
                       f"({conflict.get('reason')})")
    else:
        click.echo(f"chain     not joined yet: {(data.get('exchange') or {}).get('founding', '')}")
    for extra in ("router",):
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
def peers(api: NodeTarget, as_json: bool) -> None:
    """List peers: status, direction, which discovery strategy found them, RTT."""
    data = request(api, "GET", "/peers", expect=("peers",))
    if as_json:
        return emit_json(data)
    rows = [[p["node_id"], f"{p['host']}:{p['port']}", p["status"], p["direction"], p["source"],
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
    """Command groups contributed by other parts of the node (orders, routing, accounts, demos)."""
    found = []
    for module_name in ("node.cli.orders", "node.cli.agents", "node.cli.rpc", "node.cli.accounts", "node.cli.validators",
                        "node.cli.wait",
                        "node.cli.devnet", "node.cli.history", "node.cli.dht", "node.cli.indexer", "node.cli.light",
                        "node.demo.cli"):
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
