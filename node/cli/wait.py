"""`exchange-node wait`: until a node answers and is ready on its chain (and, started with a join token, holds the
seat or standby place it asked for), for scripts after `exchange-node start ... &` such as the README's."""
from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

import click
import orjson

from node.cli.client import ApiFailure, JsonObject, NodeUnreachable, _reason, call
from node.locate import LocateError, NodeTarget, locate_node


def register(cli: click.Group) -> None:
    from node.cli.main import _TARGET_OPTIONS as TARGET_OPTIONS
    from node.cli.main import fail

    @cli.command("wait")
    @click.option("--timeout", type=click.FloatRange(0, 3600), default=60.0, show_default=True, metavar="SECONDS",
                  help="Give up after this long (exit 1).")
    @TARGET_OPTIONS[0]
    @TARGET_OPTIONS[1]
    @TARGET_OPTIONS[2]
    def wait(timeout: float, api: str | None, data_dir: str | None, token: str | None) -> None:
        """Wait until the node answers and is ready on its chain (and, started with a join token, holds its seat or
        standby place); exit 0, or 1 with what it still waits for. For scripts, after `start ... &`."""
        deadline = time.monotonic() + timeout
        seen: list[int] = []                    # pids of the node seen running: one gone since has stopped
        while True:
            try:
                done, detail = wait_step(api, data_dir, token, seen)
            except LocateError as exc:
                fail(str(exc), 2)
            except NodeGone as exc:
                fail(str(exc))
            if done:
                click.echo(f"ready: {detail}")
                return
            if time.monotonic() >= deadline:
                fail(f"not ready after {timeout:g}s: {detail}")
            time.sleep(0.2)


class NodeGone(Exception):
    """The node `wait` saw running has stopped."""


def wait_step(api: str | None, data_dir: str | None, token: str | None, seen: list[int]) -> tuple[bool, str]:
    """One look at the node: (ready, what it is or what it waits for); NodeGone once a node seen running stopped."""
    target = locate_node(api, data_dir, token)
    pinned = api or os.environ.get("EXCHANGE_NODE_API")
    runtime = target.data_dir / "node.json"
    if not pinned and (data_dir or os.environ.get("DATA_DIR")):     # a node named by its directory: wait for it there
        try:
            pid = int(orjson.loads(runtime.read_bytes())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            if seen:
                raise NodeGone(f"the node of {target.data_dir} (pid {seen[-1]}) stopped; its log says why") from None
            return False, f"no node has started from {target.data_dir} yet (no {runtime.name})"
        if not _running(pid):
            if pid in seen:
                raise NodeGone(f"the node of {target.data_dir} (pid {pid}) stopped; its log says why")
            return False, f"the node that wrote {runtime} (pid {pid}) is not running"
        if pid not in seen:
            seen.append(pid)
    try:
        ready = _readiness(target)
        if not ready.get("ready"):
            failing = [c for c in ready.get("checks", []) if not c.get("ok")]
            return False, "; ".join(f"{c.get('name')}: {c.get('detail')}" for c in failing) or "not ready"
        status = call(target.url, "GET", "/status", timeout=5, token=target.token)[1]
        started_with_token = str(status.get("trust") or "").lower() == "join_token"     # JOIN_TOKEN or join_token
        if started_with_token and status.get("role") != "validator":
            try:
                seats = call(target.url, "GET", "/validators", timeout=5, token=target.token)[1]
            except ApiFailure as exc:
                if exc.status == 401:       # no token for the private view: the chain is enough
                    return True, f"{status.get('role')} at height {status.get('height')}"
                raise
            if status["node_id"] not in {s["node_id"] for s in seats.get("standby", [])}:
                return False, f"following the chain at height {status.get('height')}; the seat its join token asks " \
                              f"for is not granted yet"
            return True, f"standby at height {status.get('height')} (approved, waiting for a seat)"
        return True, f"{status.get('role')} at height {status.get('height')}"
    except NodeUnreachable as exc:
        return False, f"{exc.reason} at {target.address}"
    except (ApiFailure, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        return False, f"unexpected answer from {target.address}: {exc}"


def _readiness(target: NodeTarget) -> JsonObject:
    """GET /ready's checks, whether it answers 200 (ready) or 503 (not yet)."""
    try:
        with urllib.request.urlopen(target.url + "/ready", timeout=5) as answer:
            body = orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise ApiFailure(exc.code, {"code": "http_error", "message": f"HTTP {exc.code} from /ready"}) from None
        body = orjson.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        raise NodeUnreachable(_reason(exc, 5)) from None
    except orjson.JSONDecodeError:
        raise ApiFailure(200, {"code": "not_json", "message": "/ready is not JSON"}) from None
    return body if isinstance(body, dict) else {}


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
