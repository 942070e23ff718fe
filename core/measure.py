"""Measurement: size, parameters, accuracy and fidelity against the baseline, and latency percentiles."""

from __future__ import annotations

import os
import platform
import time
import zlib
from dataclasses import dataclass

import numpy as np

from core.errors import BadInputError
from core.models import onnx_opset

EVAL_BATCH = 256
# Flags that decide which int8 / fp16 kernels onnxruntime can use on this CPU.
CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve", "i8mm")


def make_session(model_bytes: bytes, threads: int = 1):
    """An onnxruntime CPU session with fixed thread counts and full graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])


def run_batched(session, inputs: dict, batch: int = EVAL_BATCH) -> list[np.ndarray]:
    """Run all samples through the session in batches; return every output, concatenated."""
    n = len(next(iter(inputs.values())))
    names = [i.name for i in session.get_inputs()]
    chunks: list[list[np.ndarray]] = []
    for start in range(0, n, batch):
        feed = {k: inputs[k][start:start + batch] for k in names}
        chunks.append(session.run(None, feed))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


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


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    denominator = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(denominator > 0, (a * b).sum(axis=1) / np.maximum(denominator, 1e-30), 1.0)


def fidelity(outputs: list[np.ndarray], baseline_outputs: list[np.ndarray] | None, labels: np.ndarray | None,
             task: str) -> Fidelity:
    """Accuracy (labels), top-1 agreement (classifiers) and cosine to the baseline (other outputs)."""
    first = outputs[0]
    accuracy = agreement = cos_mean = cos_min = max_err = None
    if task == "classification":
        predictions = first.argmax(axis=1)
        if labels is not None:
            accuracy = float((predictions == labels).mean())
        if baseline_outputs is not None:
            agreement = float((predictions == baseline_outputs[0].argmax(axis=1)).mean())
    if baseline_outputs is not None:
        if task != "classification":
            cos = np.concatenate([_cosines(o, b) for o, b in zip(outputs, baseline_outputs)])
            cos_mean, cos_min = float(cos.mean()), float(cos.min())
        max_err = float(max(np.max(np.abs(o.astype(np.float64) - b)) for o, b in zip(outputs, baseline_outputs)))
    return Fidelity(accuracy, agreement, cos_mean, cos_min, max_err)


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
    fixed = {s.shape[0] for s in input_specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    if not fixed:
        return list(wanted), None
    only = fixed.pop()
    if list(wanted) == [only]:
        return [only], None
    return [only], f"the model's batch axis is fixed at {only}; other batch sizes cannot be timed"


def benchmark(model_bytes: bytes, input_specs, inputs: dict, batch_sizes, *, threads: int = 1, warmup: int = 20,
              runs: int = 200, max_seconds: float = 10.0, should_stop=lambda: False) -> dict:
    """Time single-session inference per batch size.

    Warm-up runs are excluded; at least 10 timed runs are made, then timing stops at `runs` or `max_seconds`.

    Returns:
        ``{"latency_ms": {bs: {p50, p90, p99, mean, runs}}, "throughput": {bs: samples/s}, "note": str|None}``
        with batch sizes as strings (JSON keys).
    """
    session = make_session(model_bytes, threads)
    sizes, note = possible_batch_sizes(input_specs, batch_sizes)
    latency: dict[str, dict] = {}
    throughput: dict[str, float] = {}
    for batch in sizes:
        feed = batch_inputs(inputs, input_specs, batch)
        for _ in range(warmup):
            session.run(None, feed)
        times = []
        deadline = time.perf_counter() + max_seconds
        while len(times) < runs and (len(times) < 10 or time.perf_counter() < deadline):
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)
            if should_stop():
                break
        ms = np.array(times) * 1000.0
        latency[str(batch)] = {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                               "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "runs": len(ms)}
        throughput[str(batch)] = float(batch / (ms.mean() / 1000.0))
    return {"latency_ms": latency, "throughput": throughput, "note": note}


def _cpu_info() -> tuple[str, set]:
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


def environment(threads: int) -> dict:
    """The machine and library versions a run was measured with."""
    import onnx
    import onnxruntime
    import torch

    model, flags = _cpu_info()
    return {
        "cpu": model,
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
    }


def check_runs(model_bytes: bytes, inputs: dict) -> None:
    """Load the model in onnxruntime and run one sample, turning failures into one-line errors."""
    try:
        session = make_session(model_bytes)
        session.run(None, {k: v[:1] for k, v in inputs.items()})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several exception types
        raise BadInputError(f"onnxruntime cannot run the model: {str(exc).splitlines()[0][:300]}") from None


__all__ = ["benchmark", "environment", "fidelity", "logical_params", "make_session", "run_batched",
           "size_bytes", "compressed_bytes", "onnx_opset", "check_runs"]
