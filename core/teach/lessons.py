"""The workshop's lesson path as data: seven short lessons (goal, explainer, exercise recipe, the results we measured,
a question answered from the attendee's own run), the glossary they link to, and the check of an answer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.errors import BadInputError
from core.results.compare import Budget, best_variant, ok_rows
from core.results.table import results_frame
from core.spec.recipe import Recipe

# Where the expected ranges were measured: each exercise run three or four times (benchmark below, torch on one thread
# as in a worker) on the 2-core development server while other work kept it at a load of 7-13; sizes, parameters
# and accuracies did not move, speed-ups did (`make bench` reruns them: "Lesson N exercise"). Each exercise took
# 1-22 s there (lesson 7's tiny-lm the longest), under the minute an exercise may take on a shared server.
MEASURED_ON = "Intel Xeon, AVX-512 VNNI + AMX, 2 shared cores, 1 benchmark thread (2026-12)"
# A light benchmark: an exercise must finish in under a minute on a shared 2-core server. Speed-ups from 50 runs
# of 1 s at most are noisy; the lessons read them as "about", never as a pass mark.
EXERCISE_BENCHMARK = {"batch_sizes": [1, 32], "threads": 1, "warmup": 5, "runs": 50, "max_seconds": 1.0}
QUESTION_KINDS = ("number", "variant")
PT_SLACK = 0.3  # one test sample of sample:digits is 0.28 pt


@dataclass(frozen=True)
class Term:
    """One glossary entry: its name, a plain definition, and the related terms (ids)."""

    id: str
    name: str
    definition: str
    see_also: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expected:
    """One result of the exercise's run as we measured it: a column of the results table for one variant, with
    the range seen on `MEASURED_ON` (low == high when it did not move between runs)."""

    label: str
    variant: str
    column: str  # a column of core.results.table.results_frame, or "size_kb" / "speedup" (see `measured_value`)
    low: float
    high: float
    unit: str = ""
    note: str = ""

    def __post_init__(self):
        if self.low > self.high:
            raise BadInputError(f"Expected {self.label!r}: low={self.low} is above high={self.high}")


@dataclass(frozen=True)
class Question:
    """What the attendee reads off their own run and types in; `check_answer` grades it against that run.

    kind "number": the value of `column` for `variant` (or `variant` minus `minus` when given), right when within
    max(`tolerance_abs`, `tolerance_rel` x |value|). kind "variant": the variant the rule picks (`best_variant` of
    `objective` under `max_drop_pt`).
    """

    text: str
    kind: str = "number"
    variant: str = ""
    column: str = ""
    minus: str = ""  # another variant whose value is subtracted ("how many kB larger than ...")
    unit: str = ""
    tolerance_rel: float = 0.05
    tolerance_abs: float = 0.0
    objective: str = "smallest"
    max_drop_pt: float | None = None
    hint: str = ""

    def __post_init__(self):
        if self.kind not in QUESTION_KINDS:
            raise BadInputError(f"Question kind={self.kind!r} is not supported; allowed: {', '.join(QUESTION_KINDS)}")
        if self.kind == "number" and not (self.variant and self.column):
            raise BadInputError(f"a number question needs a variant and a column: {self.text!r}")


@dataclass(frozen=True)
class Lesson:
    """One step of the path: what it teaches, where to look, what to run, what we measured, and a question."""

    id: str
    title: str
    goal: str
    minutes: int  # the whole lesson: reading, the explainer, the exercise and the question
    text: str  # a few sentences of markdown
    explainers: tuple[str, ...]  # Learn sections, the first the page has is linked
    explainer_hint: str
    exercise: str  # what to do, markdown
    recipe: dict = field(repr=False)
    expected: tuple[Expected, ...] = ()
    question: Question | None = None
    terms: tuple[str, ...] = ()
    takeaway: str = ""

    def __post_init__(self):
        if not 2 <= self.minutes <= 10:
            raise BadInputError(f"Lesson {self.id!r}: minutes={self.minutes} is outside 2-10")
        names = {v["name"] for v in self.recipe.get("variants", [])}
        # a distill step with `control` also measures the student trained alone, as "<name> (control)"
        names |= {f"{v['name']} (control)" for v in self.recipe.get("variants", [])
                  if any(s.get("control") for s in v["steps"])}
        for item in self.expected:
            if item.variant not in names | {"baseline"}:
                raise BadInputError(f"Lesson {self.id!r}: expected variant {item.variant!r} is not in its recipe "
                                    f"({', '.join(sorted(names))})")

    @property
    def model(self) -> str:
        return self.recipe["model"]

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v["name"] for v in self.recipe.get("variants", []))

    def exercise_recipe(self) -> Recipe:
        """The exercise as a validated Recipe (what "Run the exercise" launches)."""
        return Recipe.from_dict(self.recipe)


def _recipe(model: str, data: str | None, variants: list[dict]) -> dict:
    return {"model": model, "data": data, "seed": 0, "benchmark": dict(EXERCISE_BENCHMARK), "variants": variants}


def _quantize(name: str, **options) -> dict:
    return {"name": name, "steps": [{"technique": "quantize", **options}]}


GLOSSARY: dict[str, Term] = {t.id: t for t in (
    Term("fp32", "fp32", "A 32-bit floating-point number: 4 bytes per weight. What a model is trained in, and the "
         "baseline every variant is compared with.", ("fp16", "int8")),
    Term("fp16", "fp16", "A 16-bit floating-point number: 2 bytes, half the file. Few CPUs compute in it, so on a "
         "CPU it saves bytes but rarely time.", ("fp32",)),
    Term("int8", "int8", "An 8-bit integer: 256 levels, 1 byte per weight. A float is stored as "
         "scale x (code - zero point).", ("scale", "quantization")),
    Term("int4", "int4", "A 4-bit integer: 16 levels, half a byte per weight, with one scale per block of weights "
         "(the block size). Used for the weights of language models.", ("block-size", "int8")),
    Term("quantization", "Quantization", "Storing (and computing with) numbers on a coarse grid of a few levels "
         "instead of as floats: fewer bytes, and integer arithmetic where the CPU has it.", ("int8", "scale")),
    Term("scale", "Scale and zero point", "The two numbers that map integer codes back to floats: value = scale x "
         "(code - zero point). The scale is the step between two grid levels.", ("int8", "per-channel")),
    Term("sqnr", "SQNR", "Signal-to-quantization-noise ratio, in dB: 10 log10(|signal|^2 / |error|^2). Higher is "
         "better; each bit removed from a grid costs about 6 dB.", ("quantization",)),
    Term("calibration", "Calibration", "Running sample data through the model to measure each activation's range "
         "before static quantization: minmax keeps every value, percentile and entropy clip the rare large ones "
         "for finer steps.", ("static", "qdq")),
    Term("static", "Static quantization", "Weights and activations are int8, with activation ranges fixed by "
         "calibration. The fast path for convolutions on a CPU.", ("dynamic", "calibration")),
    Term("dynamic", "Dynamic quantization", "Weights are int8; each activation's range is measured on the fly at "
         "every call. No calibration data needed; onnxruntime uses it for MatMul layers.", ("static",)),
    Term("qdq", "QDQ", "QuantizeLinear / DequantizeLinear node pairs around each quantized layer: how an int8 ONNX "
         "graph says what is int8. onnxruntime fuses each pair with its layer into one int8 kernel.",
         ("static", "int8")),
    Term("per-tensor", "Per-tensor", "One scale for a whole weight tensor: the channel with the largest weights "
         "sets the step for every channel.", ("per-channel",)),
    Term("per-channel", "Per-channel", "One scale per output channel of a weight tensor: channels of small weights "
         "get fine steps too. A few more bytes (one scale per channel), less rounding error.",
         ("per-tensor", "depthwise")),
    Term("depthwise", "Depthwise convolution", "A convolution that filters each channel on its own (MobileNet's "
         "building block). Its channels' weight ranges can differ a lot, which per-tensor int8 handles worst; whether "
         "that costs accuracy is measured (the small shapes-mobile sample: within 0.1 pt of fp32).",
         ("per-channel",)),
    Term("structured", "Structured pruning", "Removing whole channels: the layers become narrower, so the file, "
         "the multiply-adds and the time shrink on any CPU.", ("unstructured", "finetune")),
    Term("unstructured", "Unstructured pruning", "Setting individual small weights to zero. The tensor keeps its "
         "shape: the file compresses but is not smaller, and dense CPU kernels multiply every zero.",
         ("structured", "sparsity")),
    Term("sparsity", "Sparsity", "The share of weights that are zero.", ("unstructured",)),
    Term("finetune", "Fine-tuning", "A few epochs of training after pruning, the removed weights held at zero, to "
         "win back accuracy.", ("structured",)),
    Term("macs", "MACs", "Multiply-accumulate operations per inference: the arithmetic a model needs. Structured "
         "pruning and narrower students reduce them; quantization makes each one cheaper.", ("structured",)),
    Term("distillation", "Distillation", "Training a small student model on a large teacher's soft outputs as well "
         "as on the labels.", ("soft-targets",)),
    Term("soft-targets", "Soft targets and temperature", "The teacher's probabilities, softened by a temperature T "
         "(softmax of logits / T): they say which wrong classes look alike, which a label does not.",
         ("distillation",)),
    Term("agreement", "Agreement and flips", "Agreement: the share of test samples whose top-1 class is the same as "
         "the baseline's. Flips: the samples whose top-1 class changed.", ("accuracy-drop",)),
    Term("accuracy-drop", "Accuracy drop (pt)", "Baseline accuracy minus the variant's, in percentage points, on "
         "the held-out test split. On digits one test sample is 0.28 pt.", ("agreement", "budget")),
    Term("speedup", "Speed-up and its interval", "Baseline latency / variant latency, both measured in the same "
         "run. Timed interleaved in rounds, it comes with a 95% interval; an interval containing 1 reads 'no "
         "measurable difference'.", ("p50",)),
    Term("p50", "p50 latency", "The median time of one inference call at a batch size, after warm-up.",
         ("speedup",)),
    Term("pareto", "Pareto frontier", "The variants no other variant beats on both axes at once (say, smaller and "
         "more accurate). Every other variant is dominated: something else is better on both.", ("budget",)),
    Term("budget", "Budget", "The limits a variant must meet to be picked: at most this latency, this size, this "
         "accuracy drop. The best variant is chosen inside the budget.", ("pareto",)),
    Term("block-size", "Block size", "For int4: how many consecutive weights share one scale (32 by default). "
         "Smaller blocks: less error, more bytes for scales.", ("int4",)),
    Term("perplexity", "Perplexity", "How surprised a language model is by held-out text: exp of the mean "
         "negative log-likelihood per token. Lower is better; +1% is a small change.", ("decode",)),
    Term("kv-cache", "KV cache", "The keys and values of every token already processed, kept between decoding "
         "steps so each new token attends to them without recomputing them.", ("decode", "prefill")),
    Term("prefill", "Prefill", "Processing the whole prompt at once: many tokens per weight read, so it is "
         "compute-bound.", ("decode", "kv-cache")),
    Term("decode", "Decode", "Generating one token at a time: every weight is read once per token for a single "
         "token's arithmetic.", ("memory-bound", "kv-cache")),
    Term("memory-bound", "Memory-bound", "Limited by how fast bytes arrive from memory, not by arithmetic. Decoding "
         "a large model is: fewer bytes per weight (int4) means more tokens per second. A model that fits in the "
         "CPU's caches (tiny-lm) is not.", ("decode", "int4")),
)}


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        id="numbers", title="What a number is", minutes=4,
        goal="See that a weight is 4, 2 or 1 byte(s), and what rounding it to a grid costs.",
        text="A trained model is millions of **fp32** numbers, 4 bytes each. **fp16** halves that. **int8** keeps "
             "a grid of 256 levels per tensor and stores each weight as its nearest level (1 byte) plus one "
             "**scale** to map the levels back. The price is rounding error, measured as **SQNR**.",
        explainers=("Quantization",),
        explainer_hint="In **Quantization**, drag *Bits* from 8 down to 4: watch the levels thin out and the SQNR "
                       "fall by about 6 dB per bit.",
        exercise="Run the exercise: `digits-mlp` (a small dense network) as fp32, fp16 and dynamic int8. Then open "
                 "**Compare** and read each file's size against the baseline.",
        recipe=_recipe("sample:digits-mlp", "sample:digits", [_quantize("fp16", mode="fp16"),
                                                               _quantize("int8-dynamic", mode="dynamic")]),
        expected=(Expected("fp16: × smaller", "fp16", "x_smaller", 1.98, 1.98, "×"),
                  Expected("int8: × smaller", "int8-dynamic", "x_smaller", 3.46, 3.46, "×",
                           note="not 4×: scales, zero points and the graph's extra nodes"),
                  Expected("int8: accuracy drop", "int8-dynamic", "accuracy_drop_pt", 0.0, 0.0, "pt")),
        question=Question("How many times smaller than the baseline is your **int8-dynamic** file? (one decimal)",
                          variant="int8-dynamic", column="x_smaller", unit="×", tolerance_rel=0.03,
                          hint="Compare → results table, column × smaller."),
        terms=("fp32", "fp16", "int8", "scale", "sqnr", "quantization"),
        takeaway="int8 weights take a quarter of the bytes; the scales and the graph structure keep the file a "
                 "little above a quarter."),
    Lesson(
        id="calibration", title="int8 and calibration", minutes=4,
        goal="Quantize activations too (static int8), and see how calibration picks their ranges.",
        text="**Dynamic** int8 measures each activation's range at every call. **Static** int8 fixes the ranges "
             "beforehand by running calibration samples through the model (**calibration**): *minmax* keeps every "
             "value, *percentile* clips the rarest ones for finer steps. The int8 graph marks what is int8 with "
             "**QDQ** pairs, which onnxruntime fuses into int8 kernels.",
        explainers=("Quantization",),
        explainer_hint="In **Quantization**, scroll to *Activations need a range*: compare the minmax, percentile "
                       "and entropy ranges on a ReLU output, and how much each clips.",
        exercise="Run the exercise: `digits-cnn` with static int8, calibrated once with minmax and once with "
                 "percentile. On **Compare**, set *Batch size* to 32 and read how much faster int8 is.",
        recipe=_recipe("sample:digits-cnn", "sample:digits", [
            _quantize("int8-minmax", mode="static", calibration="minmax"),
            _quantize("int8-percentile", mode="static", calibration="percentile")]),
        expected=(Expected("int8: × smaller", "int8-minmax", "x_smaller", 3.63, 3.63, "×"),
                  Expected("minmax: accuracy drop", "int8-minmax", "accuracy_drop_pt", 0.0, 0.0, "pt"),
                  Expected("percentile: accuracy drop", "int8-percentile", "accuracy_drop_pt", 0.0, 0.0, "pt"),
                  Expected("minmax: × faster at batch 32", "int8-minmax", "speedup_bs32", 2.0, 2.5, "×",
                           note="VNNI / AMX CPUs; an AVX2 CPU without VNNI gains less")),
        question=Question("How many times faster than the baseline is **int8-minmax** at batch 32 on your run? "
                          "(one decimal)", variant="int8-minmax", column="speedup_bs32", unit="×",
                          tolerance_rel=0.1,
                          hint="Compare → Batch size 32 → the results table's × faster column (or the "
                               "variant's detail)."),
        terms=("static", "dynamic", "calibration", "qdq", "speedup"),
        takeaway="On digits-cnn both calibrations keep the accuracy; static int8 makes the convolutions' "
                 "arithmetic int8, which is where the speed comes from."),
    Lesson(
        id="per-channel", title="Per-channel scales", minutes=4,
        goal="Give each output channel its own scale, and see what it costs and what it buys.",
        text="A **per-tensor** scale must fit the channel with the largest weights, so channels of small weights "
             "get only a few levels. **Per-channel** gives each output channel its own scale. The "
             "**depthwise** layers of a MobileNet can spread their channels widely, where per-channel has most "
             "to gain; how much it gains on a given model is measured, not assumed.",
        explainers=("Depthwise", "Quantization"),
        explainer_hint="In **Depthwise** (model *shapes-mobile*), read how far apart the channels of the worst "
                       "layer are; in **Quantization**, pick a depthwise weight and compare the two MSEs.",
        exercise="Run the exercise: `shapes-mobile` with static int8 per tensor and per channel. On **Compare**, "
                 "read both sizes and agreements.",
        recipe=_recipe("sample:shapes-mobile", "sample:shapes", [
            _quantize("int8-per-tensor", mode="static", per_channel=False),
            _quantize("int8-per-channel", mode="static", per_channel=True)]),
        expected=(Expected("per tensor: × smaller", "int8-per-tensor", "x_smaller", 2.92, 2.92, "×"),
                  Expected("per channel: × smaller", "int8-per-channel", "x_smaller", 2.50, 2.50, "×"),
                  Expected("per channel: agreement", "int8-per-channel", "agreement", 0.982, 0.982, "",
                           note="on AVX2 without VNNI onnxruntime's int8 kernels saturate: README measured 0.92")),
        question=Question("How many kB larger is your **int8-per-channel** file than **int8-per-tensor**?",
                          variant="int8-per-channel", column="size_kb", minus="int8-per-tensor", unit="kB",
                          tolerance_rel=0.1, tolerance_abs=1.0,
                          hint="Compare → results table, column Size (1 kB = 1,000 bytes)."),
        terms=("per-tensor", "per-channel", "depthwise", "agreement"),
        takeaway="Per-channel costs a scale and zero point per channel and their graph nodes; whether it buys "
                 "accuracy depends on how unequal the channels are, and on the CPU's int8 kernels."),
    Lesson(
        id="pruning", title="Pruning: channels or single weights", minutes=4,
        goal="Remove weights two ways, and see which one makes the model smaller and faster.",
        text="**Structured** pruning removes whole channels: the layers get narrower, and the file, the **MACs** "
             "and the time shrink. **Unstructured** pruning zeroes single weights: the tensor keeps its shape, so "
             "the file compresses (zeros) but is not smaller, and a dense CPU kernel multiplies every zero. A "
             "little **fine-tuning** wins back accuracy.",
        explainers=("Pruning",),
        explainer_hint="In **Pruning**, set *Sparsity* to 50% and compare the three mask patterns; run the sweep "
                       "to see accuracy as sparsity grows.",
        exercise="Run the exercise: `digits-cnn` with 50% of its channels removed and with 50% of its single "
                 "weights zeroed, each fine-tuned for 2 epochs. On **Compare**, read size, compressed size and "
                 "accuracy.",
        recipe=_recipe("sample:digits-cnn", "sample:digits", [
            {"name": "channels50", "steps": [{"technique": "prune", "method": "structured", "amount": 0.5,
                                              "finetune_epochs": 2}]},
            {"name": "sparse50", "steps": [{"technique": "prune", "method": "unstructured", "amount": 0.5,
                                            "finetune_epochs": 2}]}]),
        expected=(Expected("channels: × smaller", "channels50", "x_smaller", 3.53, 3.53, "×"),
                  Expected("channels: accuracy drop", "channels50", "accuracy_drop_pt", 1.11, 1.11, "pt"),
                  Expected("single weights: × smaller", "sparse50", "x_smaller", 1.0, 1.0, "×"),
                  Expected("single weights: × smaller compressed", "sparse50", "x_smaller_compressed", 1.66, 1.66,
                           "×"),
                  Expected("single weights: accuracy drop", "sparse50", "accuracy_drop_pt", 0.28, 0.28, "pt")),
        question=Question("How many times smaller than the baseline is your **sparse50** file (not compressed)?",
                          variant="sparse50", column="x_smaller", unit="×", tolerance_rel=0.03,
                          hint="Half its weights are zero. Compare → results table, × smaller."),
        terms=("structured", "unstructured", "sparsity", "finetune", "macs"),
        takeaway="Only structured pruning shrinks the file and the arithmetic on a CPU; zeroed weights help only "
                 "where they are compressed or run on sparse hardware."),
    Lesson(
        id="distillation", title="Distillation: a small student", minutes=4,
        goal="Train a student a fraction of the teacher's size, with and without the teacher's soft targets.",
        text="**Distillation** trains a small student on the teacher's **soft targets** as well as the labels. "
             "The student is narrower in every layer, so it is smaller and needs far fewer **MACs**. The exercise "
             "trains the same student twice, once with the teacher and once on labels alone (the control).",
        explainers=("Distillation",),
        explainer_hint="In **Distillation**, raise the *Temperature* and watch the teacher's probabilities spread "
                       "out; then *Train both students* live with 300 examples.",
        exercise="Run the exercise: `digits-cnn` distilled to a student at width 0.25 for 25 epochs, with the "
                 "control. On **Compare**, read the parameters and the accuracy of both students.",
        recipe=_recipe("sample:digits-cnn", "sample:digits", [
            {"name": "student", "steps": [{"technique": "distill", "width": 0.25, "epochs": 25,
                                           "control": True}]}]),
        expected=(Expected("student: × fewer parameters", "student", "x_fewer_params", 15.43, 15.43, "×"),
                  Expected("student: × faster at batch 32", "student", "speedup_bs32", 7.1, 26.0, "×",
                           note="so small a model's time is mostly per-call overhead: on a busy server its "
                                "ratio moves a lot between runs"),
                  Expected("student: accuracy drop", "student", "accuracy_drop_pt", 2.22, 2.22, "pt"),
                  Expected("control: accuracy drop", "student (control)", "accuracy_drop_pt", 2.22, 2.22, "pt",
                           note="with every label of digits the student alone does as well; the live explainer "
                                "with 300 examples shows the teacher helping where labels are few")),
        question=Question("How many times fewer parameters than the teacher does your **student** have? "
                          "(one decimal)", variant="student", column="x_fewer_params", unit="×",
                          tolerance_rel=0.03, hint="Compare → the variant's detail, or Params in the table."),
        terms=("distillation", "soft-targets", "macs"),
        takeaway="A student is smaller and faster by construction; how much accuracy it keeps depends on "
                 "training, and the teacher helps most when labelled data is scarce."),
    Lesson(
        id="pareto", title="The trade-off: a Pareto frontier", minutes=4,
        goal="Put several variants on one chart and pick the best one inside a budget.",
        text="No variant wins on every axis. The **Pareto frontier** holds the variants nothing else beats on "
             "both size and accuracy; a **budget** (at most this accuracy drop, this size, this latency) picks "
             "one of them. Pruning too far falls off the cliff.",
        explainers=("Size & speed",),
        explainer_hint="In **Size & speed**, estimate each technique's size before you run anything.",
        exercise="Run the exercise: `digits-cnn` as int8, fp16, and 50% or 75% of its channels removed then "
                 "int8. On **Compare**, set the accuracy-drop budget to 2 pt and *Best means* to smallest.",
        recipe=_recipe("sample:digits-cnn", "sample:digits", [
            _quantize("int8", mode="static"), _quantize("fp16", mode="fp16"),
            {"name": "pruned50-int8", "steps": [{"technique": "prune", "method": "structured", "amount": 0.5,
                                                 "finetune_epochs": 2}, {"technique": "quantize", "mode": "static"}]},
            {"name": "pruned75-int8", "steps": [{"technique": "prune", "method": "structured", "amount": 0.75,
                                                 "finetune_epochs": 2}, {"technique": "quantize", "mode": "static"}]},
        ]),
        expected=(Expected("pruned 50% + int8: × smaller", "pruned50-int8", "x_smaller", 10.86, 10.86, "×"),
                  Expected("pruned 50% + int8: accuracy drop", "pruned50-int8", "accuracy_drop_pt", 1.11, 1.11, "pt"),
                  Expected("pruned 75% + int8: accuracy drop", "pruned75-int8", "accuracy_drop_pt", 60.0, 60.0, "pt",
                           note="the cliff: 2 epochs cannot recover from losing three quarters of the channels")),
        question=Question("Within a 2 pt accuracy-drop budget, which of your variants is the smallest?",
                          kind="variant", objective="smallest", max_drop_pt=2.0,
                          hint="Compare → Max accuracy drop 2, Best means: smallest."),
        terms=("pareto", "budget", "accuracy-drop"),
        takeaway="Combine techniques, then choose with a budget; the frontier shows what each extra saving "
                 "costs."),
    Lesson(
        id="language-models", title="Language models: int4, the KV cache, memory-bound decode", minutes=5,
        goal="Quantize a small language model's weights to int4, and see why decode speed follows bytes.",
        text="A language model generates one token at a time (**decode**), reading every weight for one token's "
             "arithmetic, with the **KV cache** holding what it already read. For a large model that makes decode "
             "**memory-bound**: **int4** weights (half a byte, one scale per block) mean fewer bytes per token. "
             "`tiny-lm` fits in the CPU's caches, so its speed-up comes from the kernels, not from memory.",
        explainers=("Decoding", "int4 blocks (LM)"),
        explainer_hint="Open the **Decoding** explainer (the KV cache and why decode is memory-bound) and "
                       "**int4 blocks (LM)** (block size against error and bytes).",
        exercise="Run the exercise: `tiny-lm` as fp32 and int4 (block 32). On **Compare**, read the size, the "
                 "perplexity and the decode tokens/s.",
        recipe=_recipe("sample:tiny-lm", "sample:tiny-lm-text", [
            _quantize("int4", mode="int4", block_size=32, accuracy_level=4)]) | {
            "benchmark": {"batch_sizes": [1], "threads": 1, "warmup": 2, "runs": 10, "max_seconds": 1.0}},
        expected=(Expected("int4: × smaller", "int4", "x_smaller", 5.86, 5.86, "×"),
                  Expected("int4: perplexity change", "int4", "perplexity_increase_pct", 0.046, 0.091, "%"),
                  Expected("int4: × faster decode", "int4", "decode_speedup", 2.1, 3.7, "×",
                           note="kernels, not memory: tiny-lm fits in cache; moves a lot between CPUs")),
        question=Question("How many times smaller than fp32 is your **int4** model? (one decimal)", variant="int4",
                          column="x_smaller", unit="×", tolerance_rel=0.03,
                          hint="Compare → results table, × smaller."),
        terms=("int4", "block-size", "kv-cache", "prefill", "decode", "memory-bound", "perplexity"),
        takeaway="int4 cuts a decoder's bytes about 6×; where decode is memory-bound that is the speed-up, and "
                 "perplexity barely moves."),
)
LESSON_IDS = tuple(lesson.id for lesson in LESSONS)


def lesson(lesson_id: str) -> Lesson:
    """The lesson with this id.

    Raises:
        BadInputError: no such lesson (names the ids).
    """
    for item in LESSONS:
        if item.id == lesson_id:
            return item
    raise BadInputError(f"lesson {lesson_id!r} does not exist; lessons: {', '.join(LESSON_IDS)}")


def term(term_id: str) -> Term:
    """The glossary entry with this id.

    Raises:
        BadInputError: no such term (names the ids).
    """
    if term_id not in GLOSSARY:
        raise BadInputError(f"glossary term {term_id!r} does not exist; terms: {', '.join(sorted(GLOSSARY))}")
    return GLOSSARY[term_id]


# --------------------------------------------------------------------------------------------------------------
# Checking an answer against the attendee's own run


def is_exercise_run(item: Lesson, results: dict | None) -> bool:
    """Whether `results` (a results.json) is this lesson's exercise: its model, and every exercise variant
    measured (status ok) with the exercise's steps (the attendee may add variants of their own)."""
    if not results or results.get("model") != item.model:
        return False
    measured = {v.get("name"): v for v in results.get("variants") or [] if v.get("status") == "ok"}
    for wanted in item.recipe["variants"]:
        got = measured.get(wanted["name"])
        if got is None:
            return False
        steps = got.get("steps") or []
        if len(steps) != len(wanted["steps"]):
            return False
        for want, have in zip(wanted["steps"], steps):
            if any(have.get(key) != value for key, value in want.items()):
                return False
    return True


