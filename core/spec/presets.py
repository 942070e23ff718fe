"""Recipe presets: a good starting recipe for a goal, fitted to the model (its ops, whether we have its torch
module) and to the techniques this build has."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Callable

from core.spec.recipe import (BenchmarkConfig, DistillConfig, PruneConfig, QuantizeConfig, Recipe, Variant,
                         default_recipe)


@dataclass(frozen=True)
class Preset:
    """A named goal and the function that builds its variants for a model card; `decoder` builds them for a
    language model (None: the preset does not apply to decoders)."""

    name: str
    description: str
    build: Callable[[dict], list]
    decoder: Callable[[dict], list] | None = None
    decoder_description: str = ""

    def describe(self, card: dict | None) -> str:
        """What the preset builds for this model."""
        return self.decoder_description if is_decoder_card(card) else self.description


def is_decoder_card(card: dict | None) -> bool:
    """Whether a model card is a language model's (onnxruntime-genai builds its variants, core.pipeline.decoder)."""
    return bool(card) and card.get("task") == "text-generation"


def technique_available(technique: str) -> bool:
    """Whether this build ships the technique's module (prune and distill arrive as separate modules)."""
    return importlib.util.find_spec(f"core.techniques.{technique}") is not None


def _facts(card: dict) -> dict:
    ops = set((card.get("op_types") or {}))
    return {"torch": card.get("format") == "torch+onnx", "matmul": bool(ops & {"MatMul", "Gemm"}),
            "conv": "Conv" in ops, "classifier": card.get("task") == "classification",
            "architecture": card.get("architecture")}


@dataclass(frozen=True)
class LeftOut:
    """A variant a preset would add but that cannot run on this model, and why (shown as "left out")."""

    name: str
    reason: str


NO_MATMUL = "no MatMul/Gemm to quantize: dynamic int8 and int4 touch only those"
NEEDS_TORCH = "structured pruning needs the torch model (upload .pt/.safetensors weights of a bundled architecture)"
NEEDS_ARCH = "distillation needs the torch model of a bundled classifier"


def _dynamic(f: dict, name: str = "int8-dynamic"):
    return Variant(name, (QuantizeConfig(mode="dynamic"),)) if f["matmul"] else LeftOut(name, NO_MATMUL)


def _int4(f: dict):
    return Variant("int4", (QuantizeConfig(mode="int4"),)) if f["matmul"] else LeftOut("int4", NO_MATMUL)


def _pruned_int8(f: dict, name: str, amount: float, epochs: int):
    if not f["torch"]:
        return LeftOut(name, NEEDS_TORCH)
    return Variant(name, (PruneConfig(method="structured", amount=amount, finetune_epochs=epochs),
                          QuantizeConfig(mode="static")))


def _student(f: dict, name: str, steps: tuple):
    return Variant(name, steps) if f["torch"] and f["classifier"] and f["architecture"] else LeftOut(name, NEEDS_ARCH)


def _fastest(card: dict) -> list:
    f = _facts(card)
    variants = [Variant("int8-static", (QuantizeConfig(mode="static"),))]
    if f["matmul"] and not f["conv"]:
        variants.append(Variant("int8-dynamic", (QuantizeConfig(mode="dynamic"),)))
    variants.append(_pruned_int8(f, "pruned50-int8", 0.5, 10))
    return variants


def _smallest(card: dict) -> list:
    f = _facts(card)
    return [Variant("int8-static", (QuantizeConfig(mode="static"),)), _int4(f),
            _pruned_int8(f, "pruned50-int8", 0.5, 10),
            _student(f, "student-int8", (DistillConfig(width=0.25, epochs=40), QuantizeConfig(mode="static")))]


def _balanced(card: dict) -> list:
    f = _facts(card)
    if f["matmul"] and not f["conv"]:
        variants = [Variant("int8-dynamic", (QuantizeConfig(mode="dynamic"),))]
    else:
        variants = [Variant("int8-static", (QuantizeConfig(mode="static"),))]
    variants.append(_pruned_int8(f, "pruned30-int8", 0.3, 5))
    return variants


def _everything(card: dict) -> list:
    f = _facts(card)
    variants = [_dynamic(f), Variant("int8-static", (QuantizeConfig(mode="static"),)),
                Variant("fp16", (QuantizeConfig(mode="fp16"),)), _int4(f)]
    # Unstructured pruning works on ONNX weights too, without fine-tuning (no torch weights to train).
    variants.append(Variant("sparse80", (PruneConfig(method="unstructured", amount=0.8,
                                                     finetune_epochs=10 if f["torch"] else 0),)))
    if f["torch"]:
        variants.insert(4, Variant("pruned50", (PruneConfig(method="structured", amount=0.5, finetune_epochs=10),)))
    else:
        variants.insert(4, LeftOut("pruned50", NEEDS_TORCH))
    variants.append(_pruned_int8(f, "pruned50-int8", 0.5, 10))
    variants.append(_student(f, "student", (DistillConfig(width=0.25, epochs=40, control=True),)))
    return variants


