"""Recipes: plain, validated data describing which variants to build and how to measure them.

A recipe round-trips exactly through YAML/JSON. Example::

    model: sample:digits-cnn
    data: sample:digits
    seed: 0
    benchmark: {batch_sizes: [1, 256], threads: 1, warmup: 20, runs: 200}
    variants:
      - name: int8-static
        steps:
          - {technique: quantize, mode: static, per_channel: true, calibration: minmax, samples: 128}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from core.errors import BadInputError
from core.spec.checks import brief_repr, check_bool, check_choice, check_range

RECIPE_VERSION = 1
AUTO_ACCURACY_LEVEL = "auto"  # quantize.accuracy_level: MatMulNBits' level chosen for this CPU (core.measure.nbits)
# The runtimes a variant can be timed on (`benchmark.runtimes`; core.io.runtimes keeps what each one reads) and
# the runtimes a static int8 graph can be laid out for (`quantize.target`).
RUNTIME_NAMES = ("onnxruntime", "openvino", "executorch")
QUANTIZE_TARGETS = ("onnxruntime", "openvino")
MAX_VARIANT_NAME = 64  # characters; a variant's folder, labels and error lines carry its name
# ASCII letters, digits, space and -_.=,[]+ : a folder name on every file system, no path separator, nothing a
# terminal or Markdown reads as markup. Sweep names use []=, and the tuner's + (`grid[amount=0.25,mode=dynamic]`).
VARIANT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.=,[]+ ")


def key_list(keys, limit: int = 10) -> str:
    """Mapping keys for an error message: the first `limit`, each cut short (keys need not be strings)."""
    shown = sorted((k if len(k) <= 40 else k[:37] + "...") if isinstance(k, str) else brief_repr(k) for k in keys)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def _option(default: Any, help: str, choices: tuple | None = None, **extra: Any):
    """A dataclass field that carries its help text and allowed values, so forms can render it."""
    meta = {"help": help, "choices": choices, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def resolve_spec(spec: str | None, base: str | Path) -> str | None:
    """A model or data spec with a relative file path made absolute against `base` (and a leading ``~`` the
    user's home); ``sample:NAME``, an absolute path and None (no data) come back as they are.

    The command line resolves what a user types against their working directory, `Recipe.load` the recipe's
    `model:` / `data:` against the recipe file's folder; after that a path means the same file in every worker,
    in results.json and in the recipe.yaml a run writes, wherever they are read from.
    """
    if spec is None or not isinstance(spec, str) or not spec.strip() or spec.startswith("sample:"):
        return spec
    # "~/m.onnx" is the user's home in a recipe too, where no shell expands it
    return os.path.normpath(os.path.join(os.path.abspath(base), os.path.expanduser(spec)))


def slugify(name: str) -> str:
    """A file-system-safe directory name for a variant's artifacts."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass(frozen=True)
class StepConfig:
    """Base of every technique's config; `technique` names it in a recipe."""

    technique: ClassVar[str] = ""
    stage: ClassVar[str] = ""  # "torch" steps run before ONNX export, "onnx" steps after

    def to_dict(self) -> dict:
        out = {"technique": self.technique}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class QuantizeConfig(StepConfig):
    """Quantize the ONNX graph with onnxruntime's quantization tools."""

    technique: ClassVar[str] = "quantize"
    stage: ClassVar[str] = "onnx"
    MODES: ClassVar[tuple] = ("dynamic", "static", "fp16", "int4", "qat")
    CALIBRATIONS: ClassVar[tuple] = ("minmax", "entropy", "percentile")
    ROUNDINGS: ClassVar[tuple] = ("nearest", "learned")
    ACCURACY_LEVELS: ClassVar[tuple] = (AUTO_ACCURACY_LEVEL, 0, 1, 2, 3, 4)

    mode: str = _option("static", "dynamic: int8 weights, activations quantized at run time (MatMul/Gemm); "
                        "static: int8 weights and activations from calibration (QDQ); fp16: half-precision "
                        "weights; int4: 4-bit weight-only MatMul (MatMulNBits); qat: static int8 whose scales "
                        "and weights are fine-tuned with fake quantization (torch-backed models)", MODES)
    per_channel: bool = _option(True, "One scale per output channel instead of one per tensor (more accurate).")
    calibration: str = _option("minmax", "How static quantization picks activation ranges.", CALIBRATIONS)
    samples: int = _option(128, "Calibration inputs drawn from the calibration split.", minimum=1, maximum=100000)
    exclude: tuple = _option((), "Node names kept in float.")
    quantize_conv: bool = _option(False, "Dynamic mode only: also quantize Conv (usually several times slower "
                                  "on CPUs, since ConvInteger has no fast kernel).")
    block_size: int = _option(32, "int4 only: weights per quantization block (a power of two >= 16).")
    # MatMulNBits' accuracy_level (onnxruntime contrib op docs): the type activations are computed in.
    # onnxruntime PR #402 measured level 4 (int8) doubling int4 decode speed on CPU; issue 28 measured int8
    # weight-only decode at 0.07x fp32 at level 0. "auto" (core.measure.nbits) times both levels on this CPU.
    accuracy_level: int | str = _option(AUTO_ACCURACY_LEVEL, "int4, and int8 weight-only for decoders: what "
                                        "MatMulNBits computes in: auto (level 4 where it measured faster on this "
                                        "CPU, else 0), 0 the runtime's default (fp32), 1 fp32, 2 fp16, 3 bf16, "
                                        "4 int8 (activations quantized to int8 too).", ACCURACY_LEVELS)

    # Recovery steps (issue 18); defaults measured on shapes-mobile and digits-cnn, see README "Accuracy recovery".
    equalize: bool = _option(False, "Static / QAT: cross-layer equalization first (BN folded, conv pairs "
                             "rescaled through ReLU / ReLU6; exact in fp32), for per-tensor int8 of depthwise nets.")
    bias_correction: bool = _option(False, "Static / QAT: add each quantized Conv / Gemm's mean output shift "
                                    "against fp32, measured on the calibration data, back to its bias.")
    calibration_overrides: dict = _option({}, "Static: a calibration method per activation tensor "
                                          "({tensor: minmax | percentile | entropy}), overriding `calibration` "
                                          "(the tuner's per-tensor choice writes it); each kept only where the "
                                          "validation split improves.")
    weight_rounding: str = _option("nearest", "Static: how weights are rounded to int8. nearest: each to its "
                                   "closest level; learned: the levels that reproduce each layer's float output "
                                   "on the calibration data (AdaRound's objective, solved as GPTQ does), kept only "
                                   "where the validation split improves.", ("nearest", "learned"))
    smooth_quant: bool = _option(False, "Static: SmoothQuant for MatMul layers (transformers): move activation "
                                 "outliers into the weights per input channel (alpha 0.5), per MatMul input, "
                                 "kept only where the validation split improves.")
    epochs: int = _option(3, "QAT only: fine-tuning epochs over the train split (distilled from fp32, no "
                          "labels).", minimum=1, maximum=1000)
    lr: float = _option(1e-4, "QAT only: learning rate (Adam) for weights and quantizer scales.",
                        minimum=0.0, maximum=1.0)
    # Issue 30: onnxruntime fuses the Q/DQ layout of its own quantizer; OpenVINO fuses NNCF's (measured: NNCF's QDQ
    # ran 2.6x slower than fp32 on onnxruntime), so a static int8 graph is made for the runtime it will ship on.
    target: str = _option("onnxruntime", "Static only: the runtime the int8 graph is laid out for. onnxruntime: its "
                          "own QDQ quantizer; openvino: NNCF's post-training quantization (the `openvino` extra), "
                          "whose Q/DQ layout OpenVINO's CPU plugin fuses into int8 kernels.", QUANTIZE_TARGETS)

    def __post_init__(self):
        check_choice("quantize.mode", self.mode, self.MODES)
        check_choice("quantize.target", self.target, QUANTIZE_TARGETS)
        if self.target == "openvino":
            if self.mode != "static":
                raise BadInputError(f"quantize.target='openvino' needs mode 'static' (NNCF's post-training int8), "
                                    f"not {brief_repr(self.mode)}; other modes: target 'onnxruntime'")
            unsupported = [name for name, used in (("calibration", self.calibration != "minmax"),
                                                   ("equalize", self.equalize),
                                                   ("calibration_overrides", bool(self.calibration_overrides)),
                                                   ("weight_rounding", self.weight_rounding != "nearest"),
                                                   ("smooth_quant", self.smooth_quant))
                           if used]
            if unsupported:
                raise BadInputError(f"quantize.target='openvino' (NNCF) does not take {', '.join(unsupported)}; "
                                    "allowed with it: per_channel, samples, exclude, bias_correction")
        check_choice("quantize.calibration", self.calibration, self.CALIBRATIONS)
        check_bool("quantize.per_channel", self.per_channel)
        check_bool("quantize.quantize_conv", self.quantize_conv)
        check_bool("quantize.equalize", self.equalize)
        check_bool("quantize.bias_correction", self.bias_correction)
        check_bool("quantize.smooth_quant", self.smooth_quant)
        check_choice("quantize.weight_rounding", self.weight_rounding, self.ROUNDINGS)
        check_range("quantize.epochs", self.epochs, 1, 1000, integer=True)
        check_range("quantize.lr", self.lr, 0.0, 1.0, low_open=True)
        overrides = self.calibration_overrides
        if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
            raise BadInputError(f"quantize.calibration_overrides={brief_repr(overrides)} must be a mapping of "
                                "tensor name to calibration method")
        for tensor, method in overrides.items():
            check_choice(f"quantize.calibration_overrides[{brief_repr(tensor)}]", method, self.CALIBRATIONS)
        object.__setattr__(self, "calibration_overrides", dict(overrides))
        check_range("quantize.samples", self.samples, 1, 100000, integer=True)
        check_range("quantize.block_size", self.block_size, 16, 4096, integer=True)
        if self.block_size & (self.block_size - 1):
            raise BadInputError(f"quantize.block_size={self.block_size} must be a power of two")
        if isinstance(self.accuracy_level, bool):  # True == 1 would pass the choice check
            raise BadInputError(f"quantize.accuracy_level={self.accuracy_level!r} is not supported; allowed: "
                                f"{', '.join(str(c) for c in self.ACCURACY_LEVELS)}")
        check_choice("quantize.accuracy_level", self.accuracy_level, self.ACCURACY_LEVELS)
        exclude = self.exclude
        if isinstance(exclude, str) or not all(isinstance(n, str) for n in exclude):
            raise BadInputError(f"quantize.exclude={brief_repr(exclude)} must be a list of node names")
        object.__setattr__(self, "exclude", tuple(exclude))
        # An option the mode does not use takes its default: a recipe that spells every key still loads, two
        # configs that build the same model compare equal, and nothing written carries an unused key.
        used = SCHEME_FIELDS[self.mode]
        for f in dataclasses.fields(self):
            if f.name != "mode" and f.name not in used:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                object.__setattr__(self, f.name, tuple(default) if isinstance(default, list) else default)

    def scheme(self) -> "QuantizeScheme":
        """This step as its scheme's own config (`SCHEMES[mode]`), holding only the options the mode uses."""
        return SCHEMES[self.mode](**{name: getattr(self, name) for name in SCHEME_FIELDS[self.mode]})

    def to_dict(self) -> dict:
        return self.scheme().to_dict()

    def uses(self, option: str) -> bool:
        """Whether this step's mode reads `option` (the forms disable the others)."""
        return option == "mode" or option in SCHEME_FIELDS[self.mode]


@dataclass(frozen=True)
class QuantizeScheme(StepConfig):
    """Base of the per-scheme quantize configs (torchao's shape: one config per scheme, holding only its options);
    a recipe keeps the `{technique: quantize, mode: ...}` syntax, and `QuantizeConfig.scheme()` builds these."""

    technique: ClassVar[str] = "quantize"
    stage: ClassVar[str] = "onnx"
    mode: ClassVar[str] = ""

    def to_dict(self) -> dict:
        out = {"technique": self.technique, "mode": self.mode}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, dict) else value
        return out


