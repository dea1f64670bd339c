"""Join tokens for operators: the control API's /validators/tokens routes in process against a stand-in for
the chain's seat commands (what they pass on, what they refuse, who may call them), and the CLI's `validators
token new|list|revoke` and `wait` against a scripted API (what they print, where the token goes, exit codes)."""
from __future__ import annotations

import asyncio
import json
import os
import stat
import time
import types
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from exchange.chain.ports import NotReady
from node.api.server import build_app
from node.api.validators import install_validator_api
from node.configs import ApiConfig
from p2p.public.refusals import RefusalLog
from tests.unit.node.test_cli_client import run
from tests.scripted_api import ScriptedApi

TOKEN_TEXT = "exn1-" + "ab" * 32 + "-" + "cd" * 32
API_TOKEN = "test-token-0123456789"
NODE_ID = "c0ffee" + "0" * 34


class FakeSeats:
    """The token part of the API's chain ports (exchange/chain/api_ports.py): tokens, issue_token, revoke_token."""

    def __init__(self) -> None:
        self.issued: list[tuple[int, float]] = []
        self.revoked: list[str] = []
        self.refuse: Exception | None = None
        self.listed: list[dict[str, Any]] = [{"id": "0123456789abcdef", "issuer": NODE_ID, "uses_left": 1,
                                              "expires_ms": 2_000_000_000_000, "revoked": False, "admitted": []}]

    async def issue_token(self, uses: int = 1, ttl_s: float = 86400.0) -> dict:
        if self.refuse is not None:
            raise self.refuse
        self.issued.append((uses, ttl_s))
        return {"token": TOKEN_TEXT, "id": "0123456789abcdef", "issuer": NODE_ID, "uses": uses,
                "expires_ms": 1_800_000_000_000, "final": True}

    def tokens(self) -> list[dict]:
        if self.refuse is not None:
            raise self.refuse
        return self.listed

    async def revoke_token(self, token_id: str) -> dict:
        if self.refuse is not None:
            raise self.refuse
        self.revoked.append(token_id)
        return {**self.listed[0], "revoked": True}


class TokenApi:
    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.seats = FakeSeats()
        node = types.SimpleNamespace(public_refusals=RefusalLog(), api_extensions=[install_validator_api],
                                     metric_sources=[], chain_reads=self.seats, chain_submits=self.seats,
                                     configs=types.SimpleNamespace(api=ApiConfig(host="127.0.0.1", port=0,
                                                                                 token=API_TOKEN, data_dir=tmp_path,
                                                                                 debug_api=False)))

        async def setup() -> TestClient:
            client = TestClient(TestServer(build_app(node)))
            await client.start_server()
            return client
        self.client = self.loop.run_until_complete(setup())

    def request(self, method: str, path: str, body: Any = None, token: str | None = API_TOKEN) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            data = body if isinstance(body, bytes) else (None if body is None else orjson.dumps(body))
            async with self.client.request(method, path, data=data, headers=headers) as answer:
                return answer.status, orjson.loads(await answer.read())
        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture
def token_api(tmp_path):
    api = TokenApi(tmp_path)
    yield api
    api.close()


@pytest.mark.parametrize("ttl, seconds", [("24h", 86400.0), ("30m", 1800.0), ("7d", 604800.0), (90, 90.0),
                                          ("45s", 45.0), ("1.5h", 5400.0)])
def test_a_token_is_issued_with_its_uses_and_ttl(token_api, ttl, seconds) -> None:
    status, body = token_api.request("POST", "/validators/tokens", {"uses": 3, "ttl": ttl})
    assert status == 201, body
    assert body["token"] == TOKEN_TEXT and body["id"] == "0123456789abcdef" and body["final"] is True
    assert token_api.seats.issued == [(3, seconds)]


def test_a_token_defaults_to_one_use_for_a_day(token_api) -> None:
    assert token_api.request("POST", "/validators/tokens")[0] == 201
    assert token_api.seats.issued == [(1, 86400.0)]


