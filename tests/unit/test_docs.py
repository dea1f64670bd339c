"""The documents name only what exists: every file, folder and module README.md and docs/*.md name (in
backticks or as a link) is in the tree, every document in docs/ is linked from the README or another
document, and docs/configuration.md is what config.Settings generates today."""
from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from scripts.settings_table import REFERENCE, document

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUFFIXES = (".py", ".md", ".js", ".json", ".toml", ".yml", ".yaml", ".service", ".sh", ".example")
TOP = ("bench", "config", "docs", "examples", "exchange", "node", "p2p", "packaging", "scripts", "storage", "tests")
# names of things outside the tree: the data directory's files, a machine's paths, a user's files
NOT_OURS = re.compile(r"^(DATA_DIR|~|/|\$|<|\.\.\.|\.venv|\.peers\.json$|\.cookie$|node_key$|join-token$)")


@cache
def tracked() -> tuple[set[str], set[str]]:
    files = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
             if p.is_file() and not {".venv", "node_modules", ".git"} & set(p.relative_to(ROOT).parts)}
    return files, {Path(f).name for f in files}


def named_paths(text: str) -> set[str]:
    names = set(re.findall(r"`([^`\s]+)`", text)) | set(re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text))
    names |= set(re.findall(rf"(?<![\w/.-])((?:{'|'.join(TOP)})/[\w./-]*[\w/])(?![\w*])", text))     # bare paths (no globs)
    found = set()
    for name in names:
        name = name.rstrip(".,:;")
        if NOT_OURS.match(name) or "://" in name or "*" in name or "=" in name:
            continue
        if name.endswith(SUFFIXES) or name.split("/")[0] in TOP and "/" in name:
            found.add(name)
    return found


def named_modules(text: str) -> set[str]:
    """`python -m x.y`, and dotted names that start with one of our packages (`node.cli.main`, `tests.sim`)."""
    ours = r"(?:config|p2p|exchange|node|storage|tests|scripts|bench)"
    modules = set(re.findall(rf"python3? -m ({ours}(?:\.\w+)*)", text))
    modules |= {m for m in re.findall(r"`((?:config|p2p|exchange|node|storage|tests|scripts|bench)(?:\.\w+)+)`", text)}
    return modules


def exists(name: str, doc: Path) -> bool:
    files, basenames = tracked()
    for base in (doc.parent, ROOT):
        candidate = (base / name).resolve()
        if candidate.exists() and (candidate == ROOT or ROOT in candidate.parents):
            return True
    return "/" not in name and name in basenames      # `recovery.py` beside the package the text is about


def module_exists(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):         # `node.cli.main` is the module node.cli and its main
        path = ROOT.joinpath(*parts[:cut])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() or path.is_dir():
            return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_a_document_names_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = sorted(name for name in named_paths(text) if not exists(name, doc))
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_module_a_document_names_exists(doc: Path) -> None:
    missing = sorted(m for m in named_modules(doc.read_text()) if not module_exists(m))
    assert not missing, f"{doc.name} names modules that do not exist: {missing}"


def test_every_document_is_linked_from_another() -> None:
    links: dict[Path, set[str]] = {}
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", doc.read_text()):
            links.setdefault((doc.parent / target).resolve(), set()).add(doc.name)
    orphans = [doc.name for doc in DOCS[1:] if doc.resolve() not in links]
    assert not orphans, f"no document links to {orphans}"


def test_the_readme_links_each_document_once() -> None:
    targets = re.findall(r"\]\((docs/[^)#\s]+\.md)\)", (ROOT / "README.md").read_text())
    assert sorted(targets) == sorted(set(targets)) and {ROOT / t for t in targets} >= set(DOCS[1:])


def test_the_configuration_reference_is_generated_from_settings() -> None:
    assert REFERENCE.read_text() == document(), "docs/configuration.md is stale: run `python -m scripts.settings_table`"


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors for a document's headings."""
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", doc.read_text(), re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_link_to_a_section_finds_it(doc: Path) -> None:
    broken = [f"{target}#{anchor}" for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", doc.read_text())
              if anchor not in anchors((doc.parent / target) if target else doc)]
    assert not broken, f"{doc.name} links to sections that do not exist: {broken}"


def _defined_names(path: Path) -> set[str]:
    """Top-level classes and functions of a module, and its classes' methods as `Class.method`."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def test_every_hop_of_the_walks_in_architecture_md_is_real() -> None:
    """docs/architecture.md walks an order and a vote hop by hop: every function or class it names there
    is defined in one of the files that section names."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("### Hop by hop", 1)[1].split("\n## ", 1)[0]
    files = [ROOT / name for name in re.findall(r"`((?:exchange|p2p|node)/[\w/]+\.py)`", section)]
    assert len(files) >= 15, "the walks name fewer files than they did: read the section again"
    defined = set().union(*(_defined_names(path) for path in files))
    words = {"chain_vote", "chain_"}          # the message type the walk follows, and its prefix
    named = {n for n in re.findall(r"`([A-Za-z_][\w.]*)`", section) if "/" not in n and n not in words}
    missing = sorted(name for name in named if name not in defined)
    assert not missing, f"docs/architecture.md's walks name what the files they name do not define: {missing}"
