"""Every `core.…` name and `core/….py` path the docs cite exists (docs stay true to the code as it moves)."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "SECURITY.md", "RELIABILITY.md", "BENCHMARKS.md", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
NAME = re.compile(r"\bcore(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
PATH = re.compile(r"`((?:core|ui|pages|benchmarks|sample_models|tests)/[A-Za-z0-9_/.]*)`")


def _resolves(dotted: str) -> bool:
    """Whether `dotted` is a module, or an attribute chain on the longest importable module prefix of it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(target, attr):
                return False
            target = getattr(target, attr)
        return True
    return False


def _cited() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        path = ROOT / doc
        if path.exists():
            out += sorted({(doc, m.group(0)) for m in NAME.finditer(path.read_text(encoding="utf-8"))})
    return out


def _paths() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        path = ROOT / doc
        if path.exists():
            out += sorted({(doc, m.group(1)) for m in PATH.finditer(path.read_text(encoding="utf-8"))})
    return out


def test_the_docs_cite_core_names():
    """The check has something to check (the docs cite over a dozen core names)."""
    assert len(_cited()) > 12


@pytest.mark.parametrize("doc,path", _paths())
def test_cited_path_exists(doc, path):
    """A source path in the docs (in backticks) is a file or folder of the repository."""
    assert (ROOT / path.rstrip("/")).exists(), f"{doc} cites {path}, which does not exist"


@pytest.mark.parametrize("doc,name", _cited())
def test_cited_core_name_exists(doc, name):
    """A `core.…` name in the docs is a module or a name defined in one."""
    assert _resolves(name), f"{doc} cites {name}, which does not exist"