@dataclass(frozen=True)
class DynamicInt8Config(QuantizeScheme):
    """int8 weights, activations quantized at run time (MatMul / Gemm; Conv with quantize_conv)."""

    mode: ClassVar[str] = "dynamic"
    per_channel: bool = True
    exclude: tuple = ()
    quantize_conv: bool = False
    accuracy_level: int | str = AUTO_ACCURACY_LEVEL


@dataclass(frozen=True)
class StaticInt8Config(QuantizeScheme):
    """int8 weights and activations from calibration (QDQ), with the recovery steps each gated on validation."""

    mode: ClassVar[str] = "static"
    per_channel: bool = True
    calibration: str = "minmax"
    samples: int = 128
    exclude: tuple = ()
    equalize: bool = False
    bias_correction: bool = False
    calibration_overrides: dict = field(default_factory=dict)
    weight_rounding: str = "nearest"
    smooth_quant: bool = False
    target: str = "onnxruntime"

    def plain(self) -> "StaticInt8Config":
        """The same scheme without any recovery step: what every recovery is compared with."""
        return StaticInt8Config(per_channel=self.per_channel, calibration=self.calibration, samples=self.samples,
                                target=self.target)

    @property
    def recovers(self) -> bool:
        return self != self.plain()


@dataclass(frozen=True)
class Fp16Config(QuantizeScheme):
    """Half-precision weights (activations stay float at the graph's inputs and outputs)."""

    mode: ClassVar[str] = "fp16"
    exclude: tuple = ()