def measured_value(frame: pd.DataFrame, results: dict, variant: str, column: str) -> float | None:
    """One number of a variant from its run: a results-table column, or "size_kb" (size in kB), or
    "speedup_bs{N}" read from the run's interleaved `speedup` entry where it has one (else the p50 ratio)."""
    rows = frame[frame["name"] == variant]
    if rows.empty:
        return None
    row = rows.iloc[0]
    if column == "size_kb":
        size = row.get("size_bytes")
        return None if size is None or pd.isna(size) else float(size) / 1e3
    if column.startswith("speedup_bs"):
        entry = _speedup_entry(results, variant, column[len("speedup_bs"):])
        if entry is not None:
            return float(entry["ratio"])
    value = row.get(column)
    if value is None or pd.isna(value):
        return None
    return float(value)


def _speedup_entry(results: dict, variant: str, batch: str) -> dict | None:
    for v in results.get("variants") or []:
        if v.get("name") == variant:
            entry = (v.get("speedup") or {}).get(batch)
            return entry if isinstance(entry, dict) and "ratio" in entry else None
    return None


@dataclass(frozen=True)
class ExpectedRow:
    """One expected result beside the attendee's own value."""

    label: str
    yours: float | None
    low: float
    high: float
    unit: str
    note: str

    @property
    def in_range(self) -> bool | None:
        """Within the measured range widened by 5%, and by one digits test sample (0.28 pt) for a drop: another
        CPU moves speeds and int8 rounding; sizes do not move."""
        if self.yours is None:
            return None
        slack = max(0.05 * max(abs(self.low), abs(self.high)), PT_SLACK if self.unit == "pt" else 0.0)
        return self.low - slack <= self.yours <= self.high + slack


