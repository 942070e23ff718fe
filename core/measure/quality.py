"""Measurement: size, parameters, accuracy and fidelity against the baseline, and latency percentiles."""

from __future__ import annotations

import os
import platform
import time
import zlib
from pathlib import Path
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from core.errors import FeatherweightError
from core.io.runtimes import REFERENCE_RUNTIME, open_runner
from core.io.graph import fixed_batch_of
from core.measure.energy import EnergyCounter
from core.measure.timing import (CONFIDENCE, ROUND_SECONDS, TARGET_HALF_WIDTH, cpu_clock_for, speedup_of,
                                 time_in_rounds, timing_cores)

# A sample's fp32 top-1 is "clear" when the baseline gives its top class at least this much more probability than
# the runner-up (softmax of the outputs; outputs that already are probabilities are used as they are). 0.1 = ten
# probability points: a near-uniform model (random weights, 1,000 classes ~0.001 apart) has no clear sample, so
# int8's tiny noise reshuffling its near-ties reads as "no clear samples", not as 0% agreement; a trained digits
# model has >90% of its samples clear. The rule is the baseline's, so every variant is judged on the same samples.
CONFIDENT_MARGIN = 0.1
# Top-k overlap: |top-k(variant) & top-k(baseline)| / k per sample, averaged. k = 5, or classes - 1 for 6 classes or
# fewer (the top-C set of C classes is every class, an overlap of 1 whatever the model does).
TOPK = 5
# Flags that decide which int8 / fp16 kernels onnxruntime can use on this CPU.
CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve", "i8mm")


def size_bytes(model_bytes: bytes) -> int:
    return len(model_bytes)


def compressed_bytes(model_bytes: bytes) -> int:
    """Size after zip-style (deflate) compression: what zeros from unstructured pruning save on disk."""
    return len(zlib.compress(model_bytes, 6))


def logical_params(proto) -> int:
    """Weight count as a user means it: stored weight elements, with int4 packing undone and quantization
    scales / zero points left out."""
    from onnx import helper

    inits = {i.name: i for i in proto.graph.initializer}
    skip: set[str] = set()
    unpacked: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            skip.update(node.input[1:3])
        elif node.op_type in ("MatMulInteger", "ConvInteger"):
            skip.update(node.input[2:4])
        elif node.op_type == "DynamicQuantizeLinear":
            pass
        elif node.op_type == "MatMulNBits":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            unpacked[node.input[1]] = int(attrs.get("K", 0)) * int(attrs.get("N", 0))
            skip.update(node.input[2:4])
    total = 0
    for name, t in inits.items():
        if name in skip:
            continue
        total += unpacked.get(name, int(np.prod(t.dims)) if len(t.dims) else 1)
    return total


