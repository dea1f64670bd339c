"""Rewrite the README's settings table in place from config.Settings (`python -m scripts.update_readme_settings`)."""
from __future__ import annotations

from pathlib import Path

from scripts.settings_table import render

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> None:
    text = README.read_text()
    start = text.index("| Environment | CLI flag | Default | What it does |")
    end = text.index("\n\n", start)
    README.write_text(text[:start] + render() + text[end:])


if __name__ == "__main__":
    main()