@dataclass(frozen=True)
class Int4WeightOnlyConfig(QuantizeScheme):
    """4-bit block-quantized MatMul weights (MatMulNBits)."""

    mode: ClassVar[str] = "int4"
    block_size: int = 32
    accuracy_level: int | str = AUTO_ACCURACY_LEVEL
    exclude: tuple = ()


@dataclass(frozen=True)
class QatInt8Config(QuantizeScheme):
    """Static int8 whose scales and weights are fine-tuned with fake quantization (torch models)."""

    mode: ClassVar[str] = "qat"
    per_channel: bool = True
    samples: int = 128
    epochs: int = 3
    lr: float = 1e-4
    exclude: tuple = ()


SCHEMES: dict[str, type] = {cls.mode: cls for cls in (DynamicInt8Config, StaticInt8Config, Fp16Config,
                                                       Int4WeightOnlyConfig, QatInt8Config)}
SCHEME_FIELDS: dict[str, tuple] = {mode: tuple(f.name for f in dataclasses.fields(cls))
                                   for mode, cls in SCHEMES.items()}


@dataclass(frozen=True)
class PruneConfig(StepConfig):
    """Remove weights: whole channels or single weights (an ONNX-only model: single weights of its graph, no
    fine-tuning), then optionally fine-tune on the train split."""

    technique: ClassVar[str] = "prune"
    stage: ClassVar[str] = "torch"
    METHODS: ClassVar[tuple] = ("unstructured", "structured", "2:4")
    SCOPES: ClassVar[tuple] = ("global", "layer")
    IMPORTANCES: ClassVar[tuple] = ("l1", "l2")

    method: str = _option("structured", "structured: remove whole channels/neurons (really smaller and faster); "
                          "unstructured: zero single weights (compresses, dense kernels run no faster); "
                          "2:4: two of every four weights zero (GPU sparse kernels only).", METHODS)
    amount: float = _option(0.5, "Fraction of weights (unstructured) or channels (structured) to remove.",
                            minimum=0.0, maximum=1.0)
    scope: str = _option("global", "global: rank weights across all layers; layer: the same amount in each layer.",
                         SCOPES)
    importance: str = _option("l1", "Norm used to rank weights or channels.", IMPORTANCES)
    # 10 epochs recover digits-cnn to within 0.4 pt after 50% structured / 80% unstructured pruning in ~2-5 s
    # on one thread (measured through core.pipeline.run.run_recipe, static int8 after the structured prune).
    finetune_epochs: int = _option(10, "Epochs of fine-tuning on the train split after pruning (0 = none).",
                                   minimum=0, maximum=1000)
    lr: float = _option(1e-3, "Fine-tuning learning rate (Adam).", minimum=0.0, maximum=1.0)

    def __post_init__(self):
        check_choice("prune.method", self.method, self.METHODS)
        check_choice("prune.scope", self.scope, self.SCOPES)
        check_choice("prune.importance", self.importance, self.IMPORTANCES)
        check_range("prune.amount", self.amount, 0.0, 1.0, low_open=True, high_open=True)
        check_range("prune.finetune_epochs", self.finetune_epochs, 0, 1000, integer=True)
        check_range("prune.lr", self.lr, 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class DistillConfig(StepConfig):
    """Train a smaller student to imitate the model (the teacher)."""

    technique: ClassVar[str] = "distill"
    stage: ClassVar[str] = "torch"

    width: float = _option(0.25, "Student width as a fraction of the teacher's channels/neurons.",
                           minimum=0.0, maximum=1.0)
    temperature: float = _option(4.0, "Softmax temperature for soft targets (higher = softer).",
                                 minimum=0.0, maximum=100.0)
    alpha: float = _option(0.7, "Weight of the distillation loss; 1 - alpha weights the label loss.",
                           minimum=0.0, maximum=1.0)
    epochs: int = _option(60, "Training epochs for the student.", minimum=1, maximum=10000)
    lr: float = _option(3e-3, "Student learning rate (Adam).", minimum=0.0, maximum=1.0)
    batch_size: int = _option(64, "Training batch size.", minimum=1, maximum=65536)
    control: bool = _option(False, "Also train the same student without the teacher, as its own variant.")

    def __post_init__(self):
        check_range("distill.width", self.width, 0.0, 1.0, low_open=True)
        check_range("distill.temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("distill.alpha", self.alpha, 0.0, 1.0)
        check_range("distill.epochs", self.epochs, 1, 10000, integer=True)
        check_range("distill.lr", self.lr, 0.0, 1.0, low_open=True)
        check_range("distill.batch_size", self.batch_size, 1, 65536, integer=True)
        check_bool("distill.control", self.control)


STEP_TYPES: dict[str, type[StepConfig]] = {
    cls.technique: cls for cls in (QuantizeConfig, PruneConfig, DistillConfig)
}


def step_from_dict(data: Any) -> StepConfig:
    """Build a step config from a mapping such as ``{technique: quantize, mode: static}``.

    Raises:
        BadInputError: unknown technique or key, or a bad value (the message names the allowed ones).
    """
    if not isinstance(data, dict):
        raise BadInputError(f"a step must be a mapping with a 'technique' key, got {brief_repr(data)}")
    data = dict(data)
    technique = data.pop("technique", None)
    if not isinstance(technique, str) or technique not in STEP_TYPES:  # a list is not even hashable
        raise BadInputError(f"technique={brief_repr(technique)} is not supported; "
                            f"allowed: {', '.join(STEP_TYPES)}")
    cls = STEP_TYPES[technique]
    return _build(cls, data, technique)


def _build(cls, data: dict, where: str):
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise BadInputError(f"unknown key(s) {key_list(unknown)} in {where}; allowed: {', '.join(allowed)}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            default = f.default if f.default is not dataclasses.MISSING else None
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool) \
                    and abs(value) <= 2**53:  # a bigger one stays an int: the range check names it, float() overflows
                value = float(value)
            if isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
    try:
        return cls(**values)
    except TypeError as exc:  # a value of a type the dataclass cannot even hold
        raise BadInputError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class BenchmarkConfig:
    """How latency is measured: batch sizes, onnxruntime threads, warm-up and timed runs."""

    batch_sizes: tuple = _option((1, 256), "Batch sizes to time.")
    threads: int = _option(1, "onnxruntime intra-op threads (fixed so numbers compare).", minimum=1, maximum=256)
    warmup: int = _option(20, "Untimed calls per model before timing.", minimum=0, maximum=100000)
    runs: int = _option(200, "The most timing rounds per batch size (in each round every model takes a turn of "
                        "about 25 ms); rounds stop sooner once every speed-up is known within ±5%.", minimum=1,
                        maximum=1000000)
    max_seconds: float = _option(10.0, "Each model's share of a batch size's time cap: the baseline and N variants "
                                 "stop after (N + 1) × this (at least 4 rounds).", minimum=0.0, maximum=3600.0)
    sequence_length: int = _option(128, "Token count for sequence inputs with a symbolic length.",
                                   minimum=1, maximum=65536)
    runtimes: tuple = _option(("onnxruntime",), "Runtimes every variant is timed on, with the same threads and "
                              "interleaved rounds: onnxruntime (always; the reference), openvino (its CPU plugin), "
                              "executorch (the edge runtime: torch-backed models, exported with XNNPACK).",
                              RUNTIME_NAMES)

    def __post_init__(self):
        sizes = self.batch_sizes
        if isinstance(sizes, int):
            sizes = (sizes,)
        if not sizes or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 65536 for b in sizes):
            raise BadInputError(f"benchmark.batch_sizes={brief_repr(self.batch_sizes)} must be integers in "
                                "[1, 65536]")
        object.__setattr__(self, "batch_sizes", tuple(sorted(set(sizes))))
        check_range("benchmark.threads", self.threads, 1, 256, integer=True)
        check_range("benchmark.warmup", self.warmup, 0, 100000, integer=True)
        check_range("benchmark.runs", self.runs, 1, 1000000, integer=True)
        check_range("benchmark.max_seconds", self.max_seconds, 0.0, 3600.0, low_open=True)
        check_range("benchmark.sequence_length", self.sequence_length, 1, 65536, integer=True)
        runtimes = self.runtimes
        if isinstance(runtimes, str) or not isinstance(runtimes, (tuple, list)) or not runtimes:
            raise BadInputError(f"benchmark.runtimes={brief_repr(runtimes)} must be a list of runtimes; allowed: "
                                f"{', '.join(RUNTIME_NAMES)}")
        for name in runtimes:
            check_choice("benchmark.runtimes", name, RUNTIME_NAMES)
        if len(set(runtimes)) != len(runtimes):
            raise BadInputError(f"benchmark.runtimes={brief_repr(list(runtimes))} names a runtime twice")
        if "onnxruntime" not in runtimes:
            raise BadInputError(f"benchmark.runtimes={brief_repr(list(runtimes))} must include 'onnxruntime': every "
                                "cross-runtime ratio and fidelity check is against it")
        object.__setattr__(self, "runtimes", tuple(runtimes))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["batch_sizes"] = list(self.batch_sizes)
        out["runtimes"] = list(self.runtimes)
        return out


@dataclass(frozen=True)
class Variant:
    """One optimized model to build: a name and an ordered list of steps."""

    name: str
    steps: tuple = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise BadInputError(f"variant name {brief_repr(self.name)} must be a non-empty string")
        if self.name == "baseline" and self.steps:
            raise BadInputError("the name 'baseline' is reserved for the unmodified model")
        bad = set(self.name) - VARIANT_NAME_CHARS
        if bad or self.name.startswith("."):
            raise BadInputError(f"variant name {brief_repr(self.name)} may use letters, digits, spaces and "
                                "-_.=,[]+ only")
        if len(self.name) > MAX_VARIANT_NAME:
            raise BadInputError(f"variant name {brief_repr(self.name)} is {len(self.name):,} characters; at most "
                                f"{MAX_VARIANT_NAME} characters")
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        seen_onnx = False
        for step in steps:
            if not isinstance(step, StepConfig):
                raise BadInputError(f"variant {brief_repr(self.name)}: step {brief_repr(step)} is not a step "
                                    "config")
            if step.stage == "onnx":
                seen_onnx = True
            elif seen_onnx:
                raise BadInputError(f"variant {brief_repr(self.name)}: {step.technique} must come before quantize "
                                    "(torch steps run before ONNX steps)")
        if sum(isinstance(s, DistillConfig) for s in steps) > 1:
            raise BadInputError(f"variant {brief_repr(self.name)}: at most one distill step")
        if sum(isinstance(s, QuantizeConfig) for s in steps) > 1:
            raise BadInputError(f"variant {brief_repr(self.name)}: at most one quantize step")

    @property
    def slug(self) -> str:
        """A file-system-safe directory name for this variant's artifacts."""
        return slugify(self.name)

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, data: Any) -> "Variant":
        if not isinstance(data, dict):
            raise BadInputError(f"a variant must be a mapping with 'name' and 'steps', got {brief_repr(data)}")
        unknown = [k for k in data if k not in ("name", "steps")]
        if unknown:
            raise BadInputError(f"unknown key(s) {key_list(unknown)} in variant; allowed: name, steps")
        steps = data.get("steps") or []
        if not isinstance(steps, list):
            raise BadInputError(f"variant {brief_repr(data.get('name'))}: steps must be a list")
        return cls(name=data.get("name"), steps=tuple(step_from_dict(s) for s in steps))


