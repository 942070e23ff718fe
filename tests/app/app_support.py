"""Helpers for the AppTest tests: runs with known numbers, a real measured run, sample model choices."""

from __future__ import annotations

import json
from pathlib import Path

OWNER = "browser-test-owner"


def errors_of(at) -> list[str]:
    """Every error and exception the last run showed."""
    return [e.value for e in at.error] + [str(e.value) for e in at.exception]


def sample_choice(name: str = "digits-mlp"):
    """A ModelChoice for a sample (its card computed once per test session)."""
    from core.session import ModelChoice

    return ModelChoice(f"sample:{name}", name, _card(name))


_CARDS: dict = {}


def _card(name: str) -> dict:
    if name not in _CARDS:
        from core.session import sample_card

        _CARDS[name] = sample_card(name)
    return _CARDS[name]


def _latency(p50: float) -> dict:
    return {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.5, "mean": p50 * 1.05, "runs": 50}


def synthetic_results() -> dict:
    """A finished run with round numbers, so budgets and "best" have one right answer."""
    def variant(name, size, acc, p1, p256, steps=(), status="ok", error=None, notes=(), info=None):
        ok = status == "ok"
        return {"name": name, "status": status, "error": error, "steps": list(steps),
                "size_bytes": size if ok else None, "compressed_bytes": int(size * 0.9) if ok else None,
                "params": 150_000 if ok else None, "accuracy": acc if ok else None,
                "agreement": (1.0 if name == "baseline" else 0.99) if ok else None, "cosine_mean": None,
                "cosine_min": None, "max_abs_error": 0.1 if ok else None,
                "latency_ms": {"1": _latency(p1), "256": _latency(p256)} if ok else {},
                "throughput": {"1": 1000 / p1, "256": 256_000 / p256} if ok else {},
                "artifact": f"variants/{name}/model.onnx" if ok else None, "notes": list(notes),
                "info": info or {}, "build_s": 1.0}

    q = {"technique": "quantize", "mode": "static", "per_channel": True, "calibration": "minmax", "samples": 128,
         "exclude": [], "quantize_conv": False, "block_size": 32}
    p = {"technique": "prune", "method": "structured", "amount": 0.5, "scope": "global", "importance": "l1",
         "finetune_epochs": 0, "lr": 0.001}
    return {
        "model": "sample:digits-cnn", "data": "sample:digits", "status": "completed", "task": "classification",
        "started_at": "2026-01-01T00:00:00+00:00", "duration_s": 12.0,
        "environment": {"cpu": "Test CPU", "cpu_flags": ["avx2"], "cores": 2, "threads": 1, "executor": "local",
                        "versions": {"python": "3.11"}},
        "dataset": {"source": "sample:digits", "labels": True, "train": 1000, "calib": 100, "eval": 500},
        "recipe": {"model": "sample:digits-cnn", "data": "sample:digits", "seed": 0,
                   "benchmark": {"batch_sizes": [1, 256], "threads": 1, "warmup": 1, "runs": 5},
                   "variants": [{"name": "int8-static", "steps": [q]}, {"name": "fp16", "steps": []},
                                {"name": "pruned", "steps": [p]}, {"name": "broken", "steps": [p]}]},
        "variants": [
            variant("baseline", 600_000, 0.98, 0.05, 4.0),
            variant("int8-static", 160_000, 0.978, 0.06, 1.5, [q],
                    info={"quantized_nodes": ["conv1_QuantizeLinear", "fc_DequantizeLinear"]}),
            variant("fp16", 300_000, 0.98, 0.07, 4.2, [{**q, "mode": "fp16"}]),
            variant("pruned", 80_000, 0.96, 0.04, 0.9, [p], info={"layer_sparsity": {"conv1": 0.5, "fc": 0.25}}),
            variant("broken", 0, None, 0, 0, [p], status="failed", error="prune failed: boom"),
        ],
    }


def add_run(home: Path, results: dict, *, owner: str = OWNER, status: str = "completed", label: str = "") -> str:
    """Register a finished run with these results in the store at `home`; returns its id."""
    from core.jobs.store import RunStore

    store = RunStore(home)
    record = store.create(owner, "variants: []\n", label=label or "synthetic run", model=results["model"],
                          data=results.get("data"))
    (store.run_dir(record.id) / "results.json").write_text(json.dumps(results), encoding="utf-8")
    store.set_status(record.id, status)
    return record.id


def add_real_run(home: Path, owner: str = OWNER) -> str:
    """Run a one-variant static-int8 recipe on digits-mlp with the real pipeline into the store; returns its id."""
    from core.pipeline.run import run_recipe
    from core.spec.recipe import Recipe
    from core.jobs.store import RunStore

    recipe = Recipe.from_text("""
model: sample:digits-mlp
data: sample:digits
benchmark: {batch_sizes: [1, 32], threads: 1, warmup: 1, runs: 5, max_seconds: 0.5}
variants:
  - name: int8-dynamic
    steps: [{technique: quantize, mode: dynamic}]
""")
    store = RunStore(home)
    record = store.create(owner, recipe.to_yaml(), label="digits-mlp · 1 variant", model=recipe.model,
                          data=recipe.data)
    run_recipe(recipe, store.run_dir(record.id))
    store.set_status(record.id, "completed")
    return record.id


def vega_charts(at) -> list[dict]:
    """The page's Vega-Lite charts (st.vega_lite_chart) as specs, each named dataset decoded back into a list of
    records under spec["datasets"] (Streamlit sends them apart from the spec, as Arrow)."""
    import json

    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    charts = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        spec["datasets"] = {d.name: convert_arrow_bytes_to_pandas_df(d.data.data).to_dict("records")
                            for d in element.proto.datasets}
        spec["key"] = element.proto.id
        charts.append(spec)
    return charts
