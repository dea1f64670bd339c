"""Real processes: `exchange-node devnet 4` as the README says (its lines as written, the directory
moved into the test's own): four nodes, four validators, an order placed with the README's line and with the printed one
final on every node, Ctrl-C stops them all and leaves no process behind; the same command resumes the network.

The devnet as a lab: kill -9 one of four and it is reported while the other three keep running and
trading; `devnet start I` from another terminal brings it back and it catches up; kill -9 two and a survivor's
/status names both as not heard from while an order waits; `devnet start` both and the order is final. `ps -eo args`
never shows the join token or an API token meanwhile."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, wait_until

_SETTING_PREFIXES = ("EXCHANGE_NODE",)


def readme_lines(directory: Path) -> list[str]:
    """The README's devnet lines, its /tmp/devnet moved into the test's directory."""
    text = (ROOT / "README.md").read_text()
    marker = text.index("<!-- devnet:")
    start = text.index("```sh", marker) + 5
    block = text[start:text.index("```", start)]
    return [line.split("  #")[0].strip().replace("/tmp/devnet", str(directory)) for line in block.strip().splitlines()]


class Devnet:
    def __init__(self, command: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)} | {"PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)               # Ctrl-C
        return self.proc.wait(60)


def _cli(data_dir: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)} | {"DATA_DIR": data_dir}
    return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)


def _node_pids(directory: Path) -> list[int]:
    return [json.loads(p.read_text())["pid"] for p in sorted(directory.glob("node*/node.json"))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "exchange-node").exists(), reason="the README's lines use "
                    ".venv/bin/exchange-node, which `make run` / `make test` installs")
def test_devnet_4_as_the_readme_says_forms_trades_and_leaves_nothing_behind(tmp_path):
    directory = tmp_path / "devnet"
    start, order_line, kill_line, start_line = readme_lines(directory)
    assert start.endswith(f"devnet 4 --dir {directory}"), start
    devnet = Devnet(start)
    try:
        consoles = r"node(\d)  console (http://127\.0\.0\.1:\d+)/#token=([0-9a-f]+) "
        wait_until(lambda: "devnet ready" in devnet.text(), 90, message="devnet ready")
        wait_until(lambda: len(re.findall(consoles, devnet.text())) >= 4, 10,   # the banner's lines follow it
                   message="the banner's four console lines")
        text = devnet.text()
        assert re.search(r"devnet ready: 4 nodes, 4 validators", text), text[-2000:]
        assert re.search(r"^\[node[0-3]\] ", text, re.M), "node logs are streamed with a prefix"
        urls = re.findall(consoles, text)
        assert sorted(i for i, _, _ in urls) == ["0", "1", "2", "3"]
        for index, _, token in urls:                # the page can trade at once: its API token in the fragment
            assert token == (directory / f"node{index}" / ".cookie").read_text().strip()
        line = re.search(r"e\.g\. (DATA_DIR=\S+ (\S+) order buy BTC-USD 1 --price 100)\n", text)
        assert line is not None, text[-2000:]
        assert line.group(2) == str(ROOT / ".venv" / "bin" / "exchange-node"), "the printed line runs as printed"
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
        placed = subprocess.run(["bash", "-c", line.group(1)], cwd="/", env=env, capture_output=True, text=True,
                                timeout=30)                 # run as printed, from any directory
        assert placed.returncode == 0 and "[final]" in placed.stdout, placed.stdout + placed.stderr
        order_id = placed.stdout.split()[0]
        for index in range(4):
            shown = _cli(str(directory / f"node{index}"), "orders", "--json")
            wait_until(lambda: order_id in _cli(str(directory / f"node{index}"), "orders", "--json").stdout,
                       10)
            assert shown.returncode == 0
        pids = _node_pids(directory)
        assert len(pids) == 4 and all(_alive(pid) for pid in pids)
        as_written = subprocess.run(["bash", "-c", order_line], cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=30)
        assert as_written.returncode == 0 and "[final]" in as_written.stdout, as_written.stdout + as_written.stderr
        killed = subprocess.run(["bash", "-c", kill_line], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=30)
        assert killed.returncode == 0 and killed.stdout == "node3 killed\n", killed.stdout + killed.stderr
        assert not _alive(pids[3]) and devnet.proc.poll() is None
        three = subprocess.run(["bash", "-c", order_line], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=30)
        assert three.returncode == 0 and "[final]" in three.stdout, three.stdout + three.stderr
        back = subprocess.run(["bash", "-c", start_line], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert back.returncode == 0 and back.stdout.startswith("node3 started"), back.stdout + back.stderr
        pids = _node_pids(directory)
        assert len(pids) == 4 and all(_alive(pid) for pid in pids)
    finally:
        code = devnet.interrupt()
    assert code == 0, devnet.text()[-3000:]
    assert "all nodes stopped" in devnet.text()
    assert not [pid for pid in pids if _alive(pid)], "a node outlived its devnet"

    again = Devnet(start)                                # the same directory resumes the same network
    try:
        wait_until(lambda: "devnet ready" in again.text(), 90, message="devnet ready again")
        assert "4 validators" in again.text()
        shown = _cli(str(directory / "node2"), "orders", "--json")
        assert order_id in shown.stdout, shown.stdout[-500:]
    finally:
        assert again.interrupt() == 0


def _api(data_dir: Path, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The node of `data_dir`'s control API, with its cookie."""
    info = json.loads((data_dir / "node.json").read_text())
    request = urllib.request.Request(info["api"] + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {(data_dir / '.cookie').read_text().strip()}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _order(data_dir: Path, wait: float = 5.0) -> tuple[int, dict]:
    return _api(data_dir, "POST", f"/orders?wait={wait}",
                {"market": "BTC-USD", "side": "buy", "type": "limit", "price": "100", "qty": "0.1"})


def _control(directory: Path, *args: str) -> subprocess.CompletedProcess:
    """`exchange-node devnet ACTION I --dir DIR` from another terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    return subprocess.run([str(ROOT / ".venv" / "bin" / "exchange-node"), "devnet", *args, "--dir", str(directory)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


class PsWatch:
    """Every process's arguments as any local user sees them (`ps -eo args`), every 50 ms while it runs."""

    def __init__(self) -> None:
        self.snapshots: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while self.running:
            self.snapshots.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            time.sleep(0.05)

    def stop(self) -> list[str]:
        self.running = False
        self.thread.join(5)
        return self.snapshots


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "exchange-node").exists(), reason="the devnet's printed lines use "
                    ".venv/bin/exchange-node, which `make run` / `make test` installs")