@dataclass
class Fidelity:
    """How the variant's outputs compare with labels and with the baseline's outputs."""

    accuracy: float | None
    agreement: float | None
    cosine_mean: float | None
    cosine_min: float | None
    max_abs_error: float | None
    per_output: list | None = None  # models with several outputs: {name, cosine_mean, cosine_min, relative_error}
    flips: dict | None = None  # classifiers vs the baseline: {"count": samples whose top-1 changed, "rate": share}
    agreement_confident: float | None = None  # top-1 agreement on the samples whose baseline margin is clear
    confident_samples: int | None = None  # how many samples had a clear baseline margin (CONFIDENT_MARGIN)
    topk_overlap: float | None = None  # mean |top-k & baseline top-k| / k
    topk: int | None = None
    kl: float | None = None  # mean KL(baseline || variant) over the samples, nats (classifiers)
    samples: int | None = None  # how many samples every number here is measured on


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """Rows as class probabilities: softmax, unless the rows already are probabilities (in [0, 1], summing to 1)."""
    z = logits.reshape(len(logits), -1).astype(np.float64)
    if z.size and z.min() >= 0.0 and z.max() <= 1.0 and np.allclose(z.sum(axis=1), 1.0, atol=1e-3):
        return z
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top1_margin(logits: np.ndarray) -> np.ndarray:
    """Per sample: probability of the top class minus that of the runner-up (1.0 with a single class)."""
    p = class_probabilities(logits)
    if p.shape[1] < 2:
        return np.ones(len(p))
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def kl_divergence(outputs: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Per sample, KL(baseline || variant) in nats between the two class distributions (`class_probabilities`):
    how much probability mass the variant moved, on every class, not only whether the top-1 changed."""
    p = class_probabilities(baseline)
    q = class_probabilities(outputs)
    tiny = np.finfo(np.float64).tiny
    return np.sum(np.where(p > 0, p * (np.log(np.maximum(p, tiny)) - np.log(np.maximum(q, tiny))), 0.0), axis=1)


def topk_of(classes: int) -> int:
    """The k of top-k overlap for a classifier with `classes` outputs (see TOPK)."""
    return max(1, min(TOPK, classes - 1))


def prediction_changes(outputs: np.ndarray, baseline: np.ndarray) -> dict:
    """How a classifier's predictions differ from the baseline's on the same samples.

    Returns:
        ``{"flips": {"count", "rate"}, "agreement_confident", "confident_samples", "topk_overlap", "topk", "kl"
        (mean KL(baseline || variant), nats), "flipped": indices of the samples whose top-1 changed}``;
        agreement_confident is None when no sample has a clear margin (CONFIDENT_MARGIN).
    """
    out = outputs.reshape(len(outputs), -1)
    base = baseline.reshape(len(baseline), -1)
    n, classes = base.shape
    flipped = np.flatnonzero(out.argmax(axis=1) != base.argmax(axis=1))
    confident = top1_margin(base) >= CONFIDENT_MARGIN
    same = out.argmax(axis=1) == base.argmax(axis=1)
    k = topk_of(classes)
    # argsort on float64 with a stable sort: ties (an int8 output's equal logits) resolve by index, as argmax does
    top_out = np.argsort(-out.astype(np.float64), axis=1, kind="stable")[:, :k]
    top_base = np.argsort(-base.astype(np.float64), axis=1, kind="stable")[:, :k]
    overlap = np.array([len(np.intersect1d(a, b)) for a, b in zip(top_out, top_base)]) / k if n else np.ones(0)
    return {"flips": {"count": int(len(flipped)), "rate": float(len(flipped) / n) if n else 0.0},
            "agreement_confident": float(same[confident].mean()) if confident.any() else None,
            "confident_samples": int(confident.sum()), "topk_overlap": float(overlap.mean()) if n else None,
            "topk": k, "kl": float(kl_divergence(out, base).mean()) if n else None, "flipped": flipped}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    denominator = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(denominator > 0, (a * b).sum(axis=1) / np.maximum(denominator, 1e-30), 1.0)


def relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    """||output - reference|| / ||reference|| over the whole output (0 when both are zero)."""
    reference = reference.astype(np.float64)
    norm = float(np.linalg.norm(reference))
    diff = float(np.linalg.norm(output.astype(np.float64) - reference))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))


def fidelity(outputs: list[np.ndarray], baseline_outputs: list[np.ndarray] | None, labels: np.ndarray | None,
             task: str, output_names: list[str] | None = None) -> Fidelity:
    """Accuracy (labels), top-1 agreement (classifiers) and cosine to the baseline (other outputs); models with
    several outputs also get cosine and relative error per output."""
    first = outputs[0]
    accuracy = agreement = cos_mean = cos_min = max_err = None
    changes = {}
    if task == "classification":
        predictions = first.argmax(axis=1)
        if labels is not None:
            accuracy = float((predictions == labels).mean())
        if baseline_outputs is not None:
            agreement = float((predictions == baseline_outputs[0].argmax(axis=1)).mean())
            changes = prediction_changes(first, baseline_outputs[0])
            changes.pop("flipped")
    if baseline_outputs is not None:
        if task != "classification":
            cos = np.concatenate([_cosines(o, b) for o, b in zip(outputs, baseline_outputs)])
            cos_mean, cos_min = float(cos.mean()), float(cos.min())
        max_err = float(max(np.max(np.abs(o.astype(np.float64) - b)) if o.size else 0.0
                            for o, b in zip(outputs, baseline_outputs)))
    per_output = None
    if baseline_outputs is not None and len(outputs) > 1:
        names = output_names or [f"output {i}" for i in range(len(outputs))]
        per_output = []
        for name, o, b in zip(names, outputs, baseline_outputs):
            cos = _cosines(o, b) if o.size else np.ones(1)
            per_output.append({"name": name, "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                               "relative_error": relative_error(o, b)})
    return Fidelity(accuracy, agreement, cos_mean, cos_min, max_err, per_output, samples=len(first), **changes)


def retrieval_accuracy(embeddings: np.ndarray, pairs: np.ndarray) -> float:
    """Paraphrase retrieval: for each pair (i, j), is j the nearest neighbour (cosine) of i among all other rows,
    and i of j? The fraction of those 2 x len(pairs) queries answered right.

    Args:
        embeddings: (N, D) sentence embeddings (any scale; rows are normalized here).
        pairs: (P, 2) integer row indices of paraphrase pairs.
    """
    flat = embeddings.reshape(len(embeddings), -1).astype(np.float64)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    queries = np.concatenate([pairs[:, 0], pairs[:, 1]])
    answers = np.concatenate([pairs[:, 1], pairs[:, 0]])
    similarity = flat[queries] @ flat.T
    similarity[np.arange(len(queries)), queries] = -np.inf  # a sentence is not its own neighbour
    return float((similarity.argmax(axis=1) == answers).mean())


def batch_inputs(inputs: dict, input_specs, batch: int) -> dict:
    """A batch of `batch` samples drawn (cycled) from real inputs."""
    out = {}
    for spec in input_specs:
        source = inputs[spec.name]
        reps = -(-batch // len(source))
        out[spec.name] = np.ascontiguousarray(np.concatenate([source] * reps)[:batch])
    return out


def possible_batch_sizes(input_specs, wanted) -> tuple[list[int], str | None]:
    """Batch sizes the graph accepts: all when the batch axis is symbolic, else only the fixed one."""
    only = fixed_batch_of(input_specs)
    if only is None:
        return list(wanted), None
    if list(wanted) == [only]:
        return [only], None
    return [only], f"the model's batch axis is fixed at {only}; other batch sizes cannot be timed"


# How often a long benchmark reports its own progress (fraction and ETA): often enough that a page polling each
# second sees it move, rarely enough that the reports cost nothing next to a run.
PROGRESS_EVERY_S = 0.5
# Models timed together in one group of rounds: every session is open at once, so a run of many large variants is
# timed in groups (the baseline in each, so every ratio is still a same-round ratio). 1 GiB of model files keeps a
# group's sessions well inside a job worker's 8 GiB address space (weights are held about twice while a session
# loads); 16 runners keep a round under half a second, so a round still sees one load level.
GROUP_MAX_BYTES = 1 << 30
GROUP_MAX_MODELS = 16
TIMING_METHOD = ("interleaved rounds: the baseline and every variant take turns of about "
                 f"{ROUND_SECONDS * 1000:.0f} ms in one process, on the same pinned core(s); speed-up = median of "
                 f"per-round ratios with a {CONFIDENCE:.0%} bootstrap interval; rounds until every interval is "
                 f"within ±{TARGET_HALF_WIDTH:.0%} or the time cap; with one thread each call's time in the "
                 "ratios is the thread's CPU time (time taken away by other processes does not count), and the "
                 "latency percentiles are wall-clock")


def timing_groups(sizes: Mapping[str, int], baseline: str, *, max_bytes: int = GROUP_MAX_BYTES,
                  max_models: int = GROUP_MAX_MODELS) -> list[list[str]]:
    """Split models (name -> bytes) into groups timed together: each starts with `baseline`, then variants in
    order while the group's bytes and count stay within the caps (a variant alone over the cap gets its own)."""
    groups: list[list[str]] = []
    current, used = [baseline], sizes.get(baseline, 0)
    for name, size in sizes.items():
        if name == baseline:
            continue
        if len(current) > 1 and (used + size > max_bytes or len(current) >= max_models):
            groups.append(current)
            current, used = [baseline], sizes.get(baseline, 0)
        current.append(name)
        used += size
    groups.append(current)
    return groups


def with_anchors(groups: list[list[str]], anchors: Mapping[str, str]) -> list[list[str]]:
    """`groups` with each member's anchor (the model it is also compared with, in the same rounds) added after the
    group's baseline where it is missing: a runtime's variants are timed beside that runtime's baseline."""
    out = []
    for group in groups:
        needed = [a for a in dict.fromkeys(anchors.get(n) for n in group) if a and a not in group]
        out.append(group[:1] + needed + group[1:])
    return out


def time_models(models: Mapping[str, bytes], input_specs, inputs: dict, batch_sizes, *, baseline: str,
                threads: int = 1, warmup: int = 20, runs: int = 200, max_seconds: float = 10.0,
                holdout: bool = True, should_stop=lambda: False, energy_counter=None, on_progress=None,
                on_wait=None, runtimes: Mapping[str, str] | None = None,
                anchors: Mapping[str, str] | None = None) -> dict:
    """The one timing phase: every model timed interleaved in rounds with the baseline, one batch size at a time,
    in this process, on the same pinned core(s) (`core.measure.timing`).

    Per batch size, the models' sessions are opened on the held cores and timed in rounds until every speed-up's
    interval is within the target, or `runs` rounds, or `max_seconds` per model (the cap of the whole batch size
    is `max_seconds` x the models timed together). Warm-up calls (`warmup` per model) are excluded. With
    `holdout`, alternate rounds are held out for choosing (`selection`); the reported figures come from the others.

    `on_progress(fraction, message)` hears at most every PROGRESS_EVERY_S how far it is (0..1 over every batch
    size), `on_wait(message)` when the cores are busy with another process's timing.

    A run timed on several runtimes (`core.io.runtimes`) names each model's runtime in `runtimes` (onnxruntime
    where absent; a model's bytes are what that runtime reads: ONNX, or an ExecuTorch program) and in `anchors`
    a second model each one is also compared with in the same rounds (that runtime's own baseline): its ratio to
    the anchor is ``against`` (``{"speedup": {bs: ...}, "selection": {bs: ...}}``), beside ``speedup`` against
    `baseline` (onnxruntime's).

    Returns:
        ``{"models": {name: {"latency_ms": {bs: {p50, p90, p99, mean, runs}}, "throughput": {bs: samples/s},
        "cpu_ms_per_sample": {bs: ms}, "energy": {"joules_per_sample", "source", "note"}, "speedup": {bs: {ratio,
        low, high, rounds, converged}}, "selection": {"speedup": {bs: ...}, "latency_ms": {bs: ...}}}},
        "batches": {bs: {"rounds", "converged", "stopped", "elapsed_s", "cores", "groups", "contention"}},
        "note": str|None, "stopped": bool}`` with batch sizes as strings (JSON keys); the baseline has no
        speed-up.
    """
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not among the models {sorted(models)}")
    sizes, note = possible_batch_sizes(input_specs, batch_sizes)
    counter = energy_counter if energy_counter is not None else EnergyCounter()
    runtimes, anchors = dict(runtimes or {}), dict(anchors or {})
    out = {name: {"latency_ms": {}, "throughput": {}, "cpu_ms_per_sample": {}, "joules": {}, "speedup": {},
                  "selection": {"speedup": {}, "latency_ms": {}}} for name in models}
    for name in anchors:
        out[name]["against"] = {"speedup": {}, "selection": {}}
    batches: dict[str, dict] = {}
    groups = with_anchors(timing_groups({name: len(data) for name, data in models.items()}, baseline), anchors)
    names = [spec.name for spec in input_specs]
    last_report = [0.0]
    stopped = False

    def report(done: float, message: str) -> None:
        now = time.perf_counter()
        if on_progress is None or now - last_report[0] < PROGRESS_EVERY_S:
            return
        last_report[0] = now
        on_progress(min(1.0, done / max(1, len(sizes) * len(groups))), message)

    for size_index, batch in enumerate(sizes):
        feed = batch_inputs(inputs, input_specs, batch)
        key = str(batch)
        entry = {"rounds": 0, "converged": True, "stopped": False, "elapsed_s": 0.0, "cores": None,
                 "groups": len(groups), "contention": None}
        for group_index, group in enumerate(groups):
            if stopped or should_stop():
                stopped = entry["stopped"] = True
                entry["converged"] = False
                break
            step = size_index * len(groups) + group_index
            cap_s = max_seconds * len(group)
            with timing_cores(threads, should_stop=should_stop, on_wait=on_wait) as cores:
                if cores is None:
                    stopped = entry["stopped"] = True
                    entry["converged"] = False
                    break
                sessions = {}
                for name in group:
                    try:
                        sessions[name] = open_runner(runtimes.get(name, REFERENCE_RUNTIME), models[name], threads,
                                                     batch=batch, input_names=names)
                    except FeatherweightError as exc:  # another runtime that cannot take this batch: it alone
                        if name == baseline or name not in runtimes:
                            raise
                        out[name]["error"] = f"not timed at batch {batch}: {exc}"
                runners = {name: session.bind(feed) for name, session in sessions.items()}
                phase_started = time.perf_counter()

                def progress(fraction: float, message: str, _step=step, _batch=batch, _cap=cap_s,
                             _started=phase_started, _group=group_index):
                    left = max(0.0, min(_cap - (time.perf_counter() - _started),
                                        (time.perf_counter() - _started) * (1 - fraction) / max(fraction, 1e-3)))
                    which = f" (group {_group + 1} of {len(groups)})" if len(groups) > 1 else ""
                    report(_step + fraction, f"timing batch {_batch}{which}: {message} of at most {runs}, "
                                             f"about {_duration(left)} left at this batch size")

                report(step, f"timing batch {batch}: warm-up ({warmup} calls per model)")
                timed = time_in_rounds(runners, baseline, warmup=warmup, max_rounds=runs, max_seconds=cap_s,
                                       threads=threads, holdout=holdout, energy_counter=counter if counter.available
                                       else None, should_stop=should_stop, on_progress=progress,
                                       cpu_clock=cpu_clock_for(threads))
                del runners, sessions
            first = group_index == 0
            for name in group:
                if name == baseline and not first:
                    continue  # the baseline's own figures come from the first group
                figures, used = timed.latency_ms.get(name), timed.usage.get(name)
                if figures is None:
                    continue
                target = out[name]
                target["latency_ms"][key] = figures
                target["throughput"][key] = float(batch / (figures["mean"] / 1000.0))
                samples = batch * max(1, used["calls"])
                target["cpu_ms_per_sample"][key] = used["cpu_s"] * 1000.0 / samples
                if used["energy_j"] is not None and used["busy_s"] >= counter.min_window_s:
                    target["joules"][key] = used["energy_j"] / samples
                if name in timed.speedup:
                    target["speedup"][key] = timed.speedup[name].to_dict()
                if name in timed.selection:
                    target["selection"]["speedup"][key] = timed.selection[name].to_dict()
                if name in timed.selection_latency_ms:
                    target["selection"]["latency_ms"][key] = timed.selection_latency_ms[name]
                anchor = anchors.get(name)
                if anchor in timed.round_ms and timed.rounds:  # against its runtime's baseline, same rounds
                    own, base = timed.round_ms[name], timed.round_ms[anchor]
                    step_by = 2 if timed.holdout else 1
                    target["against"]["speedup"][key] = speedup_of(base[0::step_by], own[0::step_by]).to_dict()
                    if timed.holdout and timed.rounds >= 2:
                        target["against"]["selection"][key] = speedup_of(base[1::2], own[1::2]).to_dict()
            entry["rounds"] = max(entry["rounds"], timed.rounds)
            entry["converged"] = entry["converged"] and timed.converged
            entry["stopped"] = entry["stopped"] or timed.stopped
            entry["elapsed_s"] = round(entry["elapsed_s"] + timed.elapsed_s, 3)
            entry["cores"] = cores
            entry["contention"] = _worse(entry["contention"], timed.contention)
            stopped = stopped or timed.stopped
        batches[key] = entry
    result = {"models": {}, "batches": batches, "note": note, "stopped": stopped}
    for name, target in out.items():
        joules = target.pop("joules")
        complete = len(joules) == len(target["latency_ms"]) and bool(joules)
        energy_note = counter.reason if not counter.available else (
            None if complete else "some timing windows were too short for the energy counters")
        target["energy"] = {"joules_per_sample": joules, "source": counter.source if joules else None,
                            "note": energy_note}
        result["models"][name] = target
    return result


def _worse(first: dict | None, second: dict) -> dict:
    """Of two contention readings, the one that saw the lower CPU share (what a reader must be warned about)."""
    if first is None or (second.get("cpu_share") or 1.0) < (first.get("cpu_share") or 1.0):
        return second
    return first


def benchmark(model_bytes: bytes, input_specs, inputs: dict, batch_sizes, *, threads: int = 1, warmup: int = 20,
              runs: int = 200, max_seconds: float = 10.0, should_stop=lambda: False, energy_counter=None,
              on_progress=None) -> dict:
    """Time one model per batch size, in rounds as `time_models` does (one runner: no speed-up).

    Returns:
        ``{"latency_ms": {bs: {p50, p90, p99, mean, runs}}, "throughput": {bs: samples/s}, "note": str|None,
        "cpu_ms_per_sample": {bs: ms}, "energy": {"joules_per_sample": {bs: J}, "source": str|None,
        "note": str|None}}`` with batch sizes as strings (JSON keys).
    """
    timed = time_models({"model": model_bytes}, input_specs, inputs, batch_sizes, baseline="model",
                        threads=threads, warmup=warmup, runs=runs, max_seconds=max_seconds, holdout=False,
                        should_stop=should_stop, energy_counter=energy_counter, on_progress=on_progress)
    figures = timed["models"]["model"]
    return {"latency_ms": figures["latency_ms"], "throughput": figures["throughput"], "note": timed["note"],
            "cpu_ms_per_sample": figures["cpu_ms_per_sample"], "energy": figures["energy"]}


def _duration(seconds: float) -> str:
    """A short human duration for ETAs: '8 s', '3 min', '1.5 h'."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cpu_info() -> tuple[str, set]:
    """This CPU's model name and its instruction-set flags (from /proc/cpuinfo; the platform's name elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and model in ("", platform.machine(), "x86_64"):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def last_level_cache_bytes() -> int | None:
    """Bytes of this CPU's largest cache (Linux sysfs: cpu0's highest cache level), None where unknown. A decoder
    whose weights fit in it is not memory-bound at batch 1 (core.results.explain)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    best = None
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            text = (index / "size").read_text(encoding="ascii").strip()
        except OSError:
            continue
        if text and text[-1] in units and text[:-1].isdigit():
            size = int(text[:-1]) * units[text[-1]]
        elif text.isdigit():
            size = int(text)
        else:
            continue
        best = size if best is None else max(best, size)
    return best


# The int8 instruction sets onnxruntime's kernels choose between, fastest first: (name, CPU flags, has an int8
# dot product). MLAS picks its u8s8 GEMM kernels by these (AMX tiles, AVX-512 VNNI, AVX-VNNI, plain AVX2 through
# 16-bit intermediate sums), so every int8 speed figure depends on which one the CPU has.
INT8_ISAS = (("AMX", {"amx_int8", "amx_tile"}, True), ("AVX-512 VNNI", {"avx512_vnni"}, True),
             ("AVX-VNNI", {"avx_vnni"}, True), ("AVX-512 (no VNNI)", {"avx512f", "avx512bw"}, False),
             ("AVX2 (no VNNI)", {"avx2"}, False), ("ARM dot-product", {"i8mm", "asimddp"}, True))
INT8_FAST_FLAGS = frozenset().union(*(names for _, names, fast in INT8_ISAS if fast))


def int8_isa(flags) -> str:
    """The fastest int8 instruction set among the CPU `flags` (`INT8_ISAS`), or ``"no int8 SIMD"``."""
    flags = set(flags)
    return next((name for name, names, _ in INT8_ISAS if flags & names), "no int8 SIMD")


def int8_fast(flags) -> bool:
    """Whether the CPU `flags` include an int8 dot-product instruction (VNNI, AMX, ARM dot-product / i8mm): the
    one test behind "int8 gains less on this CPU"."""
    return bool(set(flags) & INT8_FAST_FLAGS)


def environment(threads: int) -> dict:
    """The machine and library versions a run was measured with."""
    import onnx
    import onnxruntime
    import torch

    model, flags = cpu_info()
    return {
        "cpu": model,
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "int8_isa": int8_isa(flags),
        "last_level_cache_bytes": last_level_cache_bytes(),
        "cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
    }


__all__ = ["CONFIDENT_MARGIN", "GROUP_MAX_BYTES", "INT8_FAST_FLAGS", "INT8_ISAS", "TIMING_METHOD", "benchmark",
           "class_probabilities", "environment", "fidelity", "int8_fast", "int8_isa", "last_level_cache_bytes",
           "prediction_changes", "top1_margin", "topk_of", "logical_params", "size_bytes", "compressed_bytes",
           "retrieval_accuracy", "time_models", "timing_groups"]
