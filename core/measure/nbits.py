"""MatMulNBits' accuracy_level for this CPU: level 4 (int8 compute) where a measurement says it is faster than level 0,
timed by the project's one method and cached per CPU and library version.

MatMulNBits (int4 and int8 weight-only matrices, what onnxruntime-genai's builder writes for decoders) multiplies in
fp32 at accuracy_level 0 and in int8 at level 4: the activation row is quantized per block and multiplied with int8
dot products (VNNI / AMX, or AVX2's 16-bit sums). Which is faster depends on onnxruntime's kernels for this CPU
(issue 28 measured tiny-lm's int8 decode at 0.07x fp32 at level 0 and 1.6x at level 4), so "auto" measures instead
of guessing: one MatMulNBits of a decode-sized weight, at batch 1, at both levels, timed interleaved in rounds
(`core.measure.timing`). Level 4 is chosen when its speed-up's whole 95% interval is above 1; otherwise level 0,
which keeps activations in fp32 (slightly closer to fp32) at no measured cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from core.io.files import write_atomic
from core.io.model import cache_dir
from core.measure.quality import cpu_info
from core.measure.timing import time_in_rounds
from core.spec.recipe import AUTO_ACCURACY_LEVEL
LEVELS_COMPARED = (0, 4)  # fp32 compute (the runtime's default) and int8 compute
CACHE_FILE = "matmulnbits_accuracy_level.json"
# The weight timed: 2048 x 2048 (a 0.5B decoder's attention projections are 896-1024 wide, its MLP 4864; tiny-lm's
# 192-512). At 4 bits it is 2 MiB, at 8 bits 4 MiB: a kernel comparison, not a DRAM one, which is what the level
# changes. Batch 1 (one row), the shape every decoded token multiplies.
PROBE_K = PROBE_N = 2048
PROBE_BLOCK = 32  # the builder's default block size
# Rounds: enough for the interval to settle on a 2-core shared machine (about 2 s per bit width here).
PROBE_SECONDS = 4.0


def cache_key() -> str:
    """This CPU (model name and instruction-set flags) and the onnxruntime (and -genai) versions, as a short digest."""
    import onnxruntime

    model, flags = cpu_info()
    try:  # onnxruntime-genai runs onnxruntime's kernels; its version is recorded too, in case it ships its own
        genai = importlib.metadata.version("onnxruntime-genai")
    except importlib.metadata.PackageNotFoundError:
        genai = "none"
    text = f"{model}|{' '.join(sorted(flags))}|onnxruntime {onnxruntime.__version__}|onnxruntime-genai {genai}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _probe_models(bits: int) -> dict[int, bytes]:
    """One MatMulNBits model per compared level (same random weights), serialized."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((PROBE_K, PROBE_N)) * 0.02).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="probe")], "nbits_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, PROBE_K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, PROBE_N])],
        [numpy_helper.from_array(weight, "w")])
    models = {}
    quiet = logging.getLogger("onnxruntime.quantization")
    previous = quiet.level
    quiet.setLevel(logging.WARNING)  # the quantizer logs two INFO lines per weight
    for level in LEVELS_COMPARED:
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        quantizer = MatMulNBitsQuantizer(proto, bits=bits, block_size=PROBE_BLOCK, is_symmetric=True,
                                         accuracy_level=level)
        quantizer.process()
        packed = quantizer.model.model
        if not any(n.op_type == "MatMulNBits" for n in packed.graph.node):
            raise RuntimeError(f"onnxruntime's quantizer wrote no MatMulNBits for {bits}-bit weights")
        models[level] = packed.SerializeToString()
    quiet.setLevel(previous)
    return models


