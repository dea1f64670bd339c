"""Real processes: seats are granted, never taken, and a validator leaving never halts the exchange.

- The README's "three nodes on one machine" block, run verbatim by bash: in a mount and network
  namespace of its own, with a private /tmp and a loopback of its own, so the README's /tmp/a..c, /tmp/a-token and
  ports 79xx are the test's alone and nothing is substituted; no sleep anywhere, `wait` does the waiting. One
  validator and two standbys; `ps -eo args` never shows the token meanwhile; stop any one of the three with
  SIGINT and the other two finalise an order within 5 s.
- A join token never on a command line: one there, an empty or malformed one (environment, file,
  standard input) or two ways at once stop `start` with one line (exit 2) that never shows it; a node given
  --join-token-file waits (saying so once) until the file holds a whole token, Ctrl-C ends the wait (exit 0), and
  a token written later to that file or given on standard input seats its node as a standby.
- An operator's tokens through the CLI against a real validator: `token new` prints the token alone, `token
  list` shows it active, then used up with the node it admitted; a token revoked by its id's first 8 characters
  admits nobody (the holder is told so, and `wait` says its seat is not granted).
- Strangers with default settings, one through a bootstrap address and one found by mDNS on loopback,
  get no seat for 30 s while their orders become final.
- Seats by approval: `exchange-node validators add` on a lone founder makes standbys, promoted together
  once the set can grow to four; on four validators one approval is not enough, three (more than two
  thirds) are.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.harness import _SETTING_ENVS, ROOT, Cluster, NodeProcess, end_processes, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    marker = text.index("<!-- three-nodes:")
    start = text.index("```sh", marker) + 5
    return text[start:text.index("```", start)].strip() + "\n"


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


class ReadmeRun:
    """The README's block run by `bash -e` in a namespace of its own (a private /tmp bound to `tmp`, a loopback of
    its own); its nodes' data directories are seen here under `tmp`; the CLI reaches them by entering the network
    namespace of one of them."""

    def __init__(self, tmp: Path, block: str) -> None:
        self.tmp = tmp
        tmp.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS and not k.startswith("EXCHANGE_NODE")}
        env |= {"PYTHONUNBUFFERED": "1", "DISCOVERY_MDNS": "false", "README_BLOCK": block, "PRIVATE_TMP": str(tmp),
                "REPO": str(ROOT.resolve())}
        # a checkout under /tmp (a clean clone in `mktemp -d`) stays where it is: bound into the private /tmp first
        setup = ('case "$REPO" in /tmp/*) mkdir -p "$PRIVATE_TMP/${REPO#/tmp/}" && '
                 'mount --bind "$REPO" "$PRIVATE_TMP/${REPO#/tmp/}";; esac && '
                 'mount --rbind "$PRIVATE_TMP" /tmp && ip link set lo up && exec bash -e -c "$README_BLOCK"')
        self.proc = subprocess.Popen(["unshare", "--mount", "--net", "--", "bash", "-c", setup], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.ps: list[str] = []                         # every process's arguments, as any local user sees them
        self.watching = True
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._watch_ps, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _watch_ps(self) -> None:
        while self.watching:
            self.ps.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            time.sleep(0.05)

    def output(self) -> str:
        return "".join(self.lines)

    def pid(self, name: str) -> int:
        return int(json.loads((self.tmp / name / "node.json").read_text())["pid"])

    def pids(self) -> list[int]:
        found = []
        for name in ("a", "b", "c"):
            try:
                found.append(self.pid(name))
            except (OSError, ValueError, KeyError):
                pass
        return found

    def cli(self, name: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """`exchange-node ARGS` against node `name`, run inside the block's network namespace."""
        holder = next(pid for pid in self.pids() if _alive(pid))
        env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS and not k.startswith("EXCHANGE_NODE")}
        env["DATA_DIR"] = str(self.tmp / name)
        return subprocess.run(["nsenter", "-t", str(holder), "-n", "--", str(ROOT / ".venv/bin/exchange-node"), *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def status(self, name: str) -> dict:
        done = self.cli(name, "status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def close(self) -> None:
        self.watching = False
        pids = self.pids()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        end_processes([self.proc])


@pytest.fixture
def readme(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the README block runs in a mount and network namespace of its own (needs root)")
    run = ReadmeRun(tmp_path / "tmp", _readme_block())
    yield run
    run.close()


def _seats_shown(out: str) -> tuple[list[str], list[str]]:
    """The validators and the standbys `$N validators` printed (its table rows start with a node id; the nodes' log
    lines, which share the terminal, do not)."""
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if re.match(r"epoch \d+: \d+ validator", line))
    validators: list[str] = []
    standby: list[str] = []
    rows = validators
    for line in lines[first + 1:]:
        if line.startswith("standby (approved"):
            rows = standby
        elif re.match(r"[0-9a-f]{40}\s", line):
            rows.append(line.split()[0])
        elif "[final]" in line:
            break
    return validators, sorted(standby)


def _node_id(run: ReadmeRun, name: str) -> str:
    return run.status(name)["node_id"]


@pytest.mark.parametrize("stopped", ["a", "b", "c"])
def test_the_readmes_three_nodes_run_as_pasted_and_survive_any_one_stopped_with_ctrl_c(readme: ReadmeRun,
                                                                                       stopped: str):
    assert readme.proc.wait(120) == 0, readme.output()[-4000:]     # every line, the waits included, succeeded
    token = (readme.tmp / "a-token").read_text().strip()
    assert re.fullmatch(r"exn1-[0-9a-f]{64}-[0-9a-f]{64}", token)
    assert oct((readme.tmp / "a-token").stat().st_mode & 0o777) == "0o600"
    out = readme.output()
    ids = {name: _node_id(readme, name) for name in ("a", "b", "c")}
    assert _seats_shown(out) == ([ids["a"]], sorted([ids["b"], ids["c"]])), out[-4000:]
    assert re.search(r"\[final\]", out), out[-2000:]                # `$N order buy ... --data-dir /tmp/b`
    readme.watching = False
    seed = token.rsplit("-", 1)[1]
    assert len(readme.ps) > 20 and not [snap for snap in readme.ps if seed in snap], "a token in `ps -eo args`"
    for name in ids:
        view = readme.status(name)
        assert view["validators"] == [ids["a"]] and view["standby"] == 2, view

    victim = readme.pid(stopped)
    rest = [name for name in ("a", "b", "c") if name != stopped]
    os.kill(victim, signal.SIGINT)                                 # Ctrl-C
    wait_until(lambda: not _alive(victim), 15, message=f"{stopped} stops on SIGINT")
    for name in rest:
        started = time.monotonic()
        done = readme.cli(name, "order", "buy", "BTC-USD", "0.1", "--price", "100", "--wait", "5", "--json")
        took = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr
        answer = json.loads(done.stdout)
        assert answer.get("final") is True or answer.get("order", {}).get("final") is True, answer
        assert took < 5.0, f"an order on {name} took {took:.1f}s to be final after {stopped} stopped"
    if stopped == "a":
        assert "validator seat handed back" in readme.output(), readme.output()[-3000:]
        views = [readme.status(name) for name in rest]
        assert all(len(v["validators"]) == 1 and v["validators"][0] in {ids["b"], ids["c"]} for v in views), views


def _final_order(node: NodeProcess, client_id: str) -> float:
    """Place an order through the CLI as a user does; seconds until it was answered final."""
    started = time.monotonic()
    done = node.cli("order", "buy", "BTC-USD", "0.1", "--price", "100", "--wait", "5", "--json", timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer.get("final") is True or answer.get("order", {}).get("final") is True, answer
    return time.monotonic() - started


def test_strangers_with_default_settings_get_no_seat(cluster: Cluster, tmp_path: Path):
    network = f"strangers-{uuid.uuid4().hex[:12]}"
    lan: dict[str, Any] = {"network_id": network, "discovery_mdns": "true", "mdns_interfaces": "127.0.0.1", **FAST}
    founder, = cluster.chain(1, **lan)
    by_bootstrap = cluster.node("stranger-bootstrap", network_id=network, bootstrap_peers=founder.p2p_address, **FAST)
    by_mdns = cluster.node("stranger-mdns", **lan)
    strangers = [by_bootstrap, by_mdns]
    wait_until(lambda: all(s.status()["chain_id"] == founder.status()["chain_id"] for s in strangers), 20,
               message="both strangers follow the founder's chain")
    for stranger in strangers:
        _final_order(stranger, stranger.name)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        views = [n.status() for n in (founder, *strangers)]
        assert all(v["validators"] == [founder.node_id] for v in views), views
        assert all(v["role"] == "follower" for v in views[1:]), views
        time.sleep(1.0)
    seats = founder.get("/validators")
    assert seats["standby"] == [] and seats["pending"] == [], seats


def test_seats_by_approval_grow_the_set_to_four_and_need_two_thirds(cluster: Cluster):
    founder, = cluster.chain(1, **FAST)
    followers = [cluster.node(f"f{i}", bootstrap_peers=founder.p2p_address, **FAST) for i in range(4)]
    wait_until(lambda: all(f.status()["chain_id"] == founder.status()["chain_id"] for f in followers), 20)
    wait_until(lambda: {f.node_id for f in followers} <= founder.connected_ids(), 20, message="links to all")
    for follower in followers[:3]:
        added = founder.cli("validators", "add", follower.node_id)
        assert added.returncode == 0, added.stdout + added.stderr
    members = {founder.node_id, *(f.node_id for f in followers[:3])}
    wait_until(lambda: all(set(n.status()["validators"]) == members for n in (founder, *followers)), 20,
               interval=0.2, message="the three approved standbys promoted together: four validators")
    late = followers[3]
    validators = [founder, *followers[:3]]
    wait_until(lambda: {late.node_id} <= validators[1].connected_ids() | {late.node_id}, 10)
    once = validators[0].cli("validators", "add", late.node_id, "--json")
    assert once.returncode == 0, once.stdout + once.stderr
    pending = json.loads(once.stdout)["pending"]
    wait_until(lambda: any(p["node_id"] == late.node_id and p["approvals"] == 1 and p["needed"] == 3
                           for p in founder.get("/validators")["pending"]), 10, message="one approval recorded")
    assert late.node_id not in {s["node_id"] for s in founder.get("/validators")["standby"]}, pending
    for validator in validators[1:3]:
        wait_until(lambda: late.node_id in {p["node_id"] for p in validator.get("/validators")["pending"]}, 10)
        done = validator.cli("validators", "add", late.node_id)
        assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: late.node_id in {s["node_id"] for s in founder.get("/validators")["standby"]}, 10,
               message="three of four approved: the node is a standby")
    assert len(founder.status()["validators"]) == 4, "a fifth seat does not tolerate more faults: it waits"
    _final_order(late, "late")


def _start_argv(data_dir: Path) -> list[str]:
    return [str(ROOT / ".venv/bin/exchange-node"), "start", "--data-dir", str(data_dir), "--port", "0", "--api-port",
            "0", "--discovery-mdns", "false", "--discovery-dht", "false"]


TOKEN_LIKE = "exn1-" + "12" * 32 + "-" + "34" * 32


@pytest.mark.parametrize("how, says", [
    ("argv", "a join token is never given on the command line (any local user reads it with `ps`): use "
             "--join-token-file PATH"),
    ("empty env", "invalid JOIN_TOKEN='': is empty"),
    ("bad env", "invalid JOIN_TOKEN='(hidden)': is not a join token"),
    ("bad file", "is not a join token: expected exn1-<64 hex: chain id>-<64 hex: secret>"),
    ("empty stdin", "the join token read from standard input is empty"),
    ("two ways", "the join token is given 2 ways (JOIN_TOKEN, JOIN_TOKEN_FILE): give it one way"),
])
def test_an_unusable_join_token_stops_start_with_one_line(tmp_path: Path, how: str, says: str):
    argv, env, stdin = _start_argv(tmp_path / "node"), {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS}, ""
    token_file = tmp_path / "token"
    if how == "argv":
        argv += ["--join-token", TOKEN_LIKE]
    elif how == "empty env":
        env["JOIN_TOKEN"] = ""
    elif how == "bad env":
        env["JOIN_TOKEN"] = TOKEN_LIKE[:-1] + "x"
    elif how == "bad file":
        token_file.write_text("exn1-not-a-token\n")
        argv += ["--join-token-file", str(token_file)]
    elif how == "empty stdin":
        argv += ["--join-token", "-"]
    else:
        env["JOIN_TOKEN"], env["JOIN_TOKEN_FILE"] = TOKEN_LIKE, str(token_file)
    done = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert TOKEN_LIKE[20:] not in done.stderr and TOKEN_LIKE[:-1] + "x" not in done.stderr
    assert not (tmp_path / "node" / "node.json").exists(), "nothing started"


def test_ctrl_c_stops_a_node_waiting_for_its_token_file(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS} | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*_start_argv(tmp_path / "node"), "--join-token-file", str(tmp_path / "nowhere" / "t")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"waiting for the join token at {tmp_path / 'nowhere' / 't'}" in line, line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert "stopped (SIGINT) while waiting for the join token" in proc.stdout.read()
    finally:
        end_processes([proc])


def test_a_token_file_written_later_or_a_token_on_stdin_seats_the_node(cluster: Cluster):
    founder, = cluster.chain(1, **FAST)
    token = founder.join_token()
    path = cluster.base / "later" / "token"
    by_file = cluster.node("by-file", start=False, bootstrap_peers=founder.p2p_address, join_token_file=str(path),
                           **FAST)
    by_file.start(wait=False)
    wait_until(lambda: "waiting for the join token at" in by_file.log_path.read_text(), 15,
               message="the node says what it waits for")
    path.parent.mkdir()
    path.write_text(token[:50])                     # a writer half way: read again, not refused
    path.write_text(token + "\n")
    by_file.wait_ready()
    assert by_file.log_path.read_text().count("waiting for the join token at") == 1

    by_stdin = cluster.node("by-stdin", start=False, bootstrap_peers=founder.p2p_address, **FAST)
    env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS} | {"PYTHONUNBUFFERED": "1"}
    log = open(by_stdin.log_path, "ab")
    by_stdin._log = log
    by_stdin.proc = subprocess.Popen([*by_stdin.command(), "--join-token", "-"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    assert by_stdin.proc.stdin is not None
    by_stdin.proc.stdin.write((token + "\n").encode())
    by_stdin.proc.stdin.close()
    by_stdin.wait_ready()
    wait_until(lambda: {s["node_id"] for s in founder.get("/validators")["standby"]} == {by_file.node_id,
                                                                                     by_stdin.node_id}, 20,
               interval=0.2, message="both hold a standby place, granted by the token")
    assert token not in "".join(p.read_text(errors="replace") for p in cluster.base.glob("*/node.log"))


def test_an_operator_issues_lists_and_revokes_tokens_with_the_cli(cluster: Cluster):
    founder, = cluster.chain(1, **FAST)
    issued = founder.cli("validators", "token", "new", "--uses", "1", "--ttl", "30m")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    token_id = re.search(r"^token ([0-9a-f]{16}): 1 join\(s\) until ", issued.stderr, re.M)
    assert re.fullmatch(r"exn1-[0-9a-f]{64}-[0-9a-f]{64}", token) and token_id, issued.stdout + issued.stderr

    def row(token_id: str) -> str:
        listed = founder.cli("validators", "token", "list")
        assert listed.returncode == 0, listed.stderr
        return next(line for line in listed.stdout.splitlines() if line.startswith(token_id))
    assert row(token_id.group(1)).split()[1:3] == ["active", "1"]

    joiner = cluster.node("joiner", bootstrap_peers=founder.p2p_address, join_token=token, **FAST)
    wait_until(lambda: "used up" in row(token_id.group(1)) and joiner.node_id in row(token_id.group(1)), 20,
               interval=0.2, message="the token's one join used, by the joiner")
    refused = founder.cli("validators", "token", "new", "--uses", "17")
    assert refused.returncode == 2 and "--uses" in refused.stderr

    second = founder.cli("validators", "token", "new", "--out", str(cluster.base / "second"))
    assert second.returncode == 0, second.stderr
    second_id = second.stdout.strip()
    assert (cluster.base / "second").read_text().startswith("exn1-") and second_id not in token
    revoked = founder.cli("validators", "token", "revoke", second_id[:8])
    assert revoked.returncode == 0 and f"revoked token {second_id}" in revoked.stdout, revoked.stdout + revoked.stderr
    assert row(second_id).split()[1] == "revoked"
    late = cluster.node("late", start=False, bootstrap_peers=founder.p2p_address,
                        join_token=(cluster.base / "second").read_text().strip(), **FAST)
    late.start()
    wait_until(lambda: "admits this node to no seat: a validator revoked it" in late.log_path.read_text(), 20,
               message="the late node told its token was revoked")
    standby = {s["node_id"] for s in founder.get("/validators")["standby"]}
    assert joiner.node_id in standby and late.node_id not in standby, "a revoked token admits nobody"
    waited = late.cli("wait", "--timeout", "1")
    assert waited.returncode == 1 and "the seat its join token asks for is not granted yet" in waited.stderr, \
        waited.stdout + waited.stderr
    assert joiner.cli("wait", "--timeout", "5").stdout.startswith("ready: standby at height ")
    gone = founder.cli("validators", "token", "revoke", "ffffffffffffffff")
    assert gone.returncode == 1 and "unknown_token" in gone.stderr
