"""Decoder variants: fp32, int8 and int4 (MatMulNBits) ONNX decoders with a KV cache, built by onnxruntime-genai.

The conversion is onnxruntime-genai's own model builder (``onnxruntime_genai.models.builder.create_model``), not an
exporter of ours: it writes ``model.onnx`` (+ ``model.onnx.data``) with GroupQueryAttention and past/present KV
inputs, and ``genai_config.json`` for onnxruntime-genai's generator. A recipe variant maps to a build:

- no steps (the baseline): ``precision fp32``;
- ``{technique: quantize, mode: int4, block_size, accuracy_level}``: ``precision int4``, every MatMul's weights
  in 4-bit blocks (MatMulNBits, symmetric, round-to-nearest);
- ``{technique: quantize, mode: dynamic, ...}``: ``precision int8``, 8-bit weight-only MatMulNBits (the decoder
  counterpart of dynamic int8: weights int8, activations in float unless accuracy_level 4).

Static int8, fp16 (CPU), pruning and distillation of decoders are not offered; they fail with one line.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import BadInputError, FeatherweightError, StepFailedError, UnsupportedModelError
from core.io.decoder import DecoderCheckpoint, open_folder
from core.measure.nbits import choice_text, resolve_level
from core.spec.recipe import QuantizeConfig

PRECISIONS = ("fp32", "int8", "int4")
# Block sizes the builder accepts for MatMulNBits (builder.py's extra_options help: 16/32/64/128/256).
BUILDER_BLOCK_SIZES = (16, 32, 64, 128, 256)
DECODER_MODES = {"int4": "int4", "dynamic": "int8"}  # quantize.mode -> builder precision
PRECISION_BITS = {"int4": 4, "int8": 8}


@dataclass(frozen=True)
class DecoderBuild:
    """What the model builder is asked for: precision, and for int4 / int8 the block size and accuracy level."""

    precision: str = "fp32"
    block_size: int = 32
    accuracy_level: int = 0
    level_choice: dict | None = field(default=None, compare=False)  # the measurement behind an "auto" level

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise BadInputError(f"decoder precision={self.precision!r} is not supported; allowed: "
                                f"{', '.join(PRECISIONS)}")
        if self.block_size not in BUILDER_BLOCK_SIZES:
            raise BadInputError(f"quantize.block_size={self.block_size} is not supported for decoders; allowed: "
                                f"{', '.join(str(b) for b in BUILDER_BLOCK_SIZES)}")

    def extra_options(self) -> list[str]:
        """The builder's KEY=VALUE options (never hf_remote: no checkpoint code runs)."""
        options = ["hf_token=false", "hf_remote=false"]
        if self.precision in ("int4", "int8"):
            options += [f"block_size={self.block_size}", f"accuracy_level={self.accuracy_level}"]
        return options

    def to_dict(self) -> dict:
        out = {"precision": self.precision, "block_size": self.block_size if self.precision != "fp32" else None,
               "accuracy_level": self.accuracy_level if self.precision != "fp32" else None}
        if self.level_choice is not None:
            out["accuracy_level_auto"] = choice_text(self.level_choice)
        return out


def checked_step(steps) -> QuantizeConfig | None:
    """The one quantize step a decoder variant may have (None for the fp32 baseline), checked without measuring
    anything: cheap enough for a form to call on every redraw.

    Raises:
        UnsupportedModelError: a step decoders do not support (the message names the supported ones).
        BadInputError: a block size the builder refuses.
    """
    steps = tuple(steps)
    if not steps:
        return None
    if len(steps) > 1 or not isinstance(steps[0], QuantizeConfig):
        names = ", ".join(s.technique for s in steps)
        raise UnsupportedModelError(f"decoders take one quantize step (mode int4 or dynamic), got: {names}; "
                                    "pruning and distillation of decoders are not offered")
    step = steps[0]
    if step.mode not in DECODER_MODES:
        raise UnsupportedModelError(f"quantize.mode={step.mode!r} is not offered for decoders; allowed: "
                                    f"{', '.join(DECODER_MODES)} (int4 / int8 weight-only MatMulNBits)")
    if step.exclude:
        raise UnsupportedModelError("quantize.exclude is not offered for decoders (the builder names its own nodes)")
    DecoderBuild(DECODER_MODES[step.mode], step.block_size)  # the builder's block sizes
    return step


def build_for_steps(steps) -> DecoderBuild:
    """The build a variant's steps ask for, with an "auto" accuracy level resolved for this CPU
    (`core.measure.nbits`: measured once per CPU and onnxruntime version, then cached).

    Raises:
        UnsupportedModelError / BadInputError: as `checked_step`.
    """
    step = checked_step(steps)
    if step is None:
        return DecoderBuild("fp32")
    precision = DECODER_MODES[step.mode]
    level, choice = resolve_level(step.accuracy_level, PRECISION_BITS[precision])
    return DecoderBuild(precision, step.block_size, level, choice)