@pytest.mark.parametrize("body, code", [({"uses": 0}, "invalid_uses"), ({"uses": 17}, "invalid_uses"),
                                        ({"uses": "2"}, "invalid_uses"), ({"uses": True}, "invalid_uses"),
                                        ({"uses": 1.5}, "invalid_uses"), ({"ttl": "0s"}, "invalid_ttl"),
                                        ({"ttl": "8d"}, "invalid_ttl"), ({"ttl": "1w"}, "invalid_ttl"),
                                        ({"ttl": -5}, "invalid_ttl"), ({"ttl": None}, "invalid_ttl"),
                                        ({"uses": 1, "secret": "x"}, "invalid_field"), ([1], "invalid_body"),
                                        (b"{", "invalid_json")])
def test_a_bad_body_is_refused_naming_what_is_wrong(token_api, body, code) -> None:
    status, answer = token_api.request("POST", "/validators/tokens", body)
    assert status == 400 and answer["error"]["code"] == code, answer
    assert token_api.seats.issued == []


def test_what_the_chain_refuses_is_409_and_no_chain_is_503(token_api) -> None:
    token_api.seats.refuse = ValueError("this node holds no validator seat")
    status, answer = token_api.request("POST", "/validators/tokens", {"uses": 1})
    assert status == 409 and answer["error"]["message"] == "this node holds no validator seat"
    token_api.seats.refuse = NotReady("no_chain", "not on a chain yet")
    for method, path in (("POST", "/validators/tokens"), ("GET", "/validators/tokens"),
                         ("DELETE", "/validators/tokens/0123456789abcdef")):
        status, answer = token_api.request(method, path, {} if method == "POST" else None)
        assert status == 503 and answer["error"]["code"] == "no_chain", (method, answer)


def test_tokens_are_listed_without_secrets_and_revoked_by_id(token_api) -> None:
    status, listed = token_api.request("GET", "/validators/tokens")
    assert status == 200 and listed == {"tokens": token_api.seats.listed}
    status, revoked = token_api.request("DELETE", "/validators/tokens/0123456789ABCDEF")
    assert status == 200 and revoked["revoked"] is True and token_api.seats.revoked == ["0123456789abcdef"]
    status, answer = token_api.request("DELETE", "/validators/tokens/ffffffffffffffff")
    assert status == 404 and answer["error"]["code"] == "unknown_token"
    status, revoked = token_api.request("DELETE", "/validators/tokens/01234567")         # its first 8 will do
    assert status == 200 and token_api.seats.revoked[-1] == "01234567"
    status, answer = token_api.request("DELETE", "/validators/tokens/0123456")
    assert status == 400 and answer["error"]["code"] == "invalid_token_id"
    status, answer = token_api.request("DELETE", "/validators/tokens/nothex")
    assert status == 400 and answer["error"]["code"] == "invalid_token_id"
    assert token_api.seats.revoked == ["0123456789abcdef", "01234567"]


def test_every_token_route_needs_the_operators_token(token_api) -> None:
    for method, path in (("POST", "/validators/tokens"), ("GET", "/validators/tokens"),
                         ("DELETE", "/validators/tokens/0123456789abcdef")):
        assert token_api.request(method, path, token=None)[0] == 401, (method, path)
    assert token_api.seats.issued == [] and token_api.seats.revoked == []


def test_the_old_join_token_route_is_gone_and_says_what_replaced_it(token_api) -> None:
    status, answer = token_api.request("GET", "/validators/join-token")
    assert status == 410 and "validators token new" in answer["error"]["message"]


# --- the CLI ---------------------------------------------------------------------------------------------
def test_the_cli_checks_the_chains_own_bounds() -> None:
    from exchange.chain.state import seats
    from node.cli import validators

    assert validators.MAX_TOKEN_USES == seats.MAX_TOKEN_USES
    assert validators.MAX_TOKEN_TTL_S * 1000 == seats.MAX_TOKEN_TTL_MS


ISSUED = {"token": TOKEN_TEXT, "id": "0123456789abcdef", "issuer": NODE_ID, "uses": 2,
          "expires_ms": 1_800_000_000_000, "final": True}


@pytest.fixture
def api():
    server = ScriptedApi()
    yield server
    server.close()


