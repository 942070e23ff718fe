"""Owner isolation is a layer: pages and the shared UI reach runs only through ui.services, whose store and launcher
are the session's owner-filtered views, so a new page cannot forget the owner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Names that reach every owner's runs: the store and runner classes, and services' unscoped process objects.
UNSCOPED = {"RunStore", "JobRunner", "RunLauncher", "process_launcher", "shutdown_all"}
# (file, function) -> why it may still open the store itself. Each entry is a debt with an owner.
ALLOWED: dict = {}


def _offences(path: Path, rel: str | None = None) -> list[str]:
    """Uses of unscoped names and of ui.services' private names, with their enclosing function."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = rel or path.relative_to(ROOT).as_posix()
    found = []

    def visit(node, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        hit = None
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("core.jobs.store", "core.jobs.queue")):
            names = {a.name for a in node.names} & UNSCOPED
            hit = f"imports {', '.join(sorted(names))} from {node.module}" if names else None
        elif isinstance(node, ast.Name) and node.id in UNSCOPED:
            hit = f"uses {node.id}"
        elif isinstance(node, ast.Attribute) and (node.attr in UNSCOPED or (
                node.attr.startswith("_") and ast.unparse(node.value).endswith("services"))):
            hit = f"uses {ast.unparse(node)}"
        if hit and (rel, function) not in ALLOWED:
            found.append(f"{rel}:{node.lineno} ({function}) {hit}")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def _ui_files() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")),
            *[p for p in sorted((ROOT / "ui").glob("*.py")) if p.name != "services.py"]]


def test_pages_reach_runs_only_through_the_session_views():
    """No page, nor the sidebar or run picker, opens the run store or the job runner itself."""
    offences = [o for path in _ui_files() for o in _offences(path)]
    assert not offences, "a page reaches every owner's runs:\n" + "\n".join(offences)


def test_the_check_finds_a_page_that_opens_the_store(tmp_path):
    """The check itself: a page that imports RunStore, lists it, takes the process runner or a private reader of
    services is caught, line by line."""
    page = tmp_path / "probe.py"
    page.write_text("from core.jobs.store import RunStore\nfrom ui import services\n\n"
                    "def runs():\n    return RunStore().list() + services.process_launcher().store.list()\n\n"
                    "def results(run_id):\n    return services._results('/', run_id, 0)\n")
    offences = _offences(page, "pages/probe.py")
    assert [o.split(" ", 2)[2] for o in offences] == [
        "imports RunStore from core.jobs.store", "uses RunStore", "uses services.process_launcher",
        "uses services._results"], offences


@pytest.mark.parametrize("name", ["store", "launcher"])
def test_session_views_refuse_other_owners_runs(tmp_path, monkeypatch, name):
    """services.store() / services.launcher() as owner B: A's run is "no run" for get, run_dir, status and
    cancel, and absent from list; B's own run is there; the others' active run shows only its status."""
    import streamlit as st

    from core.errors import BadInputError
    from core.session import OWNER_KEY
    from core.jobs.store import RunStore
    from ui import services

    monkeypatch.setenv("FEATHERWEIGHT_HOME", str(tmp_path))
    store = RunStore(tmp_path)
    try:
        services.process_launcher()  # recover() runs now, before the runs below exist
        alice = store.create("browser-alice", "variants: []\n", label="alice's run")  # queued: active
        bob = store.create("browser-bob", "variants: []\n", label="bob's run")
        store.set_status(bob.id, "completed")
        st.session_state[OWNER_KEY] = "browser-bob"
        view = services.store() if name == "store" else services.launcher().store
        assert [r.id for r in view.list()] == [bob.id]
        assert view.list("browser-alice") == []
        for call in (lambda: view.get(alice.id), lambda: view.run_dir(alice.id),
                     lambda: view.get(alice.id, "browser-alice"), lambda: view.delete(alice.id)):
            with pytest.raises(BadInputError, match="no run"):
                call()
        assert view.results(alice.id) is None and view.progress(alice.id) is None
        assert [(r.id, r.label, r.status) for r in view.active()] == [("", "", "queued")]
        if name == "launcher":
            runner = services.launcher().runner
            with pytest.raises(BadInputError, match="no run"):
                runner.status(alice.id)
            with pytest.raises(BadInputError, match="no run"):
                runner.cancel(alice.id)
            with pytest.raises(BadInputError, match="its own owner"):
                runner.submit("browser-alice", "variants: []\n", "sample:digits-mlp", None)
        assert store.get(alice.id).status == "queued"
        assert services.run_results(alice.id) is None and services.results_mtime(alice.id) == 0.0
    finally:
        st.session_state.pop(OWNER_KEY, None)
        services.shutdown_all()
