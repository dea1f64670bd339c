"""Value parsers for settings: each turns a raw value (a string from the environment, or a native TOML/CLI
value) into the typed value, or raises `InvalidValue` with a "must be ..." message."""
from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

# A setting's value as the operator gave it, before its parser checks it: a string from the environment, or
# whatever TOML or the CLI produced (str, int, bool, list ...). Each parser narrows it with isinstance itself.
RawValue = Any
# A raw value to its typed value; what the typed value is depends on the parser (int, str, tuple ...), and the
# Settings field the parser belongs to declares it.
Parser = Callable[[RawValue], Any]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_UNSET = object()


def metavar(parser: Parser) -> str:
    """The placeholder `--help` shows for a value of this parser (N, HOST, PATH, true|false ...)."""
    return getattr(parser, "metavar", "VALUE")


def _shown_as(name: str, parser: Parser) -> Parser:
    parser.metavar = name  # type: ignore[attr-defined]  # an attribute of the function, which Callable does not declare
    return parser


class InvalidValue(ValueError):
    """Raised by a parser; `value` overrides the reported value (e.g. the one bad entry of a list)."""

    def __init__(self, message: str, value: object = _UNSET) -> None:
        super().__init__(message)
        self.value = value

    def reported_value(self, raw: object) -> object:
        """The value to name in the error: the override if given, else the whole raw value."""
        return raw if self.value is _UNSET else self.value


def boolean(raw: RawValue) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise InvalidValue("must be a boolean (1/0, true/false, yes/no, on/off)")


_shown_as("true|false", boolean)


def integer(low: int, high: int | None = None) -> Parser:
    expected = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"

    def parse(raw: RawValue) -> int:
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str):
            try:
                value = int(raw.strip(), 10)
            except ValueError:
                value = None
        if value is None or value < low or (high is not None and value > high):
            raise InvalidValue(f"must be {expected}")
        return value

    return _shown_as("N", parse)


def number(*, above: float = 0.0, at_most: float | None = None) -> Parser:
    """A finite float strictly greater than `above` (and not over `at_most`, if given)."""

    def parse(raw: RawValue) -> float:
        value: float | None = None
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                value = None
        if value is None or not math.isfinite(value) or value <= above:
            raise InvalidValue(f"must be a number > {above:g}" + (f" and <= {at_most:g}" if at_most is not None else ""))
        if at_most is not None and value > at_most:
            raise InvalidValue(f"must be a number <= {at_most:g}")
        return value

    return _shown_as("NUMBER", parse)


def choice(*options: str) -> Parser:
    """Case-insensitive; returns the option as spelled in `options`."""
    by_key = {option.lower(): option for option in options}

    def parse(raw: RawValue) -> str:
        if isinstance(raw, str) and raw.strip().lower() in by_key:
            return by_key[raw.strip().lower()]
        raise InvalidValue(f"must be one of {', '.join(options)}")

    return _shown_as("|".join(options), parse)


def text(*, max_len: int | None = None, pattern: str | None = None, what: str = "a non-empty string") -> Parser:
    compiled = re.compile(pattern) if pattern else None

    def parse(raw: RawValue) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise InvalidValue(f"must be {what}")
        value = raw.strip()
        if (max_len is not None and len(value) > max_len) or (compiled and not compiled.fullmatch(value)):
            raise InvalidValue(f"must be {what}")
        return value

    return _shown_as("TEXT", parse)


def host(raw: RawValue) -> str:
    """An IP address (IPv6 with or without brackets) or a DNS name; returned without brackets."""
    if isinstance(raw, str):
        value = raw.strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        if _is_host(value):
            return value
    raise InvalidValue("must be an IP address or host name")


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    if not value or len(value) > 253 or ":" in value:
        return False
    return all(_HOSTNAME_LABEL.match(label) for label in value.rstrip(".").split("."))


def is_loopback(name: str) -> bool:
    """True for `localhost` and addresses in 127.0.0.0/8 or ::1 (IPv4-mapped included): reachable only from
    this machine."""
    name = name.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def secret(*, min_len: int, max_len: int = 256) -> Parser:
    """A token of visible ASCII without spaces (it travels in an HTTP header). Errors never echo the value."""
    pattern = re.compile(rf"[\x21-\x7e]{{{min_len},{max_len}}}")

    def parse(raw: RawValue) -> str:
        if isinstance(raw, str) and pattern.fullmatch(raw.strip()):
            return raw.strip()
        raise InvalidValue(f"must be {min_len}-{max_len} visible ASCII characters without spaces",
                           value="(hidden)")

    return _shown_as("TOKEN", parse)