def test_token_new_prints_the_token_alone_on_stdout(api) -> None:
    api.answers[("POST", "/validators/tokens")] = (201, ISSUED)
    result = run(["validators", "token", "new", "--uses", "2", "--ttl", "1h"], env={"EXCHANGE_NODE_API": api.url})
    assert result.exit_code == 0, result.output
    assert result.stdout == TOKEN_TEXT + "\n"
    assert "token 0123456789abcdef: 2 join(s) until 2027-01-15T08:00:00Z" in result.stderr
    assert json.loads(api.requests[-1]["body"]) == {"uses": 2, "ttl": 3600.0}


def test_token_new_out_writes_the_file_for_its_owner_only_and_prints_the_id(api, tmp_path) -> None:
    api.answers[("POST", "/validators/tokens")] = (201, {**ISSUED, "final": False})
    out = tmp_path / "a-token"
    out.write_text("an old token\n")
    out.chmod(0o644)
    result = run(["validators", "token", "new", "--out", str(out)], env={"EXCHANGE_NODE_API": api.url})
    assert result.exit_code == 0, result.output
    assert result.stdout == "0123456789abcdef\n" and TOKEN_TEXT not in result.output
    assert "not in a certified block yet" in result.stderr
    assert out.read_text() == TOKEN_TEXT + "\n" and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["a-token"], "no temporary file left behind"
    assert json.loads(api.requests[-1]["body"]) == {"uses": 1, "ttl": 86400.0}


def test_token_new_refuses_a_bad_ttl_or_use_count_before_asking(api) -> None:
    for args in (["--ttl", "soon"], ["--ttl", "8d"], ["--uses", "0"], ["--uses", "17"]):
        result = run(["validators", "token", "new", *args], env={"EXCHANGE_NODE_API": api.url})
        assert result.exit_code == 2 and ("--ttl" in result.output or "--uses" in result.output), result.output
    assert api.requests == []


def test_token_list_and_revoke(api) -> None:
    now_ms = int(time.time() * 1000)
    tokens = [{"id": "0123456789abcdef", "issuer": NODE_ID, "uses_left": 0, "expires_ms": now_ms + 3_600_000,
               "revoked": False, "admitted": ["aa" * 20, "bb" * 20]},
              {"id": "fedcba9876543210", "issuer": NODE_ID, "uses_left": 1, "expires_ms": now_ms - 1000,
               "revoked": False, "admitted": []},
              {"id": "1111111111111111", "issuer": NODE_ID, "uses_left": 1, "expires_ms": now_ms + 3_600_000,
               "revoked": True, "admitted": []},
              {"id": "2222222222222222", "issuer": NODE_ID, "uses_left": 3, "expires_ms": now_ms + 3_600_000,
               "revoked": False, "admitted": []},
              {"id": "3333333333333333", "issuer": NODE_ID, "uses_left": 3, "expires_ms": now_ms + 3_600_000,
               "revoked": False, "expired": True, "admitted": []}]        # by the chain's time, ahead of ours
    api.answers[("GET", "/validators/tokens")] = (200, {"tokens": tokens})
    result = run(["validators", "token", "list"], env={"EXCHANGE_NODE_API": api.url})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert "used up" in rows["0123456789abcdef"] and f"{'aa' * 20}, {'bb' * 20}" in rows["0123456789abcdef"]
    assert "expired" in rows["fedcba9876543210"] and "revoked" in rows["1111111111111111"]
    assert "active" in rows["2222222222222222"] and NODE_ID in rows["2222222222222222"]
    assert "expired" in rows["3333333333333333"]
    api.answers[("DELETE", "/validators/tokens/0123456789abcdef")] = (200, {**tokens[0], "revoked": True})
    result = run(["validators", "token", "revoke", "0123456789ABCDEF"], env={"EXCHANGE_NODE_API": api.url})
    assert result.exit_code == 0 and "revoked token 0123456789abcdef: nobody joins with it" in result.stdout
    api.answers[("DELETE", "/validators/tokens/ffffffffffffffff")] = (
        404, {"error": {"code": "unknown_token", "message": "no token ffffffffffffffff on this chain"}})
    result = run(["validators", "token", "revoke", "ffffffffffffffff"], env={"EXCHANGE_NODE_API": api.url})
    assert result.exit_code == 1 and "unknown_token: no token ffffffffffffffff" in result.stderr


