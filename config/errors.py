"""SettingsError: one bad setting, named the way the operator wrote it, with the offending value."""
from __future__ import annotations


class SettingsError(ValueError):
    """A setting that cannot be used. `str()` reads e.g. ``invalid P2P_PORT='70000': must be an integer 0-65535``.

    `setting` is the name as given in its layer (ENV name, TOML key, or CLI key); `source` (optional) says
    where it came from when the name alone does not (the config file's path).
    """

    def __init__(self, setting: str, value: object, message: str, *, source: str | None = None) -> None:
        self.setting = setting
        self.value = value
        self.message = message
        self.source = source
        where = f" (in {source})" if source else ""
        super().__init__(f"invalid {setting}={value!r}{where}: {message}")
