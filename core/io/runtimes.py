"""The runtimes a variant can be timed on: which file each reads, whether it is installed here, and one way to open a
runner (`run(feed) -> outputs`) for any of them with the same threads."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass

import numpy as np

from core.errors import BadInputError
from core.io import executorch_runtime, openvino_runtime
from core.io import runtime as ort_runtime


@dataclass(frozen=True)
class RuntimeInfo:
    """One runtime: its recipe name, how it is shown, the artifact it reads, the package and extra it needs."""

    name: str
    label: str
    reads: str  # "onnx" | "pte"
    package: str  # the importable module that must be installed
    extra: str | None  # the pyproject extra that installs it (None: always installed)
    symbol: str  # its marker shape on Compare's Pareto chart (plotly symbol name)


RUNTIMES: dict[str, RuntimeInfo] = {info.name: info for info in (
    RuntimeInfo("onnxruntime", "onnxruntime", "onnx", "onnxruntime", None, "circle"),
    RuntimeInfo("openvino", "OpenVINO", "onnx", "openvino", "openvino", "square"),
    RuntimeInfo("executorch", "ExecuTorch (XNNPACK)", "pte", "executorch", "edge", "triangle-up"),
)}
REFERENCE_RUNTIME = "onnxruntime"  # every cross-runtime ratio and fidelity check is against it
# Batch of the fidelity pass on runtimes compiled for a static shape (OpenVINO): the last chunk is padded.
FIDELITY_BATCH = 32


def runtime_info(name: str) -> RuntimeInfo:
    """The registry entry of `name`.

    Raises:
        BadInputError: an unknown runtime (the message names the allowed ones).
    """
    if not isinstance(name, str) or name not in RUNTIMES:
        raise BadInputError(f"runtime {name!r} is not supported; allowed: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def runtime_label(name: str) -> str:
    """How a runtime is shown ("OpenVINO"); an unknown name as it is."""
    return RUNTIMES[name].label if name in RUNTIMES else str(name)


def missing_reason(name: str) -> str | None:
    """Why `name` cannot run here (its package is not installed, with the extra that installs it), or None."""
    info = runtime_info(name)
    if importlib.util.find_spec(info.package) is not None:
        return None
    extra = f" (pip install 'featherweight[{info.extra}]', or `make setup`)" if info.extra else ""
    return f"{info.label} is not installed{extra}"


def versions(names) -> dict:
    """The installed release of each runtime in `names` (None where it is missing)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(runtime_info(name).package)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# onnxruntime's operators after its graph optimizations that do a model's arithmetic: in int8 (fused Q/DQ pairs,
# dynamic quantization) or in float (what a Q/DQ pair around a float op leaves when it is not fused).
ORT_INT8_OPS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger",
                          "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "NhwcQLinearConv", "QAttention"})
ORT_FLOAT_OPS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose",
                           "NhwcFusedConv", "Attention"})


class OnnxRuntimeRunner:
    """onnxruntime's CPU session (`core.io.runtime.make_session`) behind the runner interface."""

    runtime = "onnxruntime"

    def __init__(self, model_bytes: bytes, threads: int = 1):
        self.session = ort_runtime.make_session(model_bytes, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.batch = ort_runtime.session_fixed_batch(self.session)
        self.model_bytes = model_bytes

    def run(self, feed: dict) -> list[np.ndarray]:
        return self.session.run(None, {name: feed[name] for name in self.input_names})

    def bind(self, feed: dict):
        """One inference on `feed` as a zero-argument call, for the timing rounds: the session's own call, nothing
        around it."""
        session = self.session
        inputs = {name: feed[name] for name in self.input_names}
        return lambda: session.run(None, inputs)

    def kernel_precisions(self) -> dict:
        """The precision the heavy layers run in after onnxruntime's graph optimizations (the level the session
        times at): ``{"int8": n, "float": m, "float_layers": [first names]}``, as OpenVINO's runner reports."""
        return ort_kernel_precisions(self.model_bytes)


def ort_kernel_precisions(model_bytes: bytes) -> dict:
    """Heavy layers of `model_bytes` in int8 / float once onnxruntime has optimized the graph (fused the Q/DQ pairs
    it knows), read from the optimized graph it saves."""
    counts = {"int8": 0, "float": 0, "float_layers": []}
    for node in ort_runtime.optimized_graph(model_bytes, "all").node:
        if node.op_type in ORT_INT8_OPS:
            counts["int8"] += 1
        elif node.op_type in ORT_FLOAT_OPS:
            counts["float"] += 1
            if len(counts["float_layers"]) < 10:
                counts["float_layers"].append(node.name)
    return counts


def open_runner(name: str, artifact: bytes, threads: int = 1, *, batch: int | None = None,
                input_names: list[str] | None = None):
    """A runner of `artifact` (ONNX bytes, or a .pte program for ExecuTorch) on runtime `name`.

    Args:
        batch: the batch size the runner will be called with. OpenVINO compiles for exactly that shape (its
            recommended deployment: static shapes); onnxruntime and ExecuTorch take any batch their graph allows.
        input_names: ExecuTorch's positional inputs, in order (a .pte has no input names).

    Raises:
        BadInputError: an unknown runtime. UnsupportedModelError: the runtime cannot load or compile the graph.
    """
    runtime_info(name)
    if name == "onnxruntime":
        return OnnxRuntimeRunner(artifact, threads)
    if name == "openvino":
        return openvino_runtime.OpenVinoRunner(artifact, threads, batch)
    return executorch_runtime.ExecuTorchRunner(artifact, threads, input_names)


def run_all(runner, inputs: dict, batch: int = FIDELITY_BATCH) -> list[np.ndarray]:
    """Every sample of `inputs` through `runner` in batches of `batch` (or of the runner's own fixed batch), the
    outputs concatenated (`core.io.runtime.run_in_batches`)."""
    names = list(getattr(runner, "input_names", None) or inputs)
    return ort_runtime.run_in_batches(runner.run, names, inputs, batch, getattr(runner, "batch", None))


__all__ = ["FIDELITY_BATCH", "ORT_FLOAT_OPS", "ORT_INT8_OPS", "ort_kernel_precisions", "REFERENCE_RUNTIME", "RUNTIMES", "OnnxRuntimeRunner", "RuntimeInfo", "missing_reason",
           "open_runner", "run_all", "runtime_info", "runtime_label", "versions"]
