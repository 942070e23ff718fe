"""Two owners on one server: every page of the navigation, every run picker and every ?run= link shows owner B
nothing of owner A's runs (ids, labels, uploaded file names), in widgets, text, charts, tables, URLs or state."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from app_support import add_run, synthetic_results

pytestmark = pytest.mark.timeout(600)

APP = Path(__file__).resolve().parents[2] / "app.py"  # its st.navigation lists the pages
ALICE = "browser-alice-0000000000"
BOB = "browser-bob-11111111111"
UPLOAD_NAME = "alice-secret-upload.onnx"


def navigation_pages() -> list[str]:
    """The page files app.py's st.navigation lists (read from its source, so a new page is covered)."""
    tree = ast.parse(APP.read_text(encoding="utf-8"))
    pages = [node.args[0].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and ast.unparse(node.func) == "st.Page"
             and node.args and isinstance(node.args[0], ast.Constant)]
    assert len(pages) >= 7, pages
    return pages


def _real_run(home: Path, owner: str, label: str, variant: str) -> str:
    """A real digits-mlp run measured by the pipeline, under a label and a variant name only its owner knows."""
    from core.pipeline.run import run_recipe
    from core.spec.recipe import Recipe
    from core.jobs.store import RunStore

    recipe = Recipe.from_text("""
model: sample:digits-mlp
data: sample:digits
benchmark: {batch_sizes: [1, 32], threads: 1, warmup: 1, runs: 5, max_seconds: 0.5}
variants:
  - name: VARIANT
    steps: [{technique: quantize, mode: dynamic}]
""".replace("VARIANT", variant))
    store = RunStore(home)
    record = store.create(owner, recipe.to_yaml(), label=label, model=recipe.model, data=recipe.data)
    run_recipe(recipe, store.run_dir(record.id))
    store.set_status(record.id, "completed")
    return record.id


def _alice_upload_run(home: Path) -> str:
    """A finished run of an uploaded model, its file kept in the run's inputs/ as the JobRunner keeps it."""
    from core.jobs.store import RunStore

    results = synthetic_results()
    results["model"] = f"inputs/{UPLOAD_NAME}"
    results["recipe"]["model"] = f"inputs/{UPLOAD_NAME}"
    run_id = add_run(home, results, owner=ALICE, label=f"{UPLOAD_NAME} · 4 variants")
    inputs = RunStore(home).run_dir(run_id) / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    (inputs / UPLOAD_NAME).write_bytes(b"not parsed by this test")
    return run_id


def _alice_scan(home: Path) -> str:
    """A finished sensitivity scan (an Insight job) of Alice's."""
    from core.jobs.insight import SPEC_FILE
    from core.jobs.store import RunStore

    store = RunStore(home)
    record = store.create(ALICE, "model: sample:digits-mlp\n", label="alice-scan-job", model="sample:digits-mlp")
    (store.run_dir(record.id) / "inputs").mkdir(parents=True, exist_ok=True)
    (store.run_dir(record.id) / "inputs" / SPEC_FILE).write_text(json.dumps({"kind": "sensitivity", "config": {}}))
    store.set_status(record.id, "completed")
    return record.id


def _shown(at) -> str:
    """Everything the session's browser receives or keeps: every element and block (text, options, charts,
    tables, download names), the URL's query and the session state."""
    parts = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in (getattr(node, "children", None) or {}).values():
            walk(child)

    walk(at._tree)
    parts.append(json.dumps({k: list(v) for k, v in at.query_params.items()}))
    state = at.session_state
    parts.extend(repr(value) for value in state.to_dict().values())
    return "\n".join(parts)


def _render(make_app, page: str, query_run: str | None):
    at = make_app(owner=BOB)
    if query_run:
        at.query_params["run"] = query_run
    at.run()  # AppTest switches pages only after a first run (the home page; ?run= is read then, as on a reload)
    at.switch_page(page)
    at.run()
    return at


def test_owner_b_sees_nothing_of_owner_a_on_any_page(make_app, fw_home):
    """B opens every page (with and without ?run=<A's run>), every explainer section and every run picker, and
    none of A's run ids, labels or file names reach B."""
    started = time.monotonic()
    alice = [_real_run(fw_home, ALICE, "alice-digits-run", "alice-int8-variant"), _alice_upload_run(fw_home),
             _alice_scan(fw_home)]
    secrets = [*alice, "alice-digits-run", "alice-int8-variant", UPLOAD_NAME, "alice-secret-upload", "alice-scan-job"]
    bob_run = _real_run(fw_home, BOB, "bob-own-run", "bob-int8")  # B's own run: B's pickers have options
    pages = navigation_pages()
    leaks, errors, renders = [], [], 0
    for page in pages:
        for query_run in (None, *alice):
            at = _render(make_app, page, query_run)
            views = [at]
            if query_run is None:
                # Sections behind a segmented control (Learn's "Size & speed" holds its run picker): open each
                # (controls whose labels are their values; formatted ones only change a chart's metric).
                for control in at.get("button_group"):
                    if control.value not in control.options:
                        continue
                    for option in control.options:
                        if option == control.value:
                            continue
                        view = _render(make_app, page, None)
                        next(c for c in view.get("button_group") if c.key == control.key).set_value(option).run()
                        views.append(view)
            for view in views:
                renders += 1
                errors += [(page, query_run, e.value[:200]) for e in view.exception]
                text = _shown(view)
                leaks += [(page, query_run, s) for s in secrets if s in text]
            if query_run is None:
                assert bob_run in _shown(at) or page in ("pages/model.py", "pages/optimize.py", "pages/learn.py",
                                                          "pages/insight.py", "pages/teacher.py"), f"{page} lost B's own run"
    assert not leaks, f"owner B saw owner A's runs: {sorted({(p, s) for p, _, s in leaks})}"
    assert not errors, errors
    print(f"{len(pages)} pages, {renders} renders as B, {time.monotonic() - started:.1f} s")
