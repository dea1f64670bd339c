"""Node configuration: defaults < TOML file < environment < CLI values, validated into a frozen `Settings`."""
from config.errors import SettingsError
from config.loader import load_settings
from config.settings import Settings

__all__ = ["Settings", "SettingsError", "load_settings"]
