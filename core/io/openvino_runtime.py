"""OpenVINO's CPU plugin: import it (and NNCF) without telemetry, and compile an ONNX graph into a runner with fixed
threads, fp32 precision and a static batch."""

from __future__ import annotations

import contextlib
import importlib
import os
import threading

import numpy as np

from core.errors import UnsupportedModelError

# `import openvino` runs openvino.tools.ovc's telemetry set-up, which without a consent file counts as consent: it
# writes a client id under ~/intel and sends an "ov import" event to Google Analytics from a thread (measured with
# openvino 2026.4.1 / openvino-telemetry 2025.2.0: a ThreadPoolExecutor thread appears, and ~/intel/openvino_ga_cid).
# NNCF's telemetry does the same at `import nncf`. Both set up with `disable_in_ci=True`, and CI=true is the one
# switch both read before touching the disk or the network; NNCF_CI=1 also swaps NNCF's telemetry for its stub.
# The variables are set only around the import (the telemetry objects are built then), so nothing else in the
# process sees CI=true.
_OFFLINE_ENV = {"CI": "true", "NNCF_CI": "1"}
_IMPORT_LOCK = threading.Lock()

# OpenVINO's CPU plugin runs fp32 models in bf16 on CPUs with AMX / AVX-512 BF16 unless told otherwise (its
# INFERENCE_PRECISION_HINT default), which would time a different model than onnxruntime's fp32 and lose accuracy;
# f32 keeps the comparison the same model. LATENCY with one stream is the single-request mode the benchmark times.
CPU_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32",
              # pinning stays with the process (the timing phase pins the process to its cores)
              "ENABLE_CPU_PINNING": False}
# The CPU plugin's layer types that do a model's arithmetic (its runtime graph names them so; elementwise work is
# fused into "Subgraph" / "Eltwise" layers), whose runtime precision says whether int8 kernels ran.
HEAVY_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")


def import_offline(name: str):
    """Import `openvino` or `nncf` (or one of their modules) with their telemetry off: nothing is written under
    ~/intel and nothing is sent. Later imports return the module already loaded."""
    with _IMPORT_LOCK:
        saved = {key: os.environ.get(key) for key in _OFFLINE_ENV}
        os.environ.update(_OFFLINE_ENV)
        try:
            return importlib.import_module(name)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class OpenVinoRunner:
    """One ONNX graph compiled by OpenVINO's CPU plugin for one input shape; `run(feed)` returns every output."""

    runtime = "openvino"

    def __init__(self, model_bytes: bytes, threads: int = 1, batch: int | None = None):
        ov = import_offline("openvino")
        core = ov.Core()
        try:
            model = core.read_model(model_bytes)
        except Exception as exc:  # noqa: BLE001 - the ONNX frontend raises its own types
            raise UnsupportedModelError(f"OpenVINO cannot read this graph: {_first_line(exc)}") from None
        self.input_names = [port.get_any_name() for port in model.inputs]
        self.output_count = len(model.outputs)
        if batch is not None:
            shapes = {}
            for port in model.inputs:
                shape = port.get_partial_shape()
                if shape.rank.is_static and len(shape) > 0:
                    dims = [batch] + [d.get_length() if d.is_static else -1 for d in list(shape)[1:]]
                    shapes[port.get_any_name()] = dims
            if shapes:
                model.reshape(shapes)
        self.batch = batch
        config = {**CPU_CONFIG, "INFERENCE_NUM_THREADS": int(threads)}
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001 - an operator the CPU plugin lacks, a shape it cannot infer
            raise UnsupportedModelError(f"OpenVINO's CPU plugin cannot compile this graph: {_first_line(exc)}") \
                from None
        self.request = self.compiled.create_infer_request()

    def run(self, feed: dict) -> list[np.ndarray]:
        """One inference; outputs in the graph's order (copied: the request reuses its buffers)."""
        results = self.request.infer({name: np.ascontiguousarray(feed[name]) for name in self.input_names})
        return [np.array(results[i]) for i in range(self.output_count)]

    def bind(self, feed: dict):
        """One inference on `feed` as a zero-argument call, for the timing rounds: the infer request's own call
        (its inputs bound once, outputs left in the request's buffers, as an application reads them)."""
        request = self.request
        inputs = {name: np.ascontiguousarray(feed[name]) for name in self.input_names}
        return lambda: request.infer(inputs)

    def kernel_precisions(self) -> dict:
        """The precision OpenVINO's compiled graph runs its heavy layers in (convolutions, fully connected,
        matmuls), read from the runtime model: ``{"int8": n, "float": m, "float_layers": [first names]}``.

        An int8 graph whose Q/DQ pairs the plugin fused runs those layers in u8/i8; a layer left in float is a
        Q/DQ pair it did not fuse (or a layer the quantizer kept in float).
        """
        counts = {"int8": 0, "float": 0, "float_layers": []}
        try:
            ops = self.compiled.get_runtime_model().get_ordered_ops()
        except Exception:  # noqa: BLE001 - a plugin without a runtime model: nothing to report
            return counts
        for op in ops:
            info = op.get_rt_info()
            layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            if layer not in HEAVY_LAYERS:
                continue
            precision = info["runtimePrecision"].astype(str).lower() if "runtimePrecision" in info else ""
            if precision in ("u8", "i8"):
                counts["int8"] += 1
            else:
                counts["float"] += 1
                if len(counts["float_layers"]) < 10:
                    counts["float_layers"].append(op.get_friendly_name())
        return counts

    def settings(self) -> dict:
        """What the plugin was compiled with, as it reports it back (threads, precision, streams)."""
        out = {}
        for key in ("INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "NUM_STREAMS", "PERFORMANCE_HINT"):
            with contextlib.suppress(Exception):
                out[key.lower()] = str(self.compiled.get_property(key))
        return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # OpenVINO's messages start with a C++ source location ("Exception from src/...cpp:123:"); the cause follows
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return ((useful or lines or [exc.__class__.__name__])[0])[:300]


__all__ = ["CPU_CONFIG", "HEAVY_LAYERS", "OpenVinoRunner", "import_offline"]
