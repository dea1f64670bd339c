"""load_settings: defaults < TOML file < environment < CLI values, each layer validated as it is read."""
from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

from config.errors import SettingsError
from config.parsers import InvalidValue, RawValue, is_loopback
from config.settings import Settings, default_data_dir


def load_settings(*, cli: Mapping[str, RawValue] | None = None, env: Mapping[str, str] | None = None,
                  config_file: str | Path | None = None) -> Settings:
    """Build validated `Settings`.

    `env` defaults to `os.environ`; `cli` maps field names to values, `None` meaning "not given";
    `config_file` is a TOML file whose keys are field names. Raises `SettingsError` naming the setting
    (as spelled in its layer) and the bad value.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_read_toml(Path(config_file)))
    for name, env_name in Settings.env_names().items():
        if env_name in env:
            values[name] = _parse(name, env[env_name], label=env_name)
    for name, raw in (cli or {}).items():
        if raw is not None:
            values[name] = _parse(name, raw, label=name)
    values.setdefault("data_dir", default_data_dir(env))
    return _reconcile(Settings(**values))


def _parse(name: str, raw: RawValue, *, label: str, source: str | None = None) -> Any:
    try:
        parse = Settings.parser_for(name)
    except KeyError:
        close = difflib.get_close_matches(name, Settings.env_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SettingsError(label, raw, f"unknown setting{hint}", source=source) from None
    try:
        return parse(raw)
    except InvalidValue as exc:
        raise SettingsError(label, exc.reported_value(raw), str(exc), source=source) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError("config_file", str(path), f"cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError("config_file", str(path), f"not valid TOML: {exc}") from None
    return {key: _parse(key, raw, label=key, source=str(path)) for key, raw in document.items()}


def _reconcile(settings: Settings) -> Settings:
    """Checks and caps that involve more than one setting."""
    if settings.discovery_grenache and not settings.grape_urls:
        raise SettingsError("GRAPE_URL", "", "at least one URL is needed when DISCOVERY_GRENACHE is on")
    if settings.api_token is None and not is_loopback(settings.api_host):
        raise SettingsError("API_HOST", settings.api_host,
                            "the control API would be reachable beyond this machine without a token: set API_TOKEN "
                            "(--api-token, 16+ characters) or bind API_HOST to 127.0.0.1 or ::1")
    return dataclasses.replace(
        settings,
        target_outbound=min(settings.target_outbound, settings.max_peers),
        send_buffer_bytes=max(settings.send_buffer_bytes, settings.max_frame_bytes),
    )
