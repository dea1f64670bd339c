"""Real `exchange-node` processes for integration tests, driven the way a user drives them:
the CLI to start, the control API to observe, signals to stop or kill."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Sequence

from tests import zygote

ROOT = Path(__file__).resolve().parent.parent
# Until a started node writes its node.json: about a second of CPU for its imports on an idle machine. In a CI run of
# the real-process tier (load 3.2 on two cores) a follower had not written it after 15 s; its log says why if 30 s
# is not enough either.
START_SECONDS = 30.0
ZYGOTE = zygote.Zygote(ROOT)        # forks this test process's nodes from one interpreter that imported the node


def converged(nodes: Sequence["NodeProcess"], market: str = "BTC-USD") -> bool:
    """Every node at the same height with the same state hash and the same book and trades."""
    views = [n.get(f"/book/{market}?depth=1000") for n in nodes]
    if len({(v["height"], v["state_hash"], v["digest"]) for v in views}) != 1:
        return False
    trades = [n.get(f"/trades/{market}?limit=10000")["trades"] for n in nodes]
    return all(t == trades[0] for t in trades)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, message: str = "") -> Any:
    """Poll `predicate` (usually an API query) until truthy; raise AssertionError with `message`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, urllib.error.URLError, KeyError, ValueError, AssertionError) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s: {message or predicate}"
                                 + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(interval)


FREE_PORTS = range(12000, 32000)     # below the kernel's ephemeral range (32768+)
_SLICES = 4                         # ... cut into one slice per test worker (xdist's gw0..gw3, then again)
_next_port: list[int] = []          # this process's place in its slice