@dataclass(frozen=True)
class Recipe:
    """The whole experiment: model, data, seed, how to benchmark, and the variants."""

    model: str | None = None
    data: str | None = None
    seed: int = 0
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    variants: tuple = ()

    def __post_init__(self):
        check_range("seed", self.seed, 0, 2**32 - 1, integer=True)
        for key in ("model", "data"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise BadInputError(f"{key}={brief_repr(value)} must be a path or sample:NAME")
        variants = tuple(self.variants)
        object.__setattr__(self, "variants", variants)
        names = [v.name for v in variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise BadInputError(f"variant names must be unique; repeated: {key_list(dupes)}")
        if "baseline" in names:
            raise BadInputError("'baseline' is measured automatically; name your variants otherwise")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.model is not None:
            out["model"] = self.model
        if self.data is not None:
            out["data"] = self.data
        out["seed"] = self.seed
        out["benchmark"] = self.benchmark.to_dict()
        out["variants"] = [v.to_dict() for v in self.variants]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        """Validate and build a recipe from plain data (as parsed from YAML or JSON)."""
        if not isinstance(data, dict):
            raise BadInputError("a recipe must be a mapping with keys model, data, seed, benchmark, variants")
        allowed = ("model", "data", "seed", "benchmark", "variants", "sweep")
        unknown = [k for k in data if k not in allowed]
        if unknown:
            raise BadInputError(f"unknown key(s) {key_list(unknown)} in recipe; allowed: {', '.join(allowed)}")
        bench = data.get("benchmark") or {}
        if not isinstance(bench, dict):
            raise BadInputError("benchmark must be a mapping")
        if isinstance(bench.get("batch_sizes"), list):
            bench = {**bench, "batch_sizes": tuple(bench["batch_sizes"])}
        variants = data.get("variants") or []
        if not isinstance(variants, list):
            raise BadInputError("variants must be a list")
        expanded = tuple(Variant.from_dict(v) for v in variants)
        if data.get("sweep") is not None:
            expanded += expand_sweep(data["sweep"])
        return cls(model=data.get("model"), data=data.get("data"), seed=data.get("seed", 0),
                   benchmark=_build(BenchmarkConfig, bench, "benchmark"), variants=expanded)

    def to_yaml(self) -> str:
        # Without anchors: two variants sharing one step would otherwise be written as an alias (&id001 / *id001),
        # which the bounded loader refuses, so the recipe would not read back.
        return yaml.dump(self.to_dict(), Dumper=_PlainDumper, sort_keys=False, default_flow_style=None, width=110)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_text(cls, text: str) -> "Recipe":
        """Parse YAML or JSON text (JSON is YAML) with a safe loader that refuses aliases and bounds the size.

        Raises:
            BadInputError: text over MAX_RECIPE_CHARS, an alias, more than MAX_RECIPE_NODES values or
                MAX_RECIPE_DEPTH levels of nesting, invalid YAML/JSON, or an invalid recipe.
        """
        return cls.from_dict(parse_recipe_text(text))

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        """Read a recipe file (.yaml, .yml or .json); a relative `model:` / `data:` path in it is relative to
        the file's folder (made absolute here, as `resolve_spec` does).

        Raises:
            BadInputError: the file cannot be read (the message names its absolute path), or a bad recipe.
        """
        path = Path(os.path.abspath(path))
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BadInputError(f"cannot read recipe {path}: not UTF-8 text") from None
        except OSError as exc:
            raise BadInputError(f"cannot read recipe {path}: {exc.strerror or exc.__class__.__name__}") from None
        recipe = cls.from_text(text)
        return recipe.replace(model=resolve_spec(recipe.model, path.parent),
                              data=resolve_spec(recipe.data, path.parent))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.write_text(self.to_json() if path.suffix == ".json" else self.to_yaml(), encoding="utf-8")

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def unique_name(self, name: str) -> str:
        """`name`, or `name-2`, `name-3`... when a variant of this recipe already has it."""
        taken = {v.name for v in self.variants}
        base, n = name, 2
        while name in taken:
            suffix = f"-{n}"
            name, n = f"{base[:MAX_VARIANT_NAME - len(suffix)]}{suffix}", n + 1
        return name

    def add_variants(self, *variants: "Variant") -> "Recipe":
        """This recipe with `variants` appended, each renamed (`name-2`, ...) where the name is taken."""
        recipe = self
        for variant in variants:
            renamed = Variant(recipe.unique_name(variant.name), variant.steps)
            recipe = recipe.replace(variants=recipe.variants + (renamed,))
        return recipe

    def without_variant(self, index: int) -> "Recipe":
        """This recipe without its `index`-th variant (counting from 0).

        Raises:
            BadInputError: no variant has that index.
        """
        if not 0 <= index < len(self.variants):
            raise BadInputError(f"no variant {index}: the recipe has {len(self.variants)}")
        return self.replace(variants=self.variants[:index] + self.variants[index + 1:])

    def trains(self) -> bool:
        """Whether a step of some variant trains on data (fine-tuning after pruning, distillation, QAT); a run
        whose model has a torch module needs a train split only then."""
        return any((isinstance(s, PruneConfig) and s.finetune_epochs > 0) or isinstance(s, DistillConfig)
                   or (isinstance(s, QuantizeConfig) and s.mode == "qat") for v in self.variants for s in v.steps)

    def calibration_samples(self) -> int:
        """The most calibration samples any static / QAT quantize step asks for (the default when none does)."""
        asked = [s.samples for v in self.variants for s in v.steps
                 if isinstance(s, QuantizeConfig) and s.mode in ("static", "qat")]
        return max(asked, default=QuantizeConfig.__dataclass_fields__["samples"].default)

    def with_batch_sizes(self, batch_sizes: tuple) -> "Recipe":
        """This recipe benchmarking at `batch_sizes` instead (its other benchmark settings kept)."""
        return self.replace(benchmark=dataclasses.replace(self.benchmark, batch_sizes=tuple(batch_sizes)))


# Bounds on recipe text, checked before anything walks the document. A 64-variant recipe (the job runner's
# default cap) exported by the dashboard is ~20 KB and ~2,400 values and parses in 0.08 s; 10,000 values of
# hostile flow-style YAML take ~0.5 s in PyYAML's pure-Python composer (measured on the 2-core dev box).
MAX_RECIPE_CHARS = 256 * 1024
MAX_RECIPE_NODES = 10_000
MAX_RECIPE_DEPTH = 32


class _PlainDumper(yaml.SafeDumper):
    """PyYAML's SafeDumper that writes a value seen twice out again instead of as an alias."""

    def ignore_aliases(self, data) -> bool:
        return True


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader whose composer refuses aliases and counts values and depth while it builds the tree
    (the pure-Python composer: the C one cannot be stopped part-way)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.nodes = 0
        self.depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise BadInputError(f"recipe line {event.start_mark.line + 1}: YAML aliases (*{str(event.anchor)[:40]}) "
                                "are not allowed in a recipe; write the value out")
        self.nodes += 1
        if self.nodes > MAX_RECIPE_NODES:
            raise BadInputError(f"recipe has more than {MAX_RECIPE_NODES:,} values; the limit is {MAX_RECIPE_NODES:,}")
        self.depth += 1
        try:
            if self.depth > MAX_RECIPE_DEPTH:
                raise BadInputError(f"recipe line {self.peek_event().start_mark.line + 1}: nested deeper than "
                                    f"{MAX_RECIPE_DEPTH} levels; the limit is {MAX_RECIPE_DEPTH}")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# An integer in a recipe is a seed, a count or a size: 19 digits hold any of them (2**63 - 1), and Python refuses to
# read one of over 4,300 digits at all (its int-from-text limit: a ValueError, not a message).
MAX_RECIPE_DIGITS = 19


def _line(node) -> str:
    return f"recipe line {node.start_mark.line + 1}"


def _refuse_date(loader, node):
    raise BadInputError(f"{_line(node)}: {str(node.value)[:40]!r} reads as a date, and no recipe value is one; "
                        "quote it if it is a name")


def _bounded_int(loader, node):
    digits = sum(c.isalnum() for c in str(node.value).lower().removeprefix("-").removeprefix("+")
                 .removeprefix("0x").removeprefix("0o").removeprefix("0b"))
    if digits > MAX_RECIPE_DIGITS:
        raise BadInputError(f"{_line(node)}: a number of {digits:,} digits; a recipe number has at most "
                            f"{MAX_RECIPE_DIGITS} digits")
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _refuse_tag(kind: str):
    def refuse(loader, node):
        raise BadInputError(f"{_line(node)}: {kind} values (!!{kind}) are not allowed in a recipe")
    return refuse


_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _refuse_date)
_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)
for _kind in ("binary", "set", "omap", "pairs"):
    _BoundedLoader.add_constructor(f"tag:yaml.org,2002:{_kind}", _refuse_tag(_kind))