NEEDS_TORCH_QAT = "QAT needs the torch model (upload .pt/.safetensors weights of a bundled architecture)"


def _recover(card: dict) -> list:
    """Plain static int8 per tensor and per channel, then each with every post-training recovery step (issue 27),
    whose every unit (pair, layer, MatMul input) is kept only where the validation split improves, so neither
    recovered variant is below its plain twin on validation; QAT where there is a torch model."""
    f = _facts(card)
    static = lambda **options: QuantizeConfig(mode="static", **options)  # noqa: E731
    recover = dict(equalize=True, weight_rounding="learned", bias_correction=True, smooth_quant=f["matmul"])
    variants = [Variant("int8-per-tensor", (static(per_channel=False),)),
                Variant("int8-per-channel", (static(per_channel=True),)),
                Variant("int8-per-tensor-recovered", (static(per_channel=False, **recover),)),
                Variant("int8-per-channel-recovered", (static(per_channel=True, **recover),))]
    if f["torch"]:
        # Per tensor: on shapes-mobile per-tensor QAT kept fp32 accuracy (0.0 pt) where per-channel lost 2.3 pt, all
        # of it in onnxruntime's AVX2 int8 kernels (the same QDQ graph run unfused keeps 97% agreement).
        variants.append(Variant("int8-qat", (QuantizeConfig(mode="qat", per_channel=False, epochs=3),)))
    else:
        variants.append(LeftOut("int8-qat", NEEDS_TORCH_QAT))
    return variants


def _quick(card: dict) -> list:
    f = _facts(card)
    return [v if v.name != "int8-dynamic" else _dynamic(f) for v in default_recipe().variants]


# ---- decoders: int4 and int8 weight-only MatMulNBits, built by onnxruntime-genai (core.techniques.decoder), at the
# accuracy_level measured fastest on this CPU ("auto", core.measure.nbits)

def _decoder_int4(name: str = "int4", **options) -> Variant:
    return Variant(name, (QuantizeConfig(mode="int4", **options),))


def _decoder_int8(name: str = "int8") -> Variant:
    return Variant(name, (QuantizeConfig(mode="dynamic"),))


def _decoder_default(card: dict) -> list:
    return [_decoder_int4(), _decoder_int8()]


def _decoder_smallest(card: dict) -> list:
    return [_decoder_int4(), _decoder_int4("int4-block128", block_size=128)]


def _decoder_everything(card: dict) -> list:
    # accuracy_level 0 beside auto: what int8 compute in MatMulNBits buys on this CPU (issue 28 measured tiny-lm's
    # int8 at 0.07x fp32 at level 0).
    return [_decoder_int4(), _decoder_int8(), _decoder_int4("int4-block128", block_size=128),
            _decoder_int4("int4-level0", accuracy_level=0)]


def presets_for(card: dict | None) -> list[str]:
    """The presets that apply to a model: every preset, or for a decoder those with a decoder build."""
    return [n for n, p in PRESETS.items() if not is_decoder_card(card) or p.decoder is not None]


# ---- benchmark settings fitted to the model: a big input at batch 256 takes minutes per timed run

# One-thread fp32 throughput assumed for estimates (multiply-accumulates per second): about what onnxruntime's
# Conv / MatMul kernels reach on one AVX2 core of the machines we measured (ResNet-50, 4.1 GMAC, ~0.2 s at batch 1).
CPU_MACS_PER_S = 2e10
SLOW_BENCHMARK_S = 60.0  # above this the page warns before Run
LIGHT_RUN_S = 1.0  # the lighter default keeps one timed run of the largest batch under about this


def run_seconds(card: dict, batch_size: int, threads: int = 1) -> float | None:
    """Estimated seconds of one inference at `batch_size` (None when the card has no MAC count)."""
    macs = card.get("macs")
    if not macs:
        return None
    return float(macs) * batch_size / (CPU_MACS_PER_S * max(1, min(threads, 4)))


# The fewest timed calls a model gets per batch size: the timing phase (core.measure.quality.time_models) stops at
# its time cap only after 4 rounds (2 reported, 2 held out for choosing), at least one call a round.
MIN_TIMED_RUNS = 4


def benchmark_seconds(card: dict, bench: BenchmarkConfig, variants: int) -> float | None:
    """Estimated seconds the benchmark of a run takes: warm-up plus timed calls (at least MIN_TIMED_RUNS, else
    capped by max_seconds) per batch size, for the baseline and every variant (None without a MAC count)."""
    total = 0.0
    for batch in bench.batch_sizes:
        per_run = run_seconds(card, batch, bench.threads)
        if per_run is None:
            return None
        timed = max(MIN_TIMED_RUNS * per_run, min(bench.runs * per_run, bench.max_seconds))
        total += bench.warmup * per_run + timed
    return total * (variants + 1)


