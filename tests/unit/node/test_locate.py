"""How the CLI finds its node: --api, EXCHANGE_NODE_API, DATA_DIR/node.json, API_HOST/API_PORT; and which
token it sends (the cookie only ever to loopback)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.cookie import write_cookie
from node.locate import LocateError, locate_node, normalize_api_url


@pytest.mark.parametrize("raw, url", [
    ("127.0.0.1:7947", "http://127.0.0.1:7947"),
    ("localhost:7001", "http://localhost:7001"),
    ("http://127.0.0.1:7947/", "http://127.0.0.1:7947"),
    ("https://node.example.org", "https://node.example.org"),
    ("[::1]:7947", "http://[::1]:7947"),
    ("http://[::1]:7947", "http://[::1]:7947"),
    ("0.0.0.0:7947", "http://127.0.0.1:7947"),
    ("http://[::]:8000", "http://[::1]:8000"),
    ("  10.0.0.5:80  ", "http://10.0.0.5:80"),
])
def test_accepted_addresses(raw, url):
    assert normalize_api_url(raw, "--api") == url


@pytest.mark.parametrize("raw", ["notaurl", "", "   ", ":7947", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999",
                                 "127.0.0.1:port", "ftp://127.0.0.1:21", "http://", "http://:80", "::1:7947",
                                 "http://127.0.0.1:7947/api", "http://u:p@127.0.0.1:1", "http://a b:1",
                                 "http://-bad-.host:1", "127.0.0.1:7947?x=1", "http://127.0.0.1:-1"])
def test_refused_addresses_name_the_flag(raw):
    with pytest.raises(LocateError) as info:
        normalize_api_url(raw, "--api")
    assert str(info.value).startswith(f"invalid --api {raw!r}") and "\n" not in str(info.value)


def node_json(data_dir: Path, api: str, pid: int = 4242) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "node.json").write_text(json.dumps({"api": api, "pid": pid}))


def test_precedence_flag_env_runtime_file_settings(tmp_path):
    node_json(tmp_path, "http://127.0.0.1:7001")
    env = {"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": "127.0.0.1:7002", "API_PORT": "7003"}
    assert locate_node("127.0.0.1:7000", env=env).url == "http://127.0.0.1:7000"
    assert locate_node(env=env).url == "http://127.0.0.1:7002"
    del env["EXCHANGE_NODE_API"]
    target = locate_node(env=env)
    assert target.url == "http://127.0.0.1:7001" and "node.json" in target.source and "4242" in target.source
    (tmp_path / "node.json").unlink()
    assert locate_node(env=env).url == "http://127.0.0.1:7003"
    assert locate_node(env={"DATA_DIR": str(tmp_path)}).url == "http://127.0.0.1:7947"
    assert locate_node(env={"DATA_DIR": str(tmp_path), "API_HOST": "0.0.0.0"}).url == "http://127.0.0.1:7947"
    assert locate_node(env={"DATA_DIR": str(tmp_path), "API_HOST": "::1"}).url == "http://[::1]:7947"


def test_data_dir_flag_beats_env_and_default_follows_xdg(tmp_path):
    node_json(tmp_path / "a", "http://127.0.0.1:7101")
    node_json(tmp_path / "b", "http://127.0.0.1:7102")
    assert locate_node(data_dir=str(tmp_path / "a"), env={"DATA_DIR": str(tmp_path / "b")}).url.endswith(":7101")
    node_json(tmp_path / "xdg" / "exchange-node", "http://127.0.0.1:7103")
    assert locate_node(env={"XDG_DATA_HOME": str(tmp_path / "xdg")}).url.endswith(":7103")


def test_runtime_file_with_an_ipv6_bind_address(tmp_path):
    node_json(tmp_path, "http://::1:7201")
    assert locate_node(env={"DATA_DIR": str(tmp_path)}).url == "http://[::1]:7201"
    node_json(tmp_path, "http://:::7202")
    assert locate_node(env={"DATA_DIR": str(tmp_path)}).url == "http://[::1]:7202"


def test_unusable_runtime_file_falls_back_to_the_settings(tmp_path):
    for content in ["{not json", "[]", '{"api": 7}', '{"api": "notaurl"}', '{"pid": 1}']:
        (tmp_path / "node.json").write_text(content)
        assert locate_node(env={"DATA_DIR": str(tmp_path)}).url == "http://127.0.0.1:7947", content


@pytest.mark.parametrize("env, needle", [
    ({"API_PORT": "abc"}, "invalid API_PORT='abc'"),
    ({"API_HOST": "not a host"}, "invalid API_HOST='not a host'"),
    ({"EXCHANGE_NODE_API": "notaurl"}, "invalid EXCHANGE_NODE_API 'notaurl'"),
    ({"EXCHANGE_NODE_TOKEN": "two words"}, "invalid EXCHANGE_NODE_TOKEN"),
])
def test_bad_environment_is_named(tmp_path, env, needle):
    with pytest.raises(LocateError, match=needle):
        locate_node(env={"DATA_DIR": str(tmp_path), **env})


def test_token_flag_env_then_cookie_and_the_cookie_stays_on_loopback(tmp_path):
    cookie = write_cookie(tmp_path)
    env = {"DATA_DIR": str(tmp_path)}
    assert (locate_node(env=env).token, locate_node(env=env).token_source) == (cookie, str(tmp_path / ".cookie"))
    assert locate_node("[::1]:1", env=env).token == cookie
    assert locate_node("localhost:1", env=env).token == cookie
    assert locate_node("192.0.2.10:7947", env=env).token is None          # never sent off this machine
    assert locate_node("node.example.org:7947", env=env).token is None
    assert locate_node("192.0.2.10:7947", token="tok-flag", env=env).token == "tok-flag"
    env["EXCHANGE_NODE_TOKEN"] = "tok-env"
    assert locate_node(env=env).token == "tok-env" and locate_node(token="tok-flag", env=env).token == "tok-flag"
    assert locate_node(env={"DATA_DIR": str(tmp_path / "none")}).token is None


def test_address_for_messages(tmp_path):
    env = {"DATA_DIR": str(tmp_path)}
    assert locate_node("127.0.0.1:7947", env=env).address == "127.0.0.1:7947"
    assert locate_node("[::1]:7", env=env).address == "[::1]:7"
    assert locate_node("https://example.org", env=env).address == "example.org:443"
