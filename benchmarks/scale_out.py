"""Variants per minute: the same sweep on the local executor and on a local Ray cluster on this machine.

Usage::

    python -m benchmarks.scale_out [--cpus N] [--out DIR]

Prints a Markdown table (the README's "Scaling out" section quotes it) and the raw figures as JSON. The local
executor builds the variants one after another in one process; Ray builds one per CPU at once. Both measure the
baseline once. On one machine, Ray's parallel tasks time their latency while other tasks run, so the table also
shows how far Ray's latency for each variant is from the local executor's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from core.pipeline.run import run_recipe
from core.spec.recipe import Recipe

SWEEP = """
model: sample:digits-cnn
data: sample:digits
seed: 0
benchmark: {batch_sizes: [1, 32], threads: 1, warmup: 5, runs: 50, max_seconds: 2}
sweep:
  name: grid
  steps:
    - {technique: prune, method: structured, amount: [0.25, 0.5, 0.75], finetune_epochs: 5}
    - {technique: quantize, mode: [dynamic, static]}
"""


def measure(cpus: int, out: Path) -> dict:
    import ray

    recipe = Recipe.from_text(SWEEP)
    count = len(recipe.variants)
    started = time.perf_counter()
    local = run_recipe(recipe, out / "local")
    local_s = time.perf_counter() - started

    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    startup_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        remote = run_recipe(recipe, out / "ray", executor="ray")
        ray_s = time.perf_counter() - started
        started = time.perf_counter()  # again, on workers that have imported torch and onnxruntime already
        run_recipe(recipe, out / "ray-warm", executor="ray")
        warm_s = time.perf_counter() - started
    finally:
        ray.shutdown()

    drift = {}
    for batch in recipe.benchmark.batch_sizes:
        a, b = _p50(local, batch), _p50(remote, batch)
        drift[batch] = max(abs(b[n] / a[n] - 1) for n in a if n in b and n != "baseline")
    ok = sum(v.status == "ok" for v in remote.variants) - 1
    return {"variants": count, "cpus": cpus, "local_s": round(local_s, 1), "ray_s": round(ray_s, 1),
            "ray_warm_s": round(warm_s, 1), "ray_warm_per_min": round(count / warm_s * 60, 1),
            "ray_startup_s": round(startup_s, 1), "local_per_min": round(count / local_s * 60, 1),
            "ray_per_min": round(count / ray_s * 60, 1), "ray_ok": ok,
            "max_latency_drift": {str(k): round(v, 3) for k, v in drift.items()},
            "machine": f"{os.cpu_count()} CPUs"}


def _p50(result, batch: int) -> dict:
    values = {}
    for v in result.variants:
        if v.status != "ok":
            continue
        timing = v.latency_ms.get(batch) or v.latency_ms.get(str(batch)) or {}
        if "p50" in timing:
            values[v.name] = timing["p50"]
    return values


def markdown(figures: dict) -> str:
    drift = ", ".join(f"batch {k}: {v:.0%}" for k, v in figures["max_latency_drift"].items())
    return "\n".join([
        "| Executor | Sweep wall time | Variants per minute |",
        "|---|---|---|",
        f"| local (one worker, one variant at a time) | {figures['local_s']:.1f} s | {figures['local_per_min']:.1f} |",
        f"| Ray, local cluster, num_cpus={figures['cpus']}, first sweep | {figures['ray_s']:.1f} s "
        f"(+ {figures['ray_startup_s']:.1f} s cluster start) | {figures['ray_per_min']:.1f} |",
        f"| Ray, same cluster, next sweep (workers warm) | {figures['ray_warm_s']:.1f} s | "
        f"{figures['ray_warm_per_min']:.1f} |",
        "",
        f"{figures['variants']} variants (structured prune 25/50/75% with 5 fine-tuning epochs x dynamic/static int8 "
        "on digits-cnn, the sweep of the issue), baseline once, "
        f"{figures['machine']}. Largest change of a variant's p50 latency between the two executors: {drift}.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray's num_cpus (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary dir)")
    args = parser.parse_args(argv)
    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="fw-scale-") as tmp:
            figures = measure(args.cpus, Path(tmp))
    else:
        figures = measure(args.cpus, args.out)
    print(markdown(figures))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
