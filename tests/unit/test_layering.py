"""The package layering docs/architecture.md states, checked over every import of the source tree (as
zeroconf checks for circular imports): a layer imports only the layers below it, production code never
imports demo code or a test double, and the sans-I/O parts (the chain's, the DHT's) import nothing that
does I/O."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"config", "storage", "exchange", "p2p", "node", "tests", "bench", "clients"}

# layer -> the layers of ours it may import (besides itself)
ALLOWED = {
    "config": set(),
    "storage": set(),
    "exchange": set(),                          # the domain: orders, books, matching; signatures
    "exchange.app": {"exchange"},               # the exchange application the chain's blocks drive
    "exchange.chain": {"exchange", "exchange.app", "storage"},
    "p2p": {"config"},
    "node": {"config", "storage", "exchange", "exchange.app", "exchange.chain", "p2p"},
}
# the chain's and the DHT's deciding parts: no asyncio, no sockets, no files (their drivers do the I/O)
SANS_IO = ["exchange/chain/core.py", "exchange/chain/config.py", "exchange/chain/recovery/rules.py",
           "exchange/chain/consensus/block_check.py",
           "exchange/chain/consensus/block_builder.py", "exchange/chain/sync/blocksync.py", "exchange/chain/mempool/intake.py",
           "exchange/chain/seats/seat_requests.py", "exchange/chain/recovery/halt.py", "exchange/chain/consensus/tendermint.py",
           "exchange/chain/effects.py", "exchange/chain/mempool/pool.py", "exchange/chain/seats/seat_admin.py",
           "p2p/dht/ids.py", "p2p/dht/records.py", "p2p/dht/table.py", "p2p/dht/lookup.py"]
IO_MODULES = {"asyncio", "socket", "os", "aiohttp", "pathlib", "shutil", "subprocess"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


def _layer(module: str) -> str:
    for layer in ("exchange.chain", "exchange.app"):
        if module == layer or module.startswith(layer + "."):
            return layer
    return module.split(".")[0]


def _production_files() -> list[Path]:
    return [p for package in ("config", "storage", "exchange", "p2p", "node") for p in (ROOT / package).rglob("*.py")]


def test_every_layer_imports_only_the_layers_below_it():
    wrong = []
    for path in _production_files():
        layer = _layer(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for module in _imports(path):
            target = _layer(module)
            if target in OURS and target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports {module} ({layer} may import "
                             f"{sorted(ALLOWED[layer]) or 'nothing of ours'})")
    assert not wrong, "\n".join(wrong)


def test_production_code_imports_no_demo_and_no_test_double():
    wrong = [f"{path.relative_to(ROOT)} imports {module}" for path in _production_files()
             if "demo" not in path.parts
             for module in _imports(path) if module.startswith(("node.demo", "tests"))]
    assert not wrong, "\n".join(wrong)


def test_the_parts_that_decide_do_no_io():
    wrong = [f"{name} imports {module}" for name in SANS_IO for module in _imports(ROOT / name)
             if module.split(".")[0] in IO_MODULES]
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_the_whole_tree():
    """A rename that empties a layer would make the checks above pass vacuously."""
    files = _production_files()
    assert len(files) > 150
    assert {_layer(".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in files} == set(ALLOWED)


def test_the_api_and_the_cli_stay_apart():
    """node/ is split by concern: the control API never reaches into the command line, and the command
    line reaches a running node only over its API (main.py's `start` alone builds a node)."""
    wrong = [f"{path.relative_to(ROOT)} imports {module}" for path in (ROOT / "node" / "api").rglob("*.py")
             for module in _imports(path) if module.startswith("node.cli")]
    wrong += [f"{path.relative_to(ROOT)} imports {module}" for path in (ROOT / "node" / "cli").rglob("*.py")
              if path.name != "main.py"
              for module in _imports(path) if module.startswith(("node.app", "node.api"))]
    assert not wrong, "\n".join(wrong)


CHAIN_FLOORS = 15     # the longest import chain inside exchange/chain may not grow past this


def _chain_imports() -> dict[str, set[str]]:
    """exchange/chain's modules -> the modules of the chain each imports, type-only and function-local imports
    included (a circle through them still ties the modules together for a reader and for mypy)."""
    modules = {}
    for path in (ROOT / "exchange" / "chain").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.relative_to(ROOT)}: the chain imports absolutely"
                assert node.module
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, as the path around it, or None."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def _floors(graph: dict[str, set[str]]) -> int:
    """The longest import chain (in modules) of an acyclic graph."""
    memo: dict[str, int] = {}

    def floor(module: str) -> int:
        if module not in memo:
            memo[module] = 1 + max((floor(t) for t in graph[module]), default=0)
        return memo[module]

    return max(floor(m) for m in graph)


def test_the_chain_has_no_import_circle():
    circle = _circle(_chain_imports())
    assert circle is None, "an import circle in exchange/chain: " + " -> ".join(circle or [])


def test_the_circle_check_finds_a_circle():
    """The check above on a graph with a circle in it, so it cannot pass by finding none anywhere."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circle(graph) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set()}) is None
    assert _floors({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) == 3


def test_the_chain_stands_on_few_floors():
    graph = _chain_imports()
    assert len(graph) > 50
    assert _floors(graph) <= CHAIN_FLOORS


def test_the_chain_is_packages_by_concern():
    """Every module of the chain but its coordinator and seams sits in the package of its concern."""
    top = sorted(p.stem for p in (ROOT / "exchange" / "chain").glob("*.py") if p.stem != "__init__")
    assert top == ["api_door", "api_ports", "boot", "config", "core", "effects", "ports", "service", "ticker"]


def test_a_module_over_500_lines_says_why_at_its_top():
    """Small modules with one job each; a longer one carries its reason in its docstring."""
    wrong = []
    for path in _production_files():
        text = path.read_text()
        if text.count("\n") > 520:
            tree = ast.parse(text)
            doc = ast.get_docstring(tree) or ""
            if "Over 500 lines on purpose" not in doc:
                wrong.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines and no reason at its top")
    assert not wrong, "\n".join(wrong)