def cpu_seconds(pid: int) -> float:
    """CPU time, user and system, the process `pid` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int | str = "self") -> int:
    """Resident memory of the process `pid` now, in KiB (Linux /proc); 0 once it has none (a zombie)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_ports(n: int) -> list[int]:
    """Ports for nodes that must know each other's address before starting, or start again on the same one:
    taken below the kernel's ephemeral range, so another process's outgoing connection cannot grab one between
    a node's stop and its restart (a node first started on port 0 had its port taken so, and its restart failed).
    Each test worker takes from a slice of its own, in turn from a random place in it, so two workers, or two
    tests of one worker, are not handed one port while its node is stopped."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) % _SLICES if worker[2:].isdigit() else 0
    size = len(FREE_PORTS) // _SLICES
    first = FREE_PORTS.start + index * size
    if not _next_port:
        _next_port.append(random.randrange(size))
    ports: list[int] = []
    for _ in range(size):
        if len(ports) == n:
            break
        port = first + _next_port[0] % size
        _next_port[0] += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    assert len(ports) == n, f"no {n} free ports left in {first}..{first + size - 1}"
    return ports


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeProcess:
    """One node: its own data dir, its API on an ephemeral port and its peer port from `free_ports` (read back from
    DATA_DIR/node.json)."""

    def __init__(self, base: Path, name: str, **settings: Any) -> None:
        self.name = name
        self.data_dir = base / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # a port of free_ports, not 0: a restart on the port its peers know must find it free
        self.settings: dict[str, Any] = {"p2p_host": "127.0.0.1", "p2p_port": free_ports(1)[0], "api_port": 0,
                                         "discovery_mdns": "false", "discovery_grenache": "false",
                                         # the DHT dials whatever its lookups name: tests that build a topology
                                         # (relays, partitions) keep it off; tests of the DHT turn it on
                                         "discovery_dht": "false",
                                         # the browser endpoint (aioquic, a UDP port) is on by default; the tests of
                                         # browsers turn it on, the rest save its import at every start
                                         "browser_webtransport": "false",
                                         "heartbeat_interval": 1.0, "event_loop": "asyncio",
                                         "found_after": 30.0} | settings
        self.env_extra: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.log_path = self.data_dir / "node.log"
        self._join_token: str | None = None
        self.namespace: str | None = None           # a network namespace of a test's own to run in

    # --- lifecycle --------------------------------------------------------------------------
    def command(self) -> list[str]:
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        return [*prefix, *self.node_command()]

    def node_command(self) -> list[str]:
        """`python -m node.cli start` with this node's settings (inside its namespace when it has one)."""
        args = [sys.executable, "-m", "node.cli", "start", "--data-dir", str(self.data_dir)]
        for key, value in self.settings.items():
            if value is None or key in ENV_ONLY:
                continue
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            args += [f"--{key.replace('_', '-')}", str(value)]
        return args

    def start(self, wait: bool = True, **overrides: Any) -> "NodeProcess":
        self.settings.update(overrides)
        runtime = self.data_dir / "node.json"
        runtime.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS} | {"PYTHONUNBUFFERED": "1"}
        env |= self.env_extra
        env |= {ENV_ONLY[key]: str(value) for key, value in self.settings.items() if key in ENV_ONLY and value is not None}
        self._log = open(self.log_path, "ab")
        if os.environ.get("EXCHANGE_TEST_STARTS"):     # a file listing each start's test: where the suite's CPU goes
            with open(os.environ["EXCHANGE_TEST_STARTS"], "a") as starts:
                starts.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?')}\t{self.name}\n")
        command = self.command()
        forkable = zygote.forkable(command)
        if forkable is not None and zygote.usable(env):
            self.proc = ZYGOTE.spawn(forkable, env, ROOT, self._log)
        else:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_SECONDS) -> None:
        runtime = self.data_dir / "node.json"

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if not runtime.exists():
                return False
            info = json.loads(runtime.read_text())
            assert self.proc is not None            # started before it is waited for
            if info.get("pid") != self.proc.pid:
                return False
            self.info = info
            return True

        try:
            wait_until(ready, timeout, message=f"{self.name} to start")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log ends:\n{self.log_tail()}") from None

    @property
    def api_url(self) -> str:
        return self.info["api"]

    @property
    def api_token(self) -> str | None:
        """What the CLI would send: the configured API_TOKEN, else this run's cookie."""
        if self.settings.get("api_token"):
            return str(self.settings["api_token"])
        try:
            return (self.data_dir / ".cookie").read_text().strip() or None
        except OSError:
            return None

    def auth_headers(self) -> dict[str, str]:
        token = self.api_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def p2p_address(self) -> str:
        return self.info["listen"]

    @property
    def p2p_port(self) -> int:
        return int(self.info["listen"].rsplit(":", 1)[1])

    @property
    def node_id(self) -> str:
        return self.info["node_id"]

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait: a clean shutdown exits 0."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- control API ------------------------------------------------------------------------
    def metric(self, name: str) -> float:
        """One unlabelled series of /metrics; a series the node does not export fails."""
        request = urllib.request.Request(self.api_url + "/metrics", headers=self.auth_headers())
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert found, f"{name} not in /metrics"
        return float(found.group(1))

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **self.auth_headers()})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def get(self, path: str, timeout: float = 10.0) -> Any:
        status, body = self.api("GET", path, timeout=timeout)
        assert status == 200, (status, body)
        return body

    def status(self) -> dict:
        return self.get("/status")

    def join_token(self) -> str:
        """A join token this node (a validator) issued through its control API, as its operator would with
        `validators token new`: 16 joins, valid for an hour, its grant in a certified block. Issued once per node
        and kept, so every test that seats nodes "with the founder's token" shares one."""
        if self._join_token is None:
            def issue() -> dict:
                status, body = self.api("POST", "/validators/tokens", {"uses": 16, "ttl": 3600}, timeout=20)
                if status == 503:                       # no chain here yet: ask again
                    raise AssertionError(f"{status} {body}")
                if status != 201:
                    raise RuntimeError(f"{self.name} issued no join token: {status} {body}")
                return body

            issued = wait_until(issue, 20, interval=0.2, message=f"{self.name} issues a join token")
            if not issued.get("final"):
                wait_until(lambda: issued["id"] in {t["id"] for t in self.get("/validators/tokens")["tokens"]}, 20,
                           interval=0.1, message=f"the grant of {self.name}'s join token in a certified block")
            self._join_token = str(issued["token"])
        return self._join_token

    def peers(self) -> list[dict]:
        return self.get("/peers")["peers"]

    def connected_ids(self) -> set[str]:
        return {p["node_id"] for p in self.peers() if p["status"] == "connected"}

    def new_accounts(self, *names: str) -> None:
        """Create accounts (key pairs) on this node, as its operator would with `exchange-node account new`."""
        for name in names:
            done = self.cli("account", "new", name)
            assert done.returncode == 0 or "exists" in done.stderr, done.stderr

    def cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
        """Run a CLI command against this node the way its operator would: DATA_DIR names the node (the CLI
        finds its API in node.json and its cookie next to it); EXCHANGE_NODE_API pins the address."""
        env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS and not k.startswith("EXCHANGE_NODE")}
        env |= {"DATA_DIR": str(self.data_dir), "EXCHANGE_NODE_API": self.api_url}
        if self.settings.get("api_token"):
            env["EXCHANGE_NODE_TOKEN"] = str(self.settings["api_token"])
        return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)