@dataclass(frozen=True)
class AnswerCheck:
    """The verdict of "check my answer": passed, the right value from the attendee's run, and what to say."""

    passed: bool
    found_run: bool
    correct: Any = None  # the value (or variant name) the attendee's run gives
    message: str = ""
    expected: tuple[ExpectedRow, ...] = ()


def expected_rows(item: Lesson, results: dict) -> tuple[ExpectedRow, ...]:
    """The lesson's expected results beside the same numbers from `results`."""
    frame = results_frame(results)
    return tuple(ExpectedRow(e.label, measured_value(frame, results, e.variant, e.column), e.low, e.high, e.unit,
                             e.note) for e in item.expected)


def question_answer(item: Lesson, results: dict) -> Any:
    """The right answer to the lesson's question on this run (a number, a variant name, or None)."""
    q = item.question
    if q is None:
        return None
    frame = results_frame(results)
    if q.kind == "variant":
        return best_variant(frame, Budget(max_drop_pt=q.max_drop_pt), _first_batch(frame), q.objective)
    value = measured_value(frame, results, q.variant, q.column)
    if value is not None and q.minus:
        other = measured_value(frame, results, q.minus, q.column)
        value = None if other is None else value - other
    return value


def _first_batch(frame: pd.DataFrame) -> int:
    sizes = sorted(int(c[len("p50_ms_bs"):]) for c in frame.columns if c.startswith("p50_ms_bs"))
    return sizes[-1] if sizes else 1


