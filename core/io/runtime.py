"""onnxruntime sessions: one way to open a CPU session (fixed threads, full graph optimization), run samples
through it in batches, and check that a graph runs at all. The one place that opens an InferenceSession."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from core.errors import BadInputError
from core.io.graph import fixed_batch_of


EVAL_BATCH = 256


def make_session(model_bytes: bytes | Path, threads: int = 1, *, profile_prefix: str | None = None):
    """An onnxruntime CPU session with fixed thread counts and full graph optimization; with `profile_prefix`,
    onnxruntime's per-operator profiler writes there. A path (rather than bytes) lets onnxruntime find the
    model's external data beside it (a decoder's model.onnx.data)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    source = str(model_bytes) if isinstance(model_bytes, Path) else model_bytes
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def optimized_graph(model_bytes: bytes, level: str = "all"):
    """The graph onnxruntime runs after its graph optimizations (`level`: "basic" or "all", the level sessions
    time at), as it saves it: which Q/DQ pairs it fused into int8 kernels, which weights it quantized at load."""
    import onnx  # heavy: loaded where a graph is inspected
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="fw-opt-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath, load_external_data=False).graph


def session_fixed_batch(session) -> int | None:
    """The batch size a session's inputs fix on axis 0, or None when it is symbolic."""
    return fixed_batch_of(session.get_inputs())


def run_batched(session, inputs: dict, batch: int = EVAL_BATCH) -> list[np.ndarray]:
    """Run all samples through the session in batches; return every output, concatenated.

    A graph with a fixed batch axis gets batches of exactly that size (the last one padded, the padding's
    outputs dropped)."""
    return run_in_batches(lambda feed: session.run(None, feed), [i.name for i in session.get_inputs()], inputs,
                          batch, session_fixed_batch(session))


def run_in_batches(run, input_names: list[str], inputs: dict, batch: int,
                   fixed: int | None = None) -> list[np.ndarray]:
    """All samples of `inputs` through `run(feed) -> outputs` (any runtime's call) in batches of `batch`, or of
    exactly `fixed` when the model only takes that batch (the last chunk padded, the padding's outputs dropped);
    every output concatenated."""
    n = len(next(iter(inputs.values())))
    batch = fixed or batch
    chunks: list[list[np.ndarray]] = []
    for start in range(0, n, batch):
        feed = {k: inputs[k][start:start + batch] for k in input_names}
        real = len(next(iter(feed.values())))
        if fixed and real < fixed:
            feed = {k: np.resize(v, (fixed, *v.shape[1:])) for k, v in feed.items()}
            chunks.append([o[:real] if o.ndim and o.shape[0] == fixed else o for o in run(feed)])
        else:
            chunks.append(run(feed))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def check_runs(model_bytes: bytes, inputs: dict) -> None:
    """Load the model in onnxruntime and run one sample, turning failures into one-line errors."""
    try:
        session = make_session(model_bytes)
        count = session_fixed_batch(session) or 1
        session.run(None, {k: np.resize(v[:count], (count, *v.shape[1:])) for k, v in inputs.items()})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several exception types
        raise BadInputError(f"onnxruntime cannot run the model: {str(exc).splitlines()[0][:300]}") from None
