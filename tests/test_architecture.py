"""core's import graph, read with ast (module-level and function-level imports alike): no cycle, no streamlit, no
private name taken from another core module, and no import upward against the layer order (issue 17)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "core"

# Bottom to top. Modules in one layer may import each other (the cycle check still applies); a module may import
# any layer below its own, never one above. A package's modules share the package's layer.
LAYERS: list[tuple[str, ...]] = [
    ("core.errors", "core.format"),
    ("core.spec",),
    ("core.io",),
    ("core.techniques", "core.measure"),
    ("core.results",),
    ("core.pipeline",),
    ("core.views", "core.teach"),
    ("core.analysis",),
    ("core.jobs",),
    ("core.session", "core.cli", "core.workshop"),
]
# core/__init__.py only re-exports lazily (PEP 562) and core/__main__.py only calls the CLI.
EXEMPT = {"core", "core.__main__"}


@dataclass(frozen=True)
class Edge:
    """One import of a core module by another: where it is written and which names it takes."""

    source: str
    target: str
    line: int
    names: tuple[str, ...]  # names taken with `from target import ...` or read as `alias.name`


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def core_modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def lazy_exports(modules: dict[str, Path]) -> dict[str, str]:
    """core/__init__.py's re-export table: public name -> the module that defines it."""
    tree = ast.parse(modules["core"].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            table = ast.literal_eval(node.value)
            return {name: module for module, names in table.items() for name in names}
    return {}


def is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def resolve_relative(source: str, level: int, module: str | None, modules: dict[str, Path]) -> str:
    base = source.split(".") if is_package(source, modules) else source.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def imports_of(source: str, path: Path, modules: dict[str, Path], exports: dict[str, str]):
    """Every core edge of one module, and every streamlit import (as line numbers)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    edges: list[Edge] = []
    streamlit: list[int] = []
    aliases: dict[str, str] = {}  # local name bound to a core module -> that module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "streamlit":
                    streamlit.append(node.lineno)
                if alias.name in modules:
                    edges.append(Edge(source, alias.name, node.lineno, ()))
                    if alias.asname:
                        aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                target = resolve_relative(source, node.level, node.module, modules)
            if target.split(".")[0] == "streamlit":
                streamlit.append(node.lineno)
            if target != "core" and not target.startswith("core."):
                continue
            taken: list[str] = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:  # `from core.io import model`: the submodule itself
                    edges.append(Edge(source, sub, node.lineno, ()))
                    aliases[alias.asname or alias.name] = sub
                elif target == "core" and alias.name in exports:  # a lazy re-export: its defining module
                    edges.append(Edge(source, exports[alias.name], node.lineno, (alias.name,)))
                else:
                    taken.append(alias.name)
            if taken and target in modules and target != "core":
                edges.append(Edge(source, target, node.lineno, tuple(taken)))
    for node in ast.walk(tree):  # `alias._private` on a module bound by an import
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            edges.append(Edge(source, aliases[node.value.id], node.lineno, (node.attr,)))
    return edges, streamlit


def import_graph(root: Path = CORE):
    modules = core_modules(root)
    exports = lazy_exports(modules)
    edges: list[Edge] = []
    streamlit: dict[str, list[int]] = {}
    for name, path in modules.items():
        if name in EXEMPT:
            continue
        found, st_lines = imports_of(name, path, modules, exports)
        edges += [e for e in found if e.target != e.source and e.target not in EXEMPT]
        if st_lines:
            streamlit[name] = st_lines
    return modules, edges, streamlit


def layer_of(name: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{name} is in no layer of tests/test_architecture.py's LAYERS: add it there")


def find_cycle(edges: list[Edge]) -> list[str] | None:
    """One cycle of the module graph, as a list of modules that starts and ends with the same one; None if none."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_core(graph):
    """The reader finds core's modules and their imports (a guard against a test that passes on an empty graph)."""
    modules, edges, _ = graph
    assert "core.pipeline.run" in modules and "core.spec.recipe" in modules
    assert any(e.source == "core.pipeline.run" and e.target == "core.spec.recipe" for e in edges)
    assert len(edges) > 100


def test_no_import_cycle(graph):
    """No chain of core imports leads back to where it started."""
    _, edges, _ = graph
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_core_never_imports_streamlit(graph):
    """core is usable without Streamlit; page state and widgets live in ui/ and pages/."""
    _, _, streamlit = graph
    assert streamlit == {}, streamlit


def test_no_private_name_crosses_a_module(graph):
    """A name another module needs is public and documented; `from core.x import _y` is a hidden contract."""
    _, edges, _ = graph
    crossing = sorted({f"{e.source}:{e.line} takes {e.target}.{n}" for e in edges for n in e.names
                       if n.startswith("_") and not n.startswith("__")})
    assert crossing == [], "\n".join(crossing)


def test_imports_only_go_down_the_layers(graph):
    """Each module imports only from its own layer or the layers below it (the table LAYERS)."""
    modules, edges, _ = graph
    for name in modules:
        if name not in EXEMPT:
            layer_of(name)
    upward = sorted({f"{e.source}:{e.line} imports {e.target}" for e in edges
                     if layer_of(e.target) > layer_of(e.source)})
    assert upward == [], "\n".join(upward)


def test_the_checks_catch_what_they_claim(tmp_path):
    """On a made-up package, the reader finds a function-level cycle, a private name and a relative import."""
    pkg = tmp_path / "core"
    (pkg / "spec").mkdir(parents=True)
    (pkg / "__init__.py").write_text("_EXPORTS = {'core.spec.a': ('A',)}\n")
    (pkg / "spec" / "__init__.py").write_text("")
    (pkg / "spec" / "a.py").write_text("A = 1\ndef f():\n    from core.io import b\n    return b._hidden\n")
    (pkg / "io").mkdir()
    (pkg / "io" / "__init__.py").write_text("")
    (pkg / "io" / "b.py").write_text("from ..spec.a import A\nfrom core import A as B\n_hidden = 2\n")
    _, edges, _ = import_graph(pkg)
    assert find_cycle(edges) in (["core.io.b", "core.spec.a", "core.io.b"], ["core.spec.a", "core.io.b", "core.spec.a"])
    assert any(e.source == "core.spec.a" and "_hidden" in e.names for e in edges)
    assert {(e.source, e.target) for e in edges} >= {("core.io.b", "core.spec.a"), ("core.spec.a", "core.io.b")}
    assert layer_of("core.io.b") > layer_of("core.spec.a")