def test_the_devnet_is_a_lab_a_node_killed_is_reported_the_rest_trade_and_it_comes_back(tmp_path):
    directory = tmp_path / "lab"
    ps = PsWatch()
    devnet = Devnet(f"{ROOT / '.venv' / 'bin' / 'exchange-node'} devnet 4 --dir {directory}")
    nodes = [directory / f"node{i}" for i in range(4)]
    try:
        wait_until(lambda: "devnet ready" in devnet.text(), 90, message="devnet ready")
        secrets_seen = [(directory / "join-token").read_text().strip().rsplit("-", 1)[1]]
        assert oct((directory / "join-token").stat().st_mode & 0o777) == "0o600"

        victim = json.loads((nodes[2] / "node.json").read_text())["pid"]
        os.kill(victim, signal.SIGKILL)                                     # kill -9 one of four
        wait_until(lambda: "devnet: node2 killed by SIGKILL; the others keep running (node0, node1, node3)"
                   in devnet.text(), 10, message="the death reported")
        for index in (0, 1, 3):                                             # three of four: a quorum trades on
            status, answer = _order(nodes[index])
            assert status == 201 and answer["final"] is True, (index, status, answer)
        assert devnet.proc.poll() is None and all(_alive(pid) for pid in (
            json.loads((nodes[i] / "node.json").read_text())["pid"] for i in (0, 1, 3)))
        height = _api(nodes[0], "GET", "/status")[1]["height"]
        missed = _order(nodes[1])[1]["order"]["id"]

        started = _control(directory, "start", "2")                           # from another terminal
        assert started.returncode == 0 and started.stdout.startswith("node2 started"), started.stdout + started.stderr
        assert _alive(json.loads((nodes[2] / "node.json").read_text())["pid"])
        wait_until(lambda: _api(nodes[2], "GET", "/status")[1]["height"] > height, 30, message="node2 catches up")
        wait_until(lambda: _api(nodes[2], "GET", f"/orders/{missed}")[0] == 200, 10,
                   message="node2 has the order placed while it was dead")
        secrets_seen += [(node / ".cookie").read_text().strip() for node in nodes]

        killed = {i: json.loads((nodes[i] / "node.json").read_text()) for i in (1, 3)}
        for info in killed.values():                                        # kill -9 two: no quorum
            os.kill(info["pid"], signal.SIGKILL)
        wait_until(lambda: all(f"devnet: node{i} killed by SIGKILL" in devnet.text() for i in killed), 10)

        def silent_named() -> bool:
            halt = _api(nodes[0], "GET", "/status")[1]["exchange"]["halt"]
            return halt["halted"] and {s["node_id"] for s in halt["silent"]} == {i["node_id"] for i in killed.values()}
        wait_until(silent_named, 30, message="a survivor's halt names the two killed validators")
        status, pending = _order(nodes[0], wait=0.5)
        assert status == 202 and pending["final"] is False, pending
        for i in killed:
            again = _control(directory, "start", str(i))
            assert again.returncode == 0, again.stdout + again.stderr
        wait_until(lambda: _api(nodes[0], "GET", f"/orders/{pending['order']['id']}")[1].get("final") is True, 60,
                   message="the pending order final once both are back")
        refused = _control(directory, "start", "1")
        assert refused.returncode == 1 and "node1 is running already" in refused.stderr
        at_end = _node_pids(directory)
        assert len(at_end) == 4 and all(_alive(pid) for pid in at_end)
    finally:
        code = devnet.interrupt()
        snapshots = ps.stop()
    assert code == 0, devnet.text()[-3000:]
    assert len(snapshots) > 100
    leaked = [secret[:12] for secret in secrets_seen if any(secret in snap for snap in snapshots)]
    assert not leaked, f"tokens in `ps -eo args`: {leaked}"
    assert not [pid for pid in at_end if _alive(pid)], "a node outlived its devnet"
