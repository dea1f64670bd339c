"""Print the README's settings table from config.Settings (the one source of truth)."""
from __future__ import annotations

from pathlib import Path

from config.settings import Settings


def render() -> str:
    rows = ["| Environment | CLI flag | Default | What it does |", "|---|---|---|---|"]
    for info in Settings.describe():
        default = info.default
        if isinstance(default, Path) or info.name == "data_dir":
            default = "~/.local/share/exchange-node"
        elif isinstance(default, tuple):
            default = ",".join(str(d) for d in default) or "(empty)"
        elif default is None:
            default = "(unset)"
        rows.append(f"| `{info.env}` | `--{info.name.replace('_', '-')}` | `{default}` | {info.help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(render())
