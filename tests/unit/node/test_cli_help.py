"""`exchange-node --help` and `start --help` as a user reads them (defaults as typed, placeholders by type,
short helps not cut at "e.g."), and negative numbers on the command line reaching the API as values."""
from __future__ import annotations

import re

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from config.settings import Settings
from node.cli.main import _extensions, cli, setting_metavar, short_help, shown_default
from tests.scripted_api import ScriptedApi

for _register in _extensions():
    _register(cli)


def run(args: list[str]):
    clean = {k: "" for k in os.environ if k.startswith("EXCHANGE_NODE") or k in ("DATA_DIR", "API_HOST", "API_PORT")}
    result = CliRunner().invoke(cli, args, env=clean, prog_name="exchange-node")
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{args}: {result.exception!r}"
    return result


@pytest.mark.parametrize("value, shown", [
    (Path.home() / ".local" / "share" / "exchange-node", "~/.local/share/exchange-node"),
    (Path("/var/lib/exchange-node"), "/var/lib/exchange-node"),
    ((), "none"), (None, "none"), (True, "true"), (False, "false"),
    (("http://127.0.0.1:30001",), "http://127.0.0.1:30001"), (("ping", "test.echo"), "ping,test.echo"),
    (30.0, "30"), (0.4, "0.4"), (7946, "7946"), ("exchange-mainnet", "exchange-mainnet"),
])
def test_defaults_are_shown_as_a_user_would_type_them(value, shown):
    assert shown_default(value) == shown


def test_placeholders_say_what_kind_of_value_each_setting_takes():
    by_name = {info.name: setting_metavar(info) for info in Settings.describe()}
    assert by_name["p2p_port"] == by_name["api_port"] == by_name["grenache_rpc_port"] == "PORT"
    assert by_name["p2p_host"] == "HOST" and by_name["data_dir"] == "PATH"
    assert by_name["peer_reconnect_interval"] == by_name["order_ttl"] == "SECONDS"
    assert by_name["max_peers"] == "N" and by_name["max_frame_bytes"] == "BYTES"
    assert by_name["discovery_mdns"] == "true|false" and by_name["log_level"] == "DEBUG|INFO|WARNING|ERROR"
    assert by_name["bootstrap_peers"] == "HOST:PORT,..." and by_name["dial_rate"] == "NUMBER"
    assert "VALUE" not in by_name.values()


@pytest.mark.parametrize("text, limit, expected", [
    ("Place an order, e.g. `order buy BTC-USD 1.5 --price 100.25`.", 80,
     "Place an order, e.g. `order buy BTC-USD 1.5 --price 100.25`."),
    ("Show the peers. Then more.", 45, "Show the peers."),
    ("Call SERVICE on a peer with a JSON PAYLOAD, e.g. `exchange-node rpc ping` or more.", 48,
     "Call SERVICE on a peer with a JSON PAYLOAD..."),
    ("One, i.e. the first one, then a long tail of words that goes on.\n\nSecond paragraph.", 30,
     "One, i.e. the first one..."),
])
def test_short_help_keeps_abbreviations_and_never_ends_on_one(text, limit, expected):
    assert short_help(text, limit) == expected
    assert len(short_help(text, limit)) <= limit


def test_top_level_help_cuts_no_command_at_an_abbreviation():
    result = run(["--help"])
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1]
    assert re.search(r"\n  order +Place an order, e\.g\. `order buy BTC-USD 1\.5 --price 100\.25`\.", commands), commands
    assert not [line for line in commands.splitlines() if line.rstrip().endswith(("e.g.", "e.g...."))]


def test_start_help_has_no_python_reprs():
    result = run(["start", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for repr_ in ("PosixPath(", "default ()", "default None", "default True", "default False", "default '", "VALUE"):
        assert repr_ not in text
    assert "--p2p-port, --port PORT" in text and "default ~/.local/share/exchange-" in text


def test_a_negative_quantity_reaches_the_api_which_refuses_it():
    api = ScriptedApi()
    try:
        api.answers[("POST", "/orders")] = (422, {"error": {"code": "invalid_qty", "field": "qty",
                                                            "message": "qty must be positive"}})
        result = run(["order", "buy", "BTC-USD", "-1", "--price", "-2.5", "--api", api.url, "--token", "t"])
        assert result.exit_code == 1, result.output
        assert "invalid_qty: qty must be positive (field qty)" in result.output
        assert json.loads(api.requests[-1]["body"])["qty"] == "-1"
        assert json.loads(api.requests[-1]["body"])["price"] == "-2.5"
        typo = run(["order", "buy", "BTC-USD", "1", "--pryce", "5", "--api", api.url])
        assert typo.exit_code == 2 and "No such option" in typo.output     # unknown options are still errors
    finally:
        api.close()
