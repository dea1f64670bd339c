"""Real processes: the control API refuses requests without the cookie or token, the CLI finds the node it
started with no flags (non-default ports too), and unsafe or broken settings stop start-up with exit 2."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import closed_port, free_ports, wait_until

ENTRY_POINT = Path(sys.executable).parent / "exchange-node"
PRIVATE = [("GET", "/peers", None), ("GET", "/routing", None), ("GET", "/orders/x", None),
           ("DELETE", "/orders/x", None), ("POST", "/rpc/ping", {}),
           ("POST", "/orders", {"market": "BTC-USD", "side": "buy", "type": "limit", "price": "1", "qty": "1"})]
PUBLIC = ["/status", "/book/BTC-USD", "/trades/BTC-USD", "/metrics"]


def command() -> list[str]:
    """The installed `exchange-node` script, as a user runs it (or the module if not installed)."""
    return [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "node.cli"]


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A shell with nothing of ours set: the defaults (DATA_DIR under HOME) are what the CLI must use."""
    from config import Settings

    ours = set(Settings.env_names().values()) | {"EXCHANGE_NODE_API", "EXCHANGE_NODE_TOKEN", "XDG_DATA_HOME"}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    return env | {"HOME": str(home), "PYTHONUNBUFFERED": "1"} | extra


def without_traceback(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def test_api_without_the_cookie_is_401_and_the_cookie_lives_with_the_node(cluster):
    a = cluster.node("a", found_after=0)
    wait_until(lambda: a.status()["chain_id"], 10, message="the node founds its chain")
    cookie_file = a.data_dir / ".cookie"
    cookie = cookie_file.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", cookie) and stat.S_IMODE(cookie_file.stat().st_mode) == 0o600
    token = a.api_token
    for method, path, body in PRIVATE:
        status, answer = _anonymous(a, method, path, body)
        assert status == 401 and answer["error"]["code"] == "unauthorized", (method, path, status, answer)
    for path in PUBLIC:
        assert _anonymous(a, "GET", path)[0] == 200, path
    assert a.api("GET", "/peers")[0] == 200 and token == cookie          # the harness sends the cookie
    assert a.stop() == 0
    assert not cookie_file.exists()
    a.start()
    assert cookie_file.read_text() != cookie
    assert _anonymous(a, "GET", "/peers", token=cookie)[0] == 401        # a stopped run's cookie is dead
    assert a.api("GET", "/peers")[0] == 200


def _anonymous(node, method: str, path: str, body=None, token: str | None = None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(node.api_url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, (json.loads(response.read() or b"null") if path != "/metrics" else {})
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def user_node(tmp_path):
    """`exchange-node start --port P --api-port Q` as a user types it: default DATA_DIR under HOME."""
    home = tmp_path / "home"
    home.mkdir()
    p2p_port, api_port = free_ports(2)
    log = open(tmp_path / "node.log", "wb")
    proc = subprocess.Popen([*command(), "start", "--port", str(p2p_port), "--api-port", str(api_port),
                             "--discovery-mdns", "false", "--event-loop", "asyncio"],
                            cwd=tmp_path, env=user_env(home), stdout=log, stderr=subprocess.STDOUT)
    data_dir = home / ".local" / "share" / "exchange-node"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "node.log").read_text()
        return (data_dir / "node.json").exists()

    try:
        wait_until(up, 20, message="the node to write node.json")
        yield home, data_dir, api_port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def test_cli_with_no_flags_finds_the_node_it_started_on_non_default_ports(user_node, tmp_path):
    home, data_dir, api_port, _proc = user_node
    info = json.loads((data_dir / "node.json").read_text())
    assert info["api"] == f"http://127.0.0.1:{api_port}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return without_traceback(subprocess.run([*command(), *args], cwd=tmp_path, env=user_env(home),
                                                capture_output=True, text=True, timeout=30))

    status = cli("status")
    assert status.returncode == 0 and info["node_id"] in status.stdout, status.stderr
    peers = cli("peers")                           # a private endpoint: the CLI sent the cookie by itself
    assert peers.returncode == 0 and "no peers yet" in peers.stdout, peers.stderr
    accounts = cli("account", "list")
    assert accounts.returncode == 0 and re.search(r"^default\s+[0-9a-f]{64}$", accounts.stdout, re.M)
    made = cli("account", "new", "alice")          # while the node runs
    assert made.returncode == 0 and "created account alice" in made.stdout
    shown = cli("account", "show", "alice")
    assert shown.returncode == 0 and made.stdout.split("id", 1)[1].split()[0] in shown.stdout
    wrong = cli("peers", "--token", "not-the-cookie")
    assert wrong.returncode == 1 and "unauthorized" in wrong.stderr and "--token" in wrong.stderr


