"""The README documents every setting, with the table generated from config.Settings."""
from pathlib import Path

from scripts.settings_table import render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_current():
    text = README.read_text()
    assert render() in text, "README settings table is stale: run `python -m scripts.update_readme_settings`"


def test_readme_quick_start_is_two_commands():
    text = README.read_text()
    assert "make run" in text and "make test" in text
