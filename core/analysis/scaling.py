"""Scaling: latency and throughput of chosen variants across batch sizes x onnxruntime thread counts."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import BadInputError
from core.analysis.diagnose import artifact_bytes, artifact_inputs
from core.io.graph import graph_inputs
from core.measure import quality as measure
from core.results.table import is_decoder_run

DEFAULT_BATCH_SIZES = (1, 8, 32, 128, 256)


def default_thread_counts() -> list[int]:
    """1, 2, 4, ... up to the machine's cores (always including the core count itself)."""
    cores = os.cpu_count() or 1
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    counts.append(cores)
    return counts


def scaling_table(models: dict, inputs: dict, *, batch_sizes=DEFAULT_BATCH_SIZES, thread_counts=(1,),
                  warmup: int = 3, runs: int = 20, max_seconds: float = 1.0,
                  should_stop=lambda: False) -> list[dict]:
    """Time every model at every batch size and thread count.

    Args:
        models: variant name -> ONNX bytes.
        inputs: input name -> array (cycled to each batch size).
        batch_sizes / thread_counts: the grid.
        warmup / runs / max_seconds: per cell, as in core.measure.quality.benchmark.

    Returns:
        One row per cell: ``{"variant", "batch_size", "threads", "p50_ms", "p90_ms", "throughput",
        "ms_per_sample"}``; a model whose batch axis is fixed is timed at that batch only.

    Raises:
        BadInputError: an empty grid, or a thread count below 1.
    """
    import onnx

    batch_sizes = sorted({int(b) for b in batch_sizes})
    thread_counts = sorted({int(t) for t in thread_counts})
    if not batch_sizes or not thread_counts or min(batch_sizes) < 1 or min(thread_counts) < 1:
        raise BadInputError(f"scaling needs batch sizes and thread counts >= 1; got {batch_sizes} x {thread_counts}")
    rows = []
    for name, model_bytes in models.items():
        specs = graph_inputs(onnx.load_from_string(model_bytes))
        for threads in thread_counts:
            if should_stop():
                return rows
            timing = measure.benchmark(model_bytes, specs, inputs, batch_sizes, threads=threads, warmup=warmup,
                                       runs=runs, max_seconds=max_seconds, should_stop=should_stop)
            for batch, lat in timing["latency_ms"].items():
                rows.append({"variant": name, "batch_size": int(batch), "threads": threads,
                             "p50_ms": round(lat["p50"], 6), "p90_ms": round(lat["p90"], 6),
                             "throughput": round(timing["throughput"][batch], 3),
                             "ms_per_sample": round(lat["p50"] / int(batch), 6)})
    return rows


def run_scaling(run_dir: str | Path, results: dict, variants: list[str], **grid) -> list[dict]:
    """`scaling_table` for variants of a finished run, read from their model files.

    Raises:
        BadInputError: a decoder's run, an unknown variant or one without a model file.
    """
    if is_decoder_run(results):
        raise BadInputError("scaling times classifiers and encoders over batch sizes; a decoder's speed is per token "
                            "at batch 1, which its run measured (Insight's diagnostics profile one decode step)")
    run_dir = Path(run_dir)
    entries = {v.get("name"): v for v in results.get("variants", [])}
    unknown = [n for n in variants if n not in entries]
    if unknown:
        raise BadInputError(f"no variant named {', '.join(unknown)}; variants: {', '.join(entries)}")
    models = {name: artifact_bytes(run_dir, entries[name]) for name in variants}
    sequence = ((results.get("recipe") or {}).get("benchmark") or {}).get("sequence_length", 128)
    first = next(iter(models.values()))
    largest = max(grid.get("batch_sizes", DEFAULT_BATCH_SIZES))
    return scaling_table(models, artifact_inputs(first, count=min(largest, 256), sequence_length=sequence), **grid)


__all__ = ["DEFAULT_BATCH_SIZES", "default_thread_counts", "run_scaling", "scaling_table"]