def test_cli_reports_a_dead_address_and_a_bad_one_in_one_line(tmp_path):
    port = closed_port()
    refused = without_traceback(subprocess.run([*command(), "status", "--api", f"127.0.0.1:{port}"],
                                               env=user_env(tmp_path), capture_output=True, text=True, timeout=30))
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"exchange-node: connection refused at 127.0.0.1:{port} (address from --api)")
    bad = without_traceback(subprocess.run([*command(), "status", "--api", "notaurl"], env=user_env(tmp_path),
                                           capture_output=True, text=True, timeout=30))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "invalid --api 'notaurl'" in bad.stderr


@pytest.mark.parametrize("args, env, needles", [
    (["--api-host", "0.0.0.0"], {}, ["API_HOST", "'0.0.0.0'", "API_TOKEN"]),
    ([], {"API_HOST": "192.0.2.1"}, ["API_HOST", "API_TOKEN"]),
    (["--api-host", "::"], {}, ["API_HOST", "API_TOKEN"]),
    ([], {"MARKETS": "BTC_USD"}, ["invalid MARKETS='BTC_USD'", "not BASE-QUOTE"]),
    (["--markets", "BTC-USD,BTC-USD"], {}, ["invalid --markets=", "configured twice"]),
    (["--api-token", "tok-x1"], {}, ["invalid --api-token='(hidden)'", "16-256 visible ASCII"]),
    ([], {"API_TOKEN": "zzq zzq zzq zzq zzq zzq"}, ["invalid API_TOKEN='(hidden)'"]),
])
def test_unsafe_or_broken_settings_exit_2_naming_the_setting(tmp_path, args, env, needles):
    proc = without_traceback(subprocess.run(
        [*command(), "start", "--data-dir", str(tmp_path / "d"), "--port", "0", "--api-port", "0",
         "--discovery-mdns", "false", *args], env=user_env(tmp_path, **env), capture_output=True, text=True,
        timeout=30))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert "tok-x1" not in proc.stderr and "zzq" not in proc.stderr   # a token is never echoed


def test_api_token_and_cookie_both_work(cluster):
    """(An API bound beyond loopback with a token runs in the namespace tests: tests/integration/netns.py.)"""
    node = cluster.node("t", api_host="127.0.0.2", api_token="t" * 20)
    assert node.api("GET", "/peers")[0] == 200
    assert _anonymous(node, "GET", "/peers")[0] == 401
    assert _anonymous(node, "GET", "/peers", token=(node.data_dir / ".cookie").read_text())[0] == 200


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_as_the_readme_sets_it_up(tmp_path):
    if not ENTRY_POINT.exists():
        pytest.skip("the exchange-node script is not installed in this environment (make test-deps)")
    env = user_env(tmp_path, DATA_DIR=str(tmp_path / "d"), PATH=f"{ENTRY_POINT.parent}:{os.environ['PATH']}")
    assert subprocess.run([*command(), "account", "new", "alice"], env=env, capture_output=True).returncode == 0
    other = tmp_path / "other"
    assert subprocess.run([*command(), "account", "new", "bob", "--data-dir", str(other)], env=env,
                          capture_output=True).returncode == 0
    script = f"""
eval "$(_EXCHANGE_NODE_COMPLETE=bash_source exchange-node)"
complete_words() {{ COMPREPLY=(); COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _exchange_node_completion exchange-node;
                   echo "${{COMPREPLY[*]}}"; }}
complete_words exchange-node acc
complete_words exchange-node account ""
complete_words exchange-node account show al
complete_words exchange-node account show --data-dir {other} ""
complete_words exchange-node order buy BTC-USD 1 --type p
"""
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["account", "list new show", "alice", "bob", "post_only"], proc.stdout


def test_a_readable_account_key_stops_start_up_with_the_fix(tmp_path):
    from node.accounts import AccountStore

    key = AccountStore(tmp_path / "d").ensure_default().path
    assert key is not None
    key.chmod(0o644)
    proc = without_traceback(subprocess.run(
        [*command(), "start", "--data-dir", str(tmp_path / "d"), "--port", "0", "--api-port", "0",
         "--discovery-mdns", "false"], env=user_env(tmp_path), capture_output=True, text=True, timeout=30))
    assert proc.returncode == 2 and f"fix with: chmod 600 {key}" in proc.stderr, proc.stderr
    assert not (tmp_path / "d" / "node.json").exists()