# Settings a node is given in its environment, never on its command line, where any local user reads them with
# `ps` (`exchange-node start` refuses a join token there).
ENV_ONLY = {"join_token": "JOIN_TOKEN"}
_SETTING_ENVS: set[str] = set()
try:
    from config import Settings as _Settings

    _SETTING_ENVS = set(_Settings.env_names().values())
except ImportError:  # pragma: no cover
    pass


def expected_seats(nodes: int, max_validators: int = 7, seat_rule: str = "bft") -> int:
    """How many of `nodes` granted nodes hold seats: the largest size the seat rule allows."""
    limit = min(nodes, max_validators)
    return limit if seat_rule == "any" else max(n for n in range(1, limit + 1) if n % 3 == 1)


class Cluster:
    """Starts nodes and guarantees every process it started is gone at teardown."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nodes: list[NodeProcess] = []

    def node(self, name: str | None = None, *, start: bool = True, **settings: Any) -> NodeProcess:
        node = NodeProcess(self.base, name or f"n{len(self.nodes)}", **settings)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def chain(self, count: int, *, timeout: float = 30.0, token: bool = True, **settings: Any) -> list[NodeProcess]:
        """`count` nodes on one chain: the first founds it at once, the others bootstrap to it with its join
        token (`token=False`: as plain followers) and take seats as the seat rule allows (1, 4, 7 under the
        default `bft`; every joiner under `seat_rule="any"`), up to MAX_VALIDATORS."""
        first = self.node(f"n{len(self.nodes)}", **{"found_after": 0, **settings})
        wait_until(lambda: first.status()["chain_id"], 10, message="the first node founds a chain")
        extra = {"join_token": first.join_token()} if token and settings.get("role") != "follower" else {}
        rest = [self.node(f"n{len(self.nodes)}", start=False, bootstrap_peers=first.p2p_address, **extra, **settings)
                for _ in range(1, count)]
        for node in rest:
            node.start(wait=False)
        for node in rest:
            node.wait_ready()
        nodes = [first, *rest]
        seats = expected_seats(count if extra else 1, int(settings.get("max_validators", 7)),
                               str(settings.get("seat_rule", "bft")))

        def formed() -> bool:
            views = [n.status() for n in nodes]
            return (len({v["chain_id"] for v in views}) == 1 and
                    all(len(v["validators"]) == seats and v["quorum"] for v in views))
        wait_until(formed, timeout, interval=0.2, message=f"{count} nodes on one chain with {seats} validators")
        return nodes

    def close(self) -> None:
        end_processes([node.proc for node in self.nodes if node.proc is not None])
        for node in self.nodes:
            if getattr(node, "_log", None):
                node._log.close()


def end_processes(processes: Sequence[subprocess.Popen], grace: float = 0.5) -> None:
    """At teardown: SIGTERM every process still running, then SIGKILL whatever has not exited `grace` seconds
    later. A clean stop takes a tenth of a second, but a validator's waits up to 4 s for a block to order its
    seat's hand-back, which never comes when its peers are stopped with it, so every test with four validators
    or more ends with this grace; nothing is checked any more here."""
    running = [proc for proc in processes if proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
