"""docs/configuration.md, generated from config.Settings (the one source of truth).

`python -m scripts.settings_table` rewrites the file; `python -m scripts.settings_table --print` prints it.
tests/unit/test_docs.py fails when the file differs from what this renders.
"""
from __future__ import annotations

import sys
from pathlib import Path

from config.settings import Settings

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

HEADER = """# Configuration reference

<!-- Generated from config.Settings by `python -m scripts.settings_table`: edit the settings' help there, not here. -->

Every setting of `exchange-node start`. Precedence: built-in defaults < TOML file (`--config FILE`, keys are
the lower-case names) < environment < CLI flags. An invalid value (port 70000, `MAX_PEERS=abc`, a bad
`host:port` in `BOOTSTRAP_PEERS`) stops start-up with exit code 2 and a message naming the setting and the
value. Booleans take `true/false/1/0/yes/no/on/off`. `exchange-node start --help` prints the same list.
"""


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


def document() -> str:
    return f"{HEADER}\n{render()}\n"


if __name__ == "__main__":
    if "--print" in sys.argv[1:]:
        print(document(), end="")
    else:
        REFERENCE.write_text(document())