def measure_levels(bits: int, *, max_seconds: float = PROBE_SECONDS) -> dict:
    """Time MatMulNBits at level 0 and level 4 for `bits`-bit weights, interleaved in rounds (1 thread).

    Returns:
        ``{"bits", "level", "speedup": {ratio, low, high, rounds, converged} of level 4 over level 0,
        "us_per_call": {level: p50}, "contention", "shape"}``; ``level`` is 4 when the whole interval is above 1.
    """
    from core.io.runtime import make_session

    models = _probe_models(bits)
    x = np.random.default_rng(1).standard_normal((1, PROBE_K)).astype(np.float32)
    sessions = {level: make_session(blob, 1) for level, blob in models.items()}
    runners: dict[str, Callable[[], object]] = {
        f"level{level}": (lambda s=session: s.run(None, {"x": x})) for level, session in sessions.items()}
    timing = time_in_rounds(runners, "level0", max_seconds=max_seconds)
    speedup = timing.speedup["level4"]
    return {"bits": bits, "level": 4 if speedup.low > 1.0 else 0, "speedup": speedup.to_dict(),
            "us_per_call": {name[5:]: round(lat["p50"] * 1000.0, 2) for name, lat in timing.latency_ms.items()},
            "contention": timing.contention, "shape": [1, PROBE_K, PROBE_N], "block_size": PROBE_BLOCK}


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock beside the cache file, so two workers never time the kernels at once (each would slow the
    other's measurement) and the second reads what the first wrote."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic write still keeps the file whole
        yield
        return
    with open(path.with_suffix(".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def level_choice(bits: int, *, measure: Callable[[int], dict] = measure_levels,
                 directory: str | Path | None = None) -> dict:
    """The accuracy level for `bits`-bit MatMulNBits on this CPU and onnxruntime, measured once and cached.

    The cache (`CACHE_FILE` in the cache directory) maps `cache_key()` to each bit width's measurement; it is
    written atomically under a lock, so concurrent workers measure once between them.

    Args:
        bits: 4 or 8.
        measure: the measurement (tests pass a fake one).
        directory: the cache directory (default `core.io.model.cache_dir()`).

    Returns:
        The measurement (`measure_levels`' dict) plus ``"cached"``: whether it came from the cache.
    """
    if bits not in (4, 8):
        raise ValueError(f"bits={bits!r} is not supported; allowed: 4, 8")
    path = Path(directory) if directory is not None else cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    path = path / CACHE_FILE
    key = cache_key()
    found = _read(path).get(key, {}).get(str(bits))
    if isinstance(found, dict) and found.get("level") in LEVELS_COMPARED:
        return {**found, "cached": True}
    with _locked(path):
        data = _read(path)
        found = data.get(key, {}).get(str(bits))
        if isinstance(found, dict) and found.get("level") in LEVELS_COMPARED:
            return {**found, "cached": True}
        measured = measure(bits)
        data.setdefault(key, {})[str(bits)] = measured
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    return {**measured, "cached": False}


def resolve_level(level, bits: int) -> tuple[int, dict | None]:
    """An accuracy_level as a recipe gives it: an int is kept, "auto" becomes this CPU's choice.

    Returns:
        (the level, the choice that made it: `level_choice`'s dict, or None for an explicit level).
    """
    if level == AUTO_ACCURACY_LEVEL:
        choice = level_choice(bits)
        return int(choice["level"]), choice
    return int(level), None


def choice_text(choice: dict) -> str:
    """One line for results and notes: which level "auto" chose here and the measurement behind it."""
    speedup = choice.get("speedup") or {}
    return (f"accuracy_level auto -> {choice.get('level')}: on this CPU, {choice.get('bits')}-bit MatMulNBits at "
            f"level 4 (int8 compute) ran {speedup.get('ratio', float('nan')):.2f}x level 0's speed "
            f"(95% interval {speedup.get('low', float('nan')):.2f}-{speedup.get('high', float('nan')):.2f}, "
            f"{speedup.get('rounds', 0)} interleaved rounds, a {PROBE_K}x{PROBE_N} weight at batch 1)")


__all__ = ["CACHE_FILE", "LEVELS_COMPARED", "cache_key", "choice_text", "level_choice", "measure_levels",
           "resolve_level"]
