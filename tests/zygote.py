"""Node processes forked from an interpreter that has already imported the node, for the suite's speed.

Every `exchange-node start` spends most of its first half second of CPU importing the package and its libraries
(aiohttp, cryptography, zeroconf, prometheus-client). The real-process tier starts some hundreds of nodes, so
`NodeProcess.start` asks this module instead: a few zygotes per test process (each with its own hash seed) have
imported `node.cli.main` and `node.app` once, and for each node one of them forks a child that takes the node's
argv, environment, working directory and log file, then runs `python -m node.cli` exactly as a spawned node
would (`runpy`, `__main__`). The child is a process of its own with its own PID, sockets, data directory and
exit status; signals, `kill -9` and exit codes behave as for a spawned one. When the test process ends, the
zygote kills the nodes it forked that are still running (a run interrupted before its teardown leaves none).

The zygote forks twice so that the node's parent is the test process (a child subreaper, `prctl`), which can
then wait for it and read its exit status like any `Popen` child. Nodes whose command or environment the
zygote cannot reproduce (a command other than `python -m MODULE`, a node in a test's network namespace,
`LD_PRELOAD`) are spawned as before; a patched node (`python -m tests.integration.faulty_node`, ...) runs its own
module; `EXCHANGE_TEST_SPAWN=exec` spawns every node (to compare).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

PR_SET_CHILD_SUBREAPER = 36
HASH_SEEDS = 3          # zygotes per test process, each with its own PYTHONHASHSEED (see Zygote)
# what the zygote imports before it forks: what `exchange-node start` imports before its event loop runs
PRELOAD = ("node.cli.main", "node.app")


def usable(env: Mapping[str, str]) -> bool:
    """Whether a node with this environment can be forked: not when asked not to, nor when a library must be
    preloaded (a faked clock)."""
    return os.environ.get("EXCHANGE_TEST_SPAWN", "zygote") != "exec" and "LD_PRELOAD" not in env


def forkable(command: Sequence[str]) -> list[str] | None:
    """The argv of a command the zygote can reproduce (`python -m MODULE ...`), or None. A node in a test's
    network namespace (`ip netns exec NAME ...`) is spawned: with such nodes forked into their namespace
    (setns), a NAT traversal test's hole punching failed once in a full run, cause not found, so they are not."""
    argv = list(command)
    return argv if argv[:2] == [sys.executable, "-m"] and len(argv) > 2 else None


class Zygote:
    """The test process's side: starts its zygotes when first needed, asks them for nodes in turn, gets `Popen`
    objects back. Every node forked from one zygote shares its string hash seed, so there are several, each
    with a seed of its own: the nodes of one test iterate their sets and dicts of strings in different orders, as
    spawned nodes do, and a rule that depended on that order would still split them."""

    def __init__(self, root: Path, seeds: int = HASH_SEEDS) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._processes: list[subprocess.Popen | None] = [None] * seeds
        self._turn = 0

    def _started(self, index: int) -> subprocess.Popen:
        process = self._processes[index]
        if process is None or process.poll() is not None:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
            seed = str(random.SystemRandom().randrange(1, 2 ** 32))
            process = self._processes[index] = subprocess.Popen(
                [sys.executable, "-m", "tests.zygote"], cwd=self.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": seed})
        return process

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: IO[bytes]) -> subprocess.Popen:
        """The node `argv` (`python -m MODULE ...`) would start."""
        with self._lock:
            self._turn = (self._turn + 1) % len(self._processes)
            process = self._started(self._turn)
            assert process.stdin is not None and process.stdout is not None
            request = {"argv": list(argv), "env": dict(env), "cwd": str(cwd), "log": log.name}
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.flush()
            answer = process.stdout.readline()
        if not answer:
            raise RuntimeError("the node zygote exited")
        return adopted(int(json.loads(answer)["pid"]), list(argv))

    def close(self) -> None:
        for process in self._processes:
            if process is not None and process.poll() is None:
                assert process.stdin is not None
                process.stdin.close()
                process.wait(5)


def adopted(pid: int, argv: list[str]) -> subprocess.Popen:
    """A `Popen` for a process this one adopted as subreaper: `poll`, `wait`, `send_signal`, `terminate`, `kill`
    and `returncode` work as for a child it spawned (they only need the PID and `waitpid`)."""
    process: subprocess.Popen = subprocess.Popen.__new__(subprocess.Popen)
    process.args = argv
    process.pid = pid
    process.returncode = None
    process.stdin = process.stdout = process.stderr = None
    process.text_mode = False                        # type: ignore[attr-defined]
    process._waitpid_lock = threading.Lock()         # type: ignore[attr-defined]  # Popen's own private state
    process._sigint_wait_secs = 0.25                 # type: ignore[attr-defined]
    process._closed_child_pipe_fds = True            # type: ignore[attr-defined]
    process._child_created = True                    # type: ignore[attr-defined]
    process._communication_started = False           # type: ignore[attr-defined]
    process._input = None                            # type: ignore[attr-defined]
    return process


def _run_node(request: dict[str, Any]) -> None:
    """In the node's process: become the node `request` describes, then run the command line; never returns."""
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdin = open(0, closefd=False)      # not the zygote's buffered requests
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    module = argv[argv.index("-m") + 1]
    sys.argv = [module, *argv[argv.index("-m") + 2:]]
    import runpy
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    raise SystemExit(0)


def serve() -> None:
    """The zygote: import the node once, then fork one node per request line, answering each with its PID."""
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    forked: list[tuple[int, int | None]] = []
    for line in sys.stdin.buffer:
        request = json.loads(line)
        sys.stdout.flush()
        read_end, write_end = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.close(read_end)
            node = os.fork()
            if node == 0:
                os.close(write_end)
                _run_node(request)
            os.write(write_end, str(node).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pid_pipe:
            node_pid = int(pid_pipe.read())
        while True:
            try:
                os.waitpid(middle, 0)
                break
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ECHILD:
                    break
                raise
        forked.append((node_pid, _start_time(node_pid)))
        sys.stdout.write(json.dumps({"pid": node_pid}) + "\n")
        sys.stdout.flush()
    # the test process has gone (its end closes our stdin): a node it left running, because it was interrupted
    # before its teardown, would run on with nobody to stop it
    for pid, started in forked:
        if started is not None and _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): tells the node apart from a later process given its PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


if __name__ == "__main__":
    serve()
