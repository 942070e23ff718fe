"""Measurement: size, parameters, accuracy and fidelity against the baseline, and latency percentiles."""

from __future__ import annotations

import os
import platform
import time
import zlib
from dataclasses import dataclass

import numpy as np

from core.io.runtime import make_session
from core.io.graph import fixed_batch_of
from core.measure.energy import EnergyCounter

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


def _relative_error(output: np.ndarray, reference: np.ndarray) -> float:
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
                               "relative_error": _relative_error(o, b)})
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


def benchmark(model_bytes: bytes, input_specs, inputs: dict, batch_sizes, *, threads: int = 1, warmup: int = 20,
              runs: int = 200, max_seconds: float = 10.0, should_stop=lambda: False, energy_counter=None,
              on_progress=None) -> dict:
    """Time single-session inference per batch size.

    Warm-up runs are excluded; at least 10 timed runs are made, then timing stops at `runs` or `max_seconds`.
    Around the timed runs the process's CPU time and, where the CPU's energy counters can be read
    (`core.measure.energy.EnergyCounter`, RAPL through powercap), the energy used are recorded: two readings per batch
    size, so the overhead is negligible.

    `on_progress(fraction, message)`, when given, hears at most every PROGRESS_EVERY_S how far the benchmark is
    (0..1 over every batch size, warm-up included) with the batch size, the runs done and an ETA.

    Returns:
        ``{"latency_ms": {bs: {p50, p90, p99, mean, runs}}, "throughput": {bs: samples/s}, "note": str|None,
        "cpu_ms_per_sample": {bs: ms}, "energy": {"joules_per_sample": {bs: J}, "source": str|None,
        "note": str|None}}`` with batch sizes as strings (JSON keys).
    """
    session = make_session(model_bytes, threads)
    sizes, note = possible_batch_sizes(input_specs, batch_sizes)
    counter = energy_counter if energy_counter is not None else EnergyCounter()
    latency: dict[str, dict] = {}
    throughput: dict[str, float] = {}
    cpu_ms: dict[str, float] = {}
    joules: dict[str, float] = {}
    last_report = [time.perf_counter()]

    def report(size_index: int, batch: int, done: int, expected: int, per_run_s: float | None, phase: str):
        now = time.perf_counter()
        if on_progress is None or now - last_report[0] < PROGRESS_EVERY_S:
            return
        last_report[0] = now
        fraction = (size_index + min(1.0, done / max(1, expected))) / max(1, len(sizes))
        eta = f" · about {_duration(per_run_s * (expected - done))} left at this batch size" if per_run_s else ""
        on_progress(min(1.0, fraction), f"timing batch {batch}: run {done} of ~{expected}{phase}{eta}")

    for size_index, batch in enumerate(sizes):
        feed = batch_inputs(inputs, input_specs, batch)
        # Expected runs of this batch size: warm-up, then `runs` capped by max_seconds (at least 10), re-estimated
        # from the measured time per run as it comes.
        expected = warmup + runs
        started = time.perf_counter()
        for i in range(warmup):
            session.run(None, feed)
            per_run = (time.perf_counter() - started) / (i + 1)
            expected = warmup + min(runs, max(10, int(max_seconds / per_run) + 1))
            report(size_index, batch, i + 1, expected, per_run, " (warm-up)")
            if should_stop():
                break
        times = []
        energy_before = counter.read() if counter.available else None
        cpu_before, wall_before = _cpu_seconds(), time.perf_counter()
        deadline = time.perf_counter() + max_seconds
        while len(times) < runs and (len(times) < 10 or time.perf_counter() < deadline):
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)
            if should_stop():
                break
            per_run = (time.perf_counter() - wall_before) / len(times)
            expected = warmup + min(runs, max(10, int(max_seconds / per_run) + 1))
            report(size_index, batch, warmup + len(times), expected, per_run, "")
        cpu_s, wall_s = _cpu_seconds() - cpu_before, time.perf_counter() - wall_before
        energy_after = counter.read() if energy_before is not None else None
        samples = batch * len(times)
        ms = np.array(times) * 1000.0
        latency[str(batch)] = {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                               "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "runs": len(ms)}
        throughput[str(batch)] = float(batch / (ms.mean() / 1000.0))
        cpu_ms[str(batch)] = cpu_s * 1000.0 / samples
        used = counter.joules(energy_before, energy_after, wall_s)
        if used is not None:
            joules[str(batch)] = used / samples
    energy_note = counter.reason if not counter.available else (
        None if len(joules) == len(sizes) else "some timing windows were too short for the energy counters")
    return {"latency_ms": latency, "throughput": throughput, "note": note, "cpu_ms_per_sample": cpu_ms,
            "energy": {"joules_per_sample": joules, "source": counter.source if joules else None,
                       "note": energy_note}}


def _duration(seconds: float) -> str:
    """A short human duration for ETAs: '8 s', '3 min', '1.5 h'."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cpu_seconds() -> float:
    """CPU seconds used by this process, all threads. getrusage, not time.process_time(): once a CPU-time limit
    (RLIMIT_CPU, set in job workers) arms the kernel's process timer, process_time() only advances per scheduler
    tick (4 ms measured here), while getrusage stays at microseconds."""
    try:
        import resource
    except ImportError:  # Windows
        return time.process_time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
        "cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
    }


__all__ = ["CONFIDENT_MARGIN", "INT8_FAST_FLAGS", "INT8_ISAS", "benchmark", "class_probabilities", "environment",
           "fidelity", "int8_fast", "int8_isa", "prediction_changes", "top1_margin", "topk_of", "logical_params",
           "size_bytes", "compressed_bytes", "retrieval_accuracy"]