def slow_batch_sizes(card: dict, bench: BenchmarkConfig, limit_s: float = SLOW_BENCHMARK_S / 2) -> list[int]:
    """The batch sizes whose own benchmark (warm-up + at least MIN_TIMED_RUNS calls) would take over `limit_s` per
    model."""
    slow = []
    for batch in bench.batch_sizes:
        per_run = run_seconds(card, batch, bench.threads)
        if per_run is not None and per_run * (bench.warmup + MIN_TIMED_RUNS) > limit_s:
            slow.append(batch)
    return slow


def fitted_benchmark(card: dict, bench: BenchmarkConfig) -> tuple[BenchmarkConfig, str | None]:
    """The default benchmark made lighter for a big model: the large batch size lowered (a power of two) until
    one timed run takes about LIGHT_RUN_S; other settings, and any non-default choice, are kept as they are.

    Returns:
        The benchmark and a note saying what changed (None when nothing did).
    """
    if bench.batch_sizes != BenchmarkConfig().batch_sizes:
        return bench, None  # the user chose these
    largest = max(bench.batch_sizes)
    per_sample = run_seconds(card, 1, bench.threads)
    if per_sample is None or per_sample * largest <= LIGHT_RUN_S:
        return bench, None
    lighter = 1
    while lighter * 2 <= largest and per_sample * lighter * 2 <= LIGHT_RUN_S:
        lighter *= 2
    sizes = tuple(sorted({b for b in bench.batch_sizes if b < lighter} | {lighter}))
    note = (f"batch sizes {', '.join(map(str, sizes))} instead of {', '.join(map(str, bench.batch_sizes))}: "
            f"one run of this model at batch {largest} takes about {per_sample * largest:.0f} s on one core")
    return dataclasses.replace(bench, batch_sizes=sizes), note


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("Quick quantization", "dynamic int8, static int8 and fp16: a first look in seconds", _quick,
           decoder=_decoder_default, decoder_description="int4 and int8 weight-only (MatMulNBits, built by "
           "onnxruntime-genai) at the accuracy level measured fastest on this CPU"),
    Preset("Fastest on this CPU", "static int8, plus structured pruning where we have the torch model", _fastest),
    Preset("Smallest", "int8, int4 weights, pruning + int8 and a distilled student: the smallest files", _smallest,
           decoder=_decoder_smallest, decoder_description="int4 weight-only in blocks of 32 and of 128 weights "
           "(fewer scales, a smaller file)"),
    Preset("Balanced", "one int8 variant and a gently pruned one: small accuracy cost", _balanced),
    Preset("Compare everything", "one variant per technique, to see what each does", _everything,
           decoder=_decoder_everything, decoder_description="int4, int8, int4 in blocks of 128, and int4 at "
           "accuracy_level 0 (float compute) beside the level chosen for this CPU"),
    Preset("Recover accuracy", "static int8 per tensor and per channel, each beside a twin with every recovery step "
           "(equalization, learned rounding, bias correction, SmoothQuant on MatMuls), each step kept only where "
           "the validation split improves, so a twin is never below plain int8 there; QAT with a torch model. "
           "How much there is to recover depends on the model (BENCHMARKS.md: a pretrained EfficientNet-Lite1 "
           "recovers a lot, the small shapes-mobile sample has little to recover)", _recover),
)}


def preset_recipe(name: str, card: dict, *, model: str | None = None, data: str | None = None,
                  benchmark: BenchmarkConfig | None = None) -> tuple[Recipe, list[str]]:
    """Build preset `name` for a model card; variants whose technique this build lacks are left out.

    Returns:
        The recipe and what was left out or changed to fit the model: variants that cannot run on it (with
        why), and lighter batch sizes for a model whose default benchmark would take minutes.

    Raises:
        KeyError: an unknown preset name (lists the allowed ones).
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    if is_decoder_card(card):  # a language model: its own variants, batch 1 only (decode is timed at batch 1)
        preset = PRESETS[name]
        if preset.decoder is None:
            raise KeyError(f"preset {name!r} does not apply to a language model; allowed: "
                           f"{', '.join(presets_for(card))}")
        bench = dataclasses.replace(benchmark or BenchmarkConfig(), batch_sizes=(1,))
        return Recipe(model=model, data=data, seed=0, benchmark=bench, variants=tuple(preset.decoder(card))), []
    kept, skipped = [], []
    for variant in PRESETS[name].build(card):
        if isinstance(variant, LeftOut):
            skipped.append(f"{variant.name} ({variant.reason})")
            continue
        missing = sorted({s.technique for s in variant.steps if not technique_available(s.technique)})
        if missing:
            skipped.append(f"{variant.name} (needs {', '.join(missing)}, not in this build)")
        else:
            kept.append(variant)
    bench, note = fitted_benchmark(card, benchmark or BenchmarkConfig())
    if note:
        skipped.append(note)
    return Recipe(model=model, data=data, seed=0, benchmark=bench, variants=tuple(kept)), skipped