def refusal(steps) -> str | None:
    """Why a variant's steps cannot build on a decoder (the one-line error), or None when they can."""
    try:
        checked_step(steps)
    except (BadInputError, UnsupportedModelError) as exc:
        return str(exc)
    return None


# A build in its own process: the builder loads the checkpoint in torch and keeps copies while it writes the ONNX
# weights; in the calling process that memory stays (measured: a job that built a ~0.5B model's fp32, int4 and int8
# variants in-process held 9.2 GB afterwards, over the 8 GiB a job worker may map). A child returns all of it.
BUILD_TIMEOUT_S = 3600


def build_decoder_isolated(checkpoint: DecoderCheckpoint, build: DecoderBuild, out_dir: str | Path, *,
                           threads: int = 1) -> Path:
    """`build_decoder` in a fresh Python process (``python -m core.techniques.decoder``), so that what the builder
    allocates is returned to the system when it ends; the child inherits this process's resource limits.

    Raises:
        StepFailedError: the build failed, ran out of memory or time (the child's last message line is kept).
    """
    request = {"folder": str(checkpoint.folder), "source": checkpoint.source, "out_dir": str(out_dir),
               "precision": build.precision, "block_size": build.block_size, "accuracy_level": build.accuracy_level,
               "threads": int(threads)}
    root = str(Path(__file__).resolve().parents[2])
    try:
        done = subprocess.run([sys.executable, "-m", "core.techniques.decoder", json.dumps(request)],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=root)
    except subprocess.TimeoutExpired:
        raise StepFailedError(f"building {build.precision} took over {BUILD_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stdout + "\n" + done.stderr).splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if line.startswith("error: ")), None)
        if last is None:
            last = "error: " + (f"the build process was killed (signal {-done.returncode}: out of memory?)"
                                if done.returncode < 0 else (lines[-1][:300] if lines else "no output"))
        raise StepFailedError(last[len("error: "):])
    return Path(out_dir)


def _build_child(argv: list[str]) -> int:
    request = json.loads(argv[0])
    try:
        checkpoint = open_folder(request["folder"], request["source"])
        build_decoder(checkpoint, DecoderBuild(request["precision"], request["block_size"],
                                               request["accuracy_level"]), request["out_dir"],
                      threads=request["threads"])
    except FeatherweightError as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}", flush=True)
        return 1
    except MemoryError:
        print("error: the builder ran out of memory", flush=True)
        return 1
    return 0


def build_decoder(checkpoint: DecoderCheckpoint, build: DecoderBuild, out_dir: str | Path, *,
                  threads: int = 1) -> Path:
    """Build one ONNX decoder (with KV cache) from `checkpoint` into `out_dir` with onnxruntime-genai's builder, in
    this process (`build_decoder_isolated` runs it in a child).

    The builder's own prints and progress bars are captured, not shown. ``genai_config.json`` gets the
    intra-op thread count, so every variant runs on the same number of threads.

    Returns:
        `out_dir`, holding model.onnx, model.onnx.data, genai_config.json and the tokenizer files.

    Raises:
        StepFailedError: the builder failed (its last message line is kept).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the Hub
    # onnxruntime_genai's builder imports torch and transformers (seconds): imported here, where it is needed.
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    captured = io.StringIO()
    quant_logger = logging.getLogger("onnxruntime.quantization")
    level = quant_logger.level
    quant_logger.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="featherweight-builder-") as cache, \
                contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            options = parse_extra_options("", str(checkpoint.folder), str(out_dir), build.precision, "cpu", cache,
                                          build.extra_options())
            create_model("", str(checkpoint.folder), str(out_dir), build.precision, "cpu", cache, **options)
    except Exception as exc:  # noqa: BLE001 - the builder raises many types; keep its message, one line
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc.__class__.__name__
        raise StepFailedError(f"onnxruntime-genai's builder failed for {build.precision}: {first}") from None
    finally:
        quant_logger.setLevel(level)
    set_threads(out_dir, threads)
    return out_dir


def set_threads(model_dir: Path, threads: int) -> None:
    """Write the intra-op thread count into a built decoder's genai_config.json."""
    path = Path(model_dir) / "genai_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = int(threads)
    options["inter_op_num_threads"] = 1
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def onnx_bytes(model_dir: Path) -> int:
    """Bytes of a built decoder's weights and graph (model.onnx + its external data), tokenizer files excluded."""
    return sum(p.stat().st_size for p in Path(model_dir).iterdir()
               if p.name.endswith(".onnx") or p.name.endswith(".onnx.data"))


__all__ = ["BUILDER_BLOCK_SIZES", "BUILD_TIMEOUT_S", "DECODER_MODES", "DecoderBuild", "PRECISIONS", "PRECISION_BITS",
           "build_decoder", "build_decoder_isolated", "build_for_steps", "checked_step", "onnx_bytes", "refusal",
           "set_threads"]


if __name__ == "__main__":
    sys.exit(_build_child(sys.argv[1:]))