def test_the_old_join_token_command_names_its_replacement(api) -> None:
    result = run(["join-token"], env={"EXCHANGE_NODE_API": api.url})
    assert result.exit_code == 1 and "validators token new" in result.stderr and api.requests == []


# --- exchange-node wait ----------------------------------------------------------------------------------
def test_wait_waits_for_the_node_of_a_data_dir_to_start(tmp_path) -> None:
    started = time.monotonic()
    result = run(["wait", "--data-dir", str(tmp_path), "--timeout", "0.5"])
    assert result.exit_code == 1 and time.monotonic() - started >= 0.5
    assert f"not ready after 0.5s: no node has started from {tmp_path} yet" in result.stderr
    (tmp_path / "node.json").write_text(json.dumps({"pid": 2 ** 22 + 7, "api": "http://127.0.0.1:9"}))
    result = run(["wait", "--data-dir", str(tmp_path), "--timeout", "0"])
    assert result.exit_code == 1 and f"(pid {2 ** 22 + 7}) is not running" in result.stderr


def _status(trust: str | None, role: str = "follower") -> dict:
    return {"node_id": NODE_ID, "chain_id": "ee" * 32, "role": role, "height": 12, "trust": trust}


def test_wait_returns_once_ready_and_seated(api, tmp_path) -> None:
    (tmp_path / "node.json").write_text(json.dumps({"pid": os.getpid(), "api": api.url}))
    api.answers[("GET", "/ready")] = (503, {"ready": False, "failing": ["chain"], "checks": [
        {"name": "chain", "ok": False, "detail": "not on a chain yet: listening for a network"}]})
    result = run(["wait", "--data-dir", str(tmp_path), "--timeout", "0"])
    assert result.exit_code == 1 and "chain: not on a chain yet: listening for a network" in result.stderr
    api.answers[("GET", "/ready")] = (200, {"ready": True, "failing": [], "checks": []})
    api.answers[("GET", "/status")] = (200, _status("JOIN_TOKEN"))
    api.answers[("GET", "/validators")] = (200, {"standby": []})
    result = run(["wait", "--data-dir", str(tmp_path), "--timeout", "0"])
    assert result.exit_code == 1 and "the seat its join token asks for is not granted yet" in result.stderr
    api.answers[("GET", "/validators")] = (200, {"standby": [{"node_id": NODE_ID, "since_height": 10}]})
    result = run(["wait", "--data-dir", str(tmp_path), "--timeout", "0"])
    assert result.exit_code == 0 and "ready: standby at height 12" in result.stdout
    api.answers[("GET", "/status")] = (200, _status("founded", "validator"))
    result = run(["wait", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "ready: validator at height 12" in result.stdout


def test_wait_gives_up_at_once_when_the_node_it_saw_stops(api, tmp_path) -> None:
    from node.cli.wait import NodeGone, wait_step

    runtime = tmp_path / "node.json"
    runtime.write_text(json.dumps({"pid": os.getpid(), "api": api.url}))
    api.answers[("GET", "/ready")] = (503, {"ready": False, "failing": ["chain"], "checks": [
        {"name": "chain", "ok": False, "detail": "catching up"}]})
    seen: list[int] = []
    assert wait_step(None, str(tmp_path), None, seen) == (False, "chain: catching up") and seen == [os.getpid()]
    runtime.unlink()                                # a clean stop removes it
    with pytest.raises(NodeGone, match=f"pid {os.getpid()}\\) stopped"):
        wait_step(None, str(tmp_path), None, seen)
    runtime.write_text(json.dumps({"pid": os.getpid(), "api": api.url}))
    wait_step(None, str(tmp_path), None, seen)
    dead = 2 ** 22 + 7
    runtime.write_text(json.dumps({"pid": dead, "api": api.url}))       # a kill -9 leaves it behind
    seen.append(dead)
    with pytest.raises(NodeGone, match=f"pid {dead}\\) stopped"):
        wait_step(None, str(tmp_path), None, seen)
