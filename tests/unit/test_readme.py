"""The README's commands are real: every `make` target it names exists, every `exchange-node` line parses
against the CLI as written (commands, arguments and options), and the quick start's API calls, run against
a node's control API in process, answer as the README says (201 and final, the book, the open orders)."""
from __future__ import annotations

import re
from decimal import Decimal
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import click
import orjson
import pytest

from tests.unit.node.test_api_orders import TOKEN, Harness

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def shell_lines(text: str) -> list[str]:
    """Every command of the README's sh blocks, continuations joined, comments and `&` dropped, commands joined
    by `&&` apart."""
    lines = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#\s.*$", "", line).strip().rstrip("&").strip()
            lines += [command.strip() for command in line.split(" && ") if command.strip()]
    return lines


def test_the_readme_stays_short_and_starts_with_its_two_commands() -> None:
    assert len(README.splitlines()) <= 210
    first = shell_lines(README)[:2]
    assert first[0].startswith("make run") and first[1].startswith("make test"), first


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = set(re.findall(r"`?make ([a-z][a-z-]*)", README))
    assert named and named <= targets, named - targets


def test_every_exchange_node_line_parses_against_the_cli() -> None:
    from node.cli.main import _extensions, cli

    for register in _extensions():      # as node.cli.main does before it runs a command
        register(cli)
    commands = [line for line in shell_lines(README) if re.match(r"(\$N|\.venv/bin/exchange-node) ", line)]
    assert len(commands) >= 10
    for line in commands:
        args = shlex.split(line)[1:]
        group: click.Command | None = cli
        while isinstance(group, click.Group) and args and not args[0].startswith("-"):
            group, args = group.get_command(click.Context(group), args[0]), args[1:]
        assert group is not None and group is not cli, line
        group.make_context(group.name or "", list(args))          # parses options and arguments; runs nothing


def test_no_line_puts_a_join_token_on_a_command_line() -> None:
    """`ps` shows every user a process's arguments: a token goes in a file, JOIN_TOKEN or standard input."""
    for line in shell_lines(README):
        words = shlex.split(line)
        for flag, value in zip(words, words[1:] + [""]):
            assert not (flag == "--join-token" and value != "-") and not flag.startswith("--join-token="), line
            assert not re.search(r"exn1-[0-9a-f]{8}", line), line
    three = shell_blocks(README[README.index("<!-- three-nodes"):])[0]
    assert "--join-token-file" in three and "exchange-node" not in three.replace(".venv/bin/exchange-node", ""), three


def quick_api_calls() -> list[tuple[str, str, dict | None, bool]]:
    """(method, path, body, authenticated) of each curl line of the block marked quick-api."""
    block = README[README.index("<!-- quick-api"):]
    block = shell_blocks(block)[0].replace("\\\n", " ")
    calls = []
    for line in block.splitlines():
        if not line.startswith("curl"):
            continue
        words = shlex.split(line)
        url = next(w for w in words if w.startswith("http://127.0.0.1:7947/"))
        method = words[words.index("-X") + 1] if "-X" in words else "GET"
        body = orjson.loads(words[words.index("-d") + 1]) if "-d" in words else None
        parts = urlsplit(url)
        calls.append((method, parts.path + (f"?{parts.query}" if parts.query else ""), body,
                      "Authorization: Bearer $TOKEN" in words))
    return calls


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("readme-api"))
    yield harness
    harness.close()


def call(api: Harness, method: str, path: str, body: dict | None, authenticated: bool) -> tuple[int, dict]:
    async def go():
        headers = {"Authorization": f"Bearer {TOKEN}"} if authenticated else {}
        async with api.client.request(method, path, data=None if body is None else orjson.dumps(body),
                                      headers=headers) as response:
            return response.status, orjson.loads(await response.read())
    return api.run(go())


def test_the_quick_start_api_calls_answer_as_the_readme_says(api) -> None:
    calls = quick_api_calls()
    assert [(m, p.split("?")[0]) for m, p, _, _ in calls] == [("POST", "/orders"), ("GET", "/book/BTC-USD"),
                                                                ("GET", "/orders")]
    (status, placed), (book_status, book), (open_status, listed) = (call(api, *c) for c in calls)
    assert status == 201 and placed["final"] is True, placed
    order = placed["order"]
    bids = [tuple(map(Decimal, level)) for level in book["bids"]]
    assert book_status == 200 and (Decimal("100.25"), Decimal("0.5")) in bids, book
    assert open_status == 200 and order["id"] in [o["id"] for o in listed["orders"]], listed


def test_the_book_is_public_and_orders_need_the_token(api) -> None:
    for method, path, body, authenticated in quick_api_calls():
        status, _ = call(api, method, path, body, False)
        assert (status == 401) == authenticated, (method, path, status)


def test_placing_an_order_trades_between_two_accounts_and_says_why() -> None:
    """The README's trading example crosses orders of two accounts it creates (one account's orders would cancel
    each other), and says so in a line naming self-trade prevention."""
    section = README[README.index("## Placing an order"):README.index("<!-- quick-api")]
    lines = [line for line in shell_lines(section) if line.startswith("$N ")]
    created = set(re.findall(r"\$N account new (\w+)", section))
    accounts = [re.search(r"--account (\w+)", line) for line in lines if line.startswith("$N order ") and
                re.match(r"\$N order (buy|sell) ", line)]
    assert len(created) == 2 and len(accounts) >= 2 and all(accounts), lines
    assert {a.group(1) for a in accounts if a} == created
    assert "self-trade prevention" in section
    assert any(line.startswith("$N fills") for line in lines) and any(re.match(r"\$N order [A-Z_]+$", line)
                                                                       for line in lines)


def test_the_make_run_line_says_it_joins_the_lan_and_how_to_keep_it_on_loopback() -> None:
    from node.cli.main import start

    section = README[README.index("## Two commands"):README.index("## The console")]
    assert "joins the LAN" in shell_blocks(section)[0]
    assert "mDNS on every interface" in section.replace("\n", " ")
    loopback = re.search(r'`make run ARGS="([^"]*127\.0\.0\.1[^"]*)"` keeps it on\s+this machine', section)
    assert loopback, section
    context = start.make_context("start", shlex.split(loopback.group(1)))      # the flags are real settings
    assert context.params["p2p_host"] == "127.0.0.1" and context.params["discovery_mdns"] == "false"