def answer_choices(results: dict) -> list[str]:
    """The variants an attendee can name for a "variant" question: the measured ones of their run."""
    return [str(n) for n in ok_rows(results_frame(results))["name"]]


def check_answer(item: Lesson, results: dict | None, answer: Any) -> AnswerCheck:
    """Grade `answer` against the attendee's own exercise run `results` (None: no finished run found).

    Passed when the run is this lesson's exercise and the answer matches what the run measured (numbers within the
    question's tolerance). The expected ranges are shown beside the run's numbers but never fail it: another CPU
    moves speeds and int8 accuracy.
    """
    if results is None or not is_exercise_run(item, results):
        return AnswerCheck(False, False, message="No finished run of this exercise yet: press **Run the exercise**, "
                                                 "wait for it to complete, then check again.")
    rows = expected_rows(item, results)
    right = question_answer(item, results)
    q = item.question
    if q is None:
        return AnswerCheck(True, True, message="Exercise done.", expected=rows)
    if right is None:
        return AnswerCheck(False, True, message="Your run has no value for this question (a variant failed?): run "
                                                "the exercise again.", expected=rows)
    if q.kind == "variant":
        ok = isinstance(answer, str) and answer == right
        text = (f"Right: **{right}** is the smallest variant within {q.max_drop_pt:g} pt." if ok else
                f"Not quite: on your run the answer is **{right}**. {q.hint}")
        return AnswerCheck(ok, True, right, text, rows)
    number = _as_float(answer)
    if number is None:
        return AnswerCheck(False, True, right, "Type a number first.", rows)
    tolerance = max(q.tolerance_abs, q.tolerance_rel * abs(right))
    ok = abs(number - right) <= tolerance
    shown = f"{right:.3g} {q.unit}".strip()
    text = (f"Right: your run measured **{shown}**." if ok else
            f"Not quite: your run measured **{shown}** (you typed {number:g}). {q.hint}")
    return AnswerCheck(ok, True, right, text, rows)


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip().rstrip("×x%").replace(",", ""))
    except ValueError:
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def find_exercise_results(item: Lesson, runs: list[tuple[Any, dict | None]]) -> dict | None:
    """The newest of `runs` ((record, results.json) pairs, newest first) that is this lesson's finished exercise."""
    for record, results in runs:
        if getattr(record, "status", "completed") == "completed" and is_exercise_run(item, results):
            return results
    return None


__all__ = ["AnswerCheck", "EXERCISE_BENCHMARK", "Expected", "ExpectedRow", "GLOSSARY", "LESSONS", "LESSON_IDS",
           "Lesson", "MEASURED_ON", "Question", "Term", "answer_choices", "check_answer", "expected_rows",
           "find_exercise_results", "is_exercise_run", "lesson", "measured_value", "question_answer", "term"]