def host_port(raw: RawValue) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (or a ready ``(host, port)`` pair) with a port 1-65535."""
    bad = InvalidValue("must be host:port with a port 1-65535 (IPv6 as [::1]:7946)", value=raw)
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        name, port_raw = raw
    elif isinstance(raw, str):
        entry = raw.strip()
        if entry.startswith("["):
            name, sep, port_raw = entry[1:].partition("]:")
        else:
            name, sep, port_raw = entry.rpartition(":")
            if ":" in name:  # unbracketed IPv6: ambiguous
                raise bad
        if not sep:
            raise bad
    else:
        raise bad
    try:
        return host(name), integer(1, 65535)(port_raw)
    except InvalidValue:
        raise bad from None


def ip_address(raw: RawValue) -> str:
    try:
        return str(ipaddress.ip_address(raw.strip() if isinstance(raw, str) else raw))
    except ValueError:
        raise InvalidValue("must be an IP address", value=raw) from None


def ip_network(raw: RawValue) -> str:
    """A CIDR network (an address alone is its own /32 or /128)."""
    try:
        return str(ipaddress.ip_network(raw.strip() if isinstance(raw, str) else raw, strict=False))
    except (ValueError, TypeError):
        raise InvalidValue("must be an IP network such as 10.0.0.0/8 or ::1/128", value=raw) from None


def http_url(raw: RawValue) -> str:
    bad = InvalidValue("must be an http:// or https:// URL with a host", value=raw)
    if not isinstance(raw, str):
        raise bad
    value = raw.strip().rstrip("/")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    return value


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(*, at_most: float) -> Parser:
    """A time span: seconds as a number, or a number with a unit, `90s`, `30m`, `24h`, `7d`; more than 0 and
    at most `at_most` seconds."""

    def parse(raw: RawValue) -> float:
        seconds: float | None = None
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            seconds = float(raw)
        elif isinstance(raw, str) and (match := _DURATION.match(raw.strip().lower())):
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds is None or not math.isfinite(seconds) or not 0 < seconds <= at_most:
            raise InvalidValue(f"must be a duration such as 90s, 30m, 24h or 7d (or seconds), more than 0 and at "
                               f"most {at_most / 86400:g}d")
        return seconds

    return _shown_as("DURATION", parse)


def join_token(raw: RawValue) -> str | None:
    """A join token, `exn1-<64 hex: chain id>-<64 hex: secret>`, or None (unset). Blank is refused, not read as
    unset (a `JOIN_TOKEN="$(cat missing-file)"` would otherwise start a node with no token, without a word);
    errors never echo the value, a secret."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidValue("is empty: give a join token, exn1-<64 hex: chain id>-<64 hex: secret> (a validator's "
                           "`exchange-node validators token new` prints one), or leave the setting out",
                           value="")
    if not re.fullmatch(r"exn1-[0-9a-f]{64}-[0-9a-f]{64}", raw.strip()):
        raise InvalidValue("is not a join token: expected exn1-<64 hex: chain id>-<64 hex: secret> (a validator's "
                           "`exchange-node validators token new` prints one)", value="(hidden)")
    return raw.strip()


_shown_as("TOKEN", join_token)


def path(raw: RawValue) -> Path:
    if isinstance(raw, str):
        raw = raw.strip()
    if isinstance(raw, Path) or (isinstance(raw, str) and raw):
        return Path(raw).expanduser()
    raise InvalidValue("must be a non-empty path")


def optional(parser: Parser) -> Parser:
    """None or an empty/blank string mean "unset" (None); anything else goes to `parser`."""

    def parse(raw: RawValue) -> Any:  # Any: what `parser` gives, or None
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        return parser(raw)

    return _shown_as(metavar(parser), parse)


def listed(item: Parser) -> Parser:
    """A comma-separated string or a list of items -> a de-duplicated tuple; blank items are skipped."""

    def parse(raw: RawValue) -> tuple[Any, ...]:  # Any: what `item` gives for each entry
        if isinstance(raw, str):
            items = raw.split(",")
        elif isinstance(raw, (list, tuple)):
            items = list(raw)
        else:
            raise InvalidValue("must be a comma-separated string or a list")
        parsed = [item(x) for x in items if not (isinstance(x, str) and not x.strip())]
        return tuple(dict.fromkeys(parsed))

    return _shown_as("LIST", parse)


for _parser, _name in ((host, "HOST"), (host_port, "HOST:PORT"), (ip_address, "IP"), (http_url, "URL"), (path, "PATH")):
    _shown_as(_name, _parser)
