"""Where the CLI finds the node it talks to, and the token it sends, with no flags in the common case.

The API address, first found wins: `--api`, `EXCHANGE_NODE_API`, the `api` URL the running node wrote
to DATA_DIR/node.json, then `http://API_HOST:API_PORT` (defaults 127.0.0.1:7947). DATA_DIR comes from
`--data-dir`, the `DATA_DIR` environment variable, or the default. The token: `--token`,
`EXCHANGE_NODE_TOKEN`, else the node's cookie in DATA_DIR/.cookie, which is only ever sent to a
loopback address (it grants the local node's API; a remote one has its own API_TOKEN).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, cast
from urllib.parse import urlsplit

import orjson

from config import Settings
from config.parsers import InvalidValue, is_loopback
from config.parsers import host as parse_host
from config.settings import default_data_dir
from node.cookie import cookie_path, read_cookie

DEFAULT_API_HOST = "127.0.0.1"
_TOKEN = re.compile(r"[\x21-\x7e]{1,1024}")
_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class LocateError(ValueError):
    """A user-supplied address or setting the CLI cannot use; the message names it (exit 2)."""


@dataclass(frozen=True)
class NodeTarget:
    """A node's API as the CLI will call it, with where each part came from (for error messages)."""

    url: str
    source: str
    token: str | None
    token_source: str | None
    data_dir: Path

    @property
    def address(self) -> str:
        """`host:port` of the URL (what "connection refused at ..." names)."""
        parts = urlsplit(self.url)
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        return f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def normalize_api_url(raw: str, label: str) -> str:
    """`http(s)://host[:port]` or `host:port` (IPv6 as `[::1]:7947`) -> a base URL without a trailing slash.
    0.0.0.0 and :: (where a node binds, not an address to dial) become the loopback address."""
    value = raw.strip() if isinstance(raw, str) else ""
    expected = "expected http://HOST:PORT or HOST:PORT, e.g. 127.0.0.1:7947"
    if "://" not in value:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or (":" in host and not host.startswith("[")):
            raise LocateError(f"invalid {label} {raw!r}: {expected}")
        value = f"http://{value}"
    try:
        parts = urlsplit(value)
        url_port = parts.port
    except ValueError:
        raise LocateError(f"invalid {label} {raw!r}: bad port; {expected}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LocateError(f"invalid {label} {raw!r}: {expected}")
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username or parts.password:
        raise LocateError(f"invalid {label} {raw!r}: give only the scheme, host and port; {expected}")
    try:
        host = parse_host(parts.hostname)
    except InvalidValue:
        raise LocateError(f"invalid {label} {raw!r}: {parts.hostname!r} is not a host name or IP address") from None
    return _base_url(parts.scheme, host, url_port)


def _base_url(scheme: str, host: str, port: int | None) -> str:
    host = _UNSPECIFIED.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + (f":{port}" if port is not None else "")


def resolve_data_dir(flag: str | None, env: Mapping[str, str]) -> Path:
    raw = flag if flag else env.get("DATA_DIR")
    if not raw:
        return default_data_dir(env)
    try:
        return cast("Path", Settings.parser_for("data_dir")(raw))
    except InvalidValue as exc:
        raise LocateError(f"invalid {'--data-dir' if flag else 'DATA_DIR'} {raw!r}: {exc}") from None


def locate_node(api: str | None = None, data_dir: str | None = None, token: str | None = None,
                env: Mapping[str, str] | None = None) -> NodeTarget:
    """The node the CLI should call; LocateError for a bad `--api`/`EXCHANGE_NODE_API`/`API_PORT`."""
    env = os.environ if env is None else env
    directory = resolve_data_dir(data_dir, env)
    if api:
        url, source = normalize_api_url(api, "--api"), "--api"
    elif env.get("EXCHANGE_NODE_API"):
        url, source = normalize_api_url(env["EXCHANGE_NODE_API"], "EXCHANGE_NODE_API"), "EXCHANGE_NODE_API"
    else:
        url, source = _from_runtime_file(directory) or _from_settings_env(env)
    chosen, token_source = _token(url, directory, token, env)
    return NodeTarget(url, source, chosen, token_source, directory)


def _from_runtime_file(directory: Path) -> tuple[str, str] | None:
    path = directory / "node.json"
    try:
        info: Any = orjson.loads(path.read_bytes())
        url = normalize_api_url(_bracket_ipv6(info["api"]), str(path))
        return url, f"{path}, written by the node with pid {info.get('pid')}"
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError, LocateError):
        return None   # absent or unreadable: the node is not running from this DATA_DIR, try the defaults


def _bracket_ipv6(url: str) -> str:
    """`http://::1:7947` (an IPv6 bind address written without brackets) -> `http://[::1]:7947`."""
    scheme, sep, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    return f"{scheme}://[{host}]:{port}" if sep and host.count(":") >= 2 and not host.startswith("[") else url


def _from_settings_env(env: Mapping[str, str]) -> tuple[str, str]:
    values = {}
    for name, default in (("api_host", DEFAULT_API_HOST), ("api_port", "7947")):
        env_name = Settings.env_names()[name]
        try:
            values[name] = Settings.parser_for(name)(env.get(env_name) or default)
        except InvalidValue as exc:
            raise LocateError(f"invalid {env_name}={env.get(env_name)!r}: {exc}") from None
    return _base_url("http", values["api_host"], values["api_port"]), "API_HOST/API_PORT (no node.json in DATA_DIR)"


def _token(url: str, directory: Path, flag: str | None, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    for value, label in ((flag, "--token"), (env.get("EXCHANGE_NODE_TOKEN"), "EXCHANGE_NODE_TOKEN")):
        if value:
            if not _TOKEN.fullmatch(value):
                raise LocateError(f"invalid {label}: a token is visible ASCII characters without spaces")
            return value, label
    if not is_loopback(urlsplit(url).hostname or ""):
        return None, None
    cookie = read_cookie(directory)
    return (cookie, str(cookie_path(directory))) if cookie else (None, None)
