"""DemoNode: one real `exchange-node start` process for the demos, driven through its control API.

Every process a demo starts is registered with a `Processes` set whose `close()` (called in a
`finally`) stops each by its own PID: SIGTERM, then SIGKILL after a grace period. Nothing is
ever ended by name.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar, cast

from config import Settings
from node.cli.client import ApiFailure, Json, JsonObject, NodeUnreachable, call
from node.cookie import read_cookie

_SETTING_ENVS = frozenset(Settings.env_names().values())
T = TypeVar("T")

BASE_SETTINGS = {"p2p_host": "127.0.0.1", "p2p_port": 0, "api_port": 0, "discovery_mdns": "false",
                 "discovery_grenache": "false", "discovery_pex": "true", "event_loop": "asyncio",
                 "debug_api": "true", "log_level": "WARNING", "heartbeat_interval": 0.2}


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `predicate` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (NodeUnreachable, ApiFailure, OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def work_dir(base: Path, owned: bool, say: Callable[[str], None]) -> Iterator[Path]:
    """The demo's data directory: removed afterwards when the demo made it, kept (and named) when
    the demo failed, so its nodes' logs can be read."""
    try:
        yield base
    except BaseException:
        say(f"the demo nodes' data and logs are in {base}")
        raise
    if owned:
        shutil.rmtree(base, ignore_errors=True)


class Processes:
    """The processes one demo run started; `close()` ends each by its PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def add(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.procs.append(proc)
        return proc

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, grace: float = 5.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class DemoNode:
    def __init__(self, processes: Processes, data_dir: Path, **settings: object) -> None:
        self.processes = processes
        self.data_dir = Path(data_dir)
        self.settings = BASE_SETTINGS | settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: JsonObject = {}
        self.log_path = self.data_dir / "node.log"

    def start(self, wait: bool = True, timeout: float = 20.0) -> "DemoNode":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "node.json").unlink(missing_ok=True)
        args = [sys.executable, "-m", "node.cli", "start", "--data-dir", str(self.data_dir)]
        for key, value in self.settings.items():
            if value is not None:
                args += [f"--{key.replace('_', '-')}", str(value)]
        env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS}   # only the flags configure it
        with open(self.log_path, "ab") as log:
            self.proc = self.processes.add(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                            stdin=subprocess.DEVNULL))
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        runtime = self.data_dir / "node.json"

        proc = self.proc
        assert proc is not None, "start() first"

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.data_dir.name} exited with {proc.returncode}: see {self.log_path}")
            info = json.loads(runtime.read_text()) if runtime.exists() else {}
            if info.get("pid") == proc.pid:
                self.info = info
                return True
            return False

        wait_for(ready, timeout, f"{self.data_dir.name} to start")

    @property
    def node_id(self) -> str:
        return cast("str", self.info["node_id"])

    @property
    def p2p_address(self) -> str:
        return cast("str", self.info["listen"])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def api(self, method: str, path: str, body: object = None, timeout: float = 10.0) -> Json:
        return call(self.info["api"], method, path, body, timeout=timeout, token=read_cookie(self.data_dir))[1]

    def get(self, path: str) -> Json:
        return self.api("GET", path)

    def post(self, path: str, body: object = None, timeout: float = 10.0) -> Json:
        return self.api("POST", path, body, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