def parse_recipe_text(text: Any) -> Any:
    """YAML or JSON text -> plain data, refusing what could expand or recurse: aliases (``*a``, which a
    billion-laughs recipe of a few hundred bytes uses to become ~40 million values), more than
    MAX_RECIPE_NODES values, nesting deeper than MAX_RECIPE_DEPTH, text over MAX_RECIPE_CHARS.

    Raises:
        BadInputError: one of those, or text that is not valid YAML/JSON (the message names the line).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInputError("recipe is not UTF-8 text") from None
    if not isinstance(text, str):
        raise BadInputError(f"a recipe must be YAML or JSON text, got {type(text).__name__}")
    if len(text) > MAX_RECIPE_CHARS:
        raise BadInputError(f"recipe is {len(text):,} characters; the limit is {MAX_RECIPE_CHARS:,}")

    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except (ValueError, OverflowError, TypeError) as exc:  # a constructor's own failure: still one line
        raise BadInputError(f"recipe has a value that cannot be read ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:120]})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or exc)[:200]
        raise BadInputError(f"recipe is not valid YAML/JSON{where}: {' '.join(problem.split())}") from None
    finally:
        loader.dispose()


MAX_SWEEP_VARIANTS = 256


def _is_sweep_value(cls: type, key: str, value: Any) -> bool:
    """A list is a sweep axis, except for list-valued options (exclude), where only a list of lists is."""
    if not isinstance(value, list):
        return False
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key in fields and isinstance(fields[key].default, tuple):
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def _sweep_axes(sweep: Any) -> list[tuple[int, str, list]]:
    """The sweep's axes as (step index, key, values), after checking the block's shape."""
    if not isinstance(sweep, dict) or not isinstance(sweep.get("steps"), list) or not sweep["steps"]:
        raise BadInputError("sweep must be a mapping with 'name' and a non-empty list of 'steps'")
    unknown = [k for k in sweep if k not in ("name", "steps")]
    if unknown:
        raise BadInputError(f"unknown key(s) {key_list(unknown)} in sweep; allowed: name, steps")
    axes = []
    for index, step in enumerate(sweep["steps"]):
        if not isinstance(step, dict) or not isinstance(step.get("technique"), str) \
                or step["technique"] not in STEP_TYPES:
            raise BadInputError(f"sweep step {index + 1}: technique must be one of {', '.join(STEP_TYPES)}")
        cls = STEP_TYPES[step["technique"]]
        for key, value in step.items():
            if key != "technique" and _is_sweep_value(cls, key, value):
                if not value:
                    raise BadInputError(f"sweep step {index + 1}: {key} lists no values")
                axes.append((index, key, value))
    return axes


def sweep_variant_count(sweep: Any) -> int:
    """How many variants `expand_sweep` would make (the product of the axis lengths), without building them.

    Raises:
        BadInputError: a malformed block or an empty axis (values themselves are checked by `expand_sweep`).
    """
    return math.prod(len(values) for _, _, values in _sweep_axes(sweep))


def expand_sweep(sweep: Any) -> tuple:
    """Expand a sweep block into variants: every option given as a list is an axis of a cartesian product.

    Example: ``{name: grid, steps: [{technique: prune, amount: [0.25, 0.5]}, {technique: quantize,
    mode: [dynamic, static]}]}`` gives four variants named like ``grid[amount=0.25,mode=dynamic]``.

    Raises:
        BadInputError: a malformed block, an empty axis, or more than MAX_SWEEP_VARIANTS variants.
    """
    import itertools

    axes = _sweep_axes(sweep)
    name = sweep.get("name") or "sweep"
    count = math.prod(len(values) for _, _, values in axes)
    if count > MAX_SWEEP_VARIANTS:
        raise BadInputError(f"the sweep makes {count} variants; the limit is {MAX_SWEEP_VARIANTS}")
    combos = list(itertools.product(*[values for _, _, values in axes])) if axes else [()]
    keys = [key for _, key, _ in axes]
    repeated = {k for k in keys if keys.count(k) > 1}
    variants = []
    for combo in combos:
        steps = [dict(s) for s in sweep["steps"]]
        labels = []
        for (index, key, _), value in zip(axes, combo):
            steps[index][key] = value
            label = f"{steps[index]['technique']}.{key}" if key in repeated else key
            labels.append(f"{label}={value if not isinstance(value, list) else '+'.join(map(str, value))}")
        full = f"{name}[{','.join(labels)}]" if labels else name
        if len(full) > MAX_VARIANT_NAME:  # long axis values (exclude lists of node names): number the variants
            tag = f"[{len(variants) + 1} of {len(combos)}]"
            full = f"{str(name)[:MAX_VARIANT_NAME - len(tag)]}{tag}"
        variants.append(Variant.from_dict({"name": full, "steps": steps}))
    return tuple(variants)


def default_recipe(model: str = "sample:digits-cnn", data: str | None = "sample:digits") -> Recipe:
    """The recipe the dashboard and `make bench` start from: the common quantization variants."""
    return Recipe(model=model, data=data, seed=0, variants=(
        Variant("int8-dynamic", (QuantizeConfig(mode="dynamic"),)),
        Variant("int8-static", (QuantizeConfig(mode="static"),)),
        Variant("fp16", (QuantizeConfig(mode="fp16"),)),
    ))
