"""Every `Any` a caller of ours can see is a decision with its reason written beside it.

A seam is what another module reaches: the signature of a public function or method, an attribute
declared on a class or a module, a Protocol's members. There `Any` is allowed only
- inside a named alias defined at module level (`Json = dict[str, Any]`) with a comment just above it or on
  its line saying why the value has no static type (a msgpack or JSON value its schema checks, ...), so
  the decision is written once and every seam that uses it carries it by name; or
- on a line that says why itself, with a comment starting `# Any:`.
Bodies of functions and private helpers (a leading underscore) are not seams and are not checked.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "storage", "exchange", "p2p", "node", "clients/python/exchange_node_client")


def _files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _is_any(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "Any") or (isinstance(node, ast.Attribute) and node.attr == "Any")


def _any_lines(annotation: ast.AST | None) -> set[int]:
    if annotation is None:
        return set()
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):      # a quoted annotation
        try:
            inner = ast.parse(annotation.value, mode="eval")
        except SyntaxError:
            return set()
        return {annotation.lineno} if any(_is_any(n) for n in ast.walk(inner)) else set()
    return {n.lineno for n in ast.walk(annotation) if isinstance(n, (ast.Name, ast.Attribute)) and _is_any(n)}


def _public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _signature_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[int]:
    args = function.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    lines = set().union(*(_any_lines(a.annotation) for a in every if a is not None))
    return lines | _any_lines(function.returns)


def _alias_comment(lines: list[str], statement: ast.stmt) -> bool:
    """A module-level alias says why: a comment on its first line or just above it."""
    first = lines[statement.lineno - 1]
    above = lines[statement.lineno - 2].strip() if statement.lineno >= 2 else ""
    return "#" in first or above.startswith("#")


def _seam_lines(tree: ast.Module, lines: list[str]) -> tuple[set[int], set[int]]:
    """(lines where Any sits at a seam, lines of aliases defined with their reason)."""
    seams: set[int] = set()
    aliases: set[int] = set()

    def visit_class(cls: ast.ClassDef) -> None:
        for item in cls.body:
            if isinstance(item, ast.AnnAssign) and not (isinstance(item.target, ast.Name)
                                                        and not _public(item.target.id)):
                seams.update(_any_lines(item.annotation))
            elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(item.name):
                seams.update(_signature_lines(item))
            elif isinstance(item, ast.ClassDef) and _public(item.name):
                visit_class(item)

    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(statement.name):
            seams.update(_signature_lines(statement))
        elif isinstance(statement, ast.ClassDef) and _public(statement.name):
            visit_class(statement)
        elif isinstance(statement, ast.AnnAssign):
            annotated = _any_lines(statement.annotation)
            is_alias = isinstance(statement.annotation, ast.Name) and statement.annotation.id == "TypeAlias"
            value = _any_lines(statement.value)
            if is_alias and value and _alias_comment(lines, statement):
                aliases.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
            else:
                seams.update(annotated | value if is_alias else annotated)
        elif isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                and isinstance(statement.targets[0], ast.Name):
            value = _any_lines(statement.value)
            if value and _alias_comment(lines, statement):
                aliases.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
            else:
                seams.update(value)
    return seams - aliases, aliases


def _undecided(path: Path, shown_as: str) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    seams, _ = _seam_lines(ast.parse(source, filename=str(path)), lines)
    return [f"{shown_as}:{n}: {lines[n - 1].strip()}" for n in sorted(seams) if "# Any:" not in lines[n - 1]]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_any_at_a_seam_says_why(package: str) -> None:
    undecided = [line for path in _files() if str(path.relative_to(ROOT)).startswith(package + "/")
                 for line in _undecided(path, str(path.relative_to(ROOT)))]
    assert not undecided, (f"{len(undecided)} `Any` at a seam without a reason: use a real type, a named alias "
                           f"with a comment saying why, or `# Any: why` on the line\n" + "\n".join(undecided))


def test_the_check_finds_an_undecided_any_and_accepts_a_decided_one(tmp_path: Path) -> None:
    source = ("from typing import Any\n"
              "# a msgpack value: its schema checks it\n"
              "Wire = list[Any]\n"
              "Loose = dict[str, Any]\n"
              "def read(x: Any) -> Wire: ...\n"
              "def write(x: Any) -> None: ...  # Any: whatever msgpack packs\n"
              "def _private(x: Any) -> Any: ...\n"
              "class Seam:\n"
              "    field: Any\n"
              "    _hidden: Any\n"
              "    def call(self, value: 'Any') -> None: ...\n")
    path = tmp_path / "module.py"
    path.write_text(source)
    found = [line.split(":", 2)[1] for line in _undecided(path, path.name)]
    assert found == ["4", "5", "9", "11"]

