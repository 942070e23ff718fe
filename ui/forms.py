"""Forms rendered from the step config dataclasses' field metadata (help, choices, minimum, maximum): every
option of every technique, with its default and help text. Each `*_ui()` returns plain values or configs.
The sweep builder renders the same metadata with several values per option."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import streamlit as st

from core.errors import BadInputError, FeatherweightError
from core.spec.recipe import SCHEME_FIELDS, STEP_TYPES, BenchmarkConfig, QuantizeConfig, StepConfig, Variant
from core.techniques import decoder as decoder_technique

BATCH_CHOICES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
BLOCK_SIZES = [16, 32, 64, 128, 256]
TECHNIQUE_TITLES = {"quantize": "Quantize", "prune": "Prune", "distill": "Distill"}
TECHNIQUE_ORDER = ("prune", "distill", "quantize")  # torch steps before ONNX steps

# When an option matters, given the values above it (others are shown but disabled, with the reason).
def _modes_using(option: str) -> tuple:
    """The quantize modes whose scheme config has `option` (core.spec.recipe.SCHEME_FIELDS: one place)."""
    return tuple(mode for mode, fields in SCHEME_FIELDS.items() if option in fields)


def _quantize_rule(option: str):
    modes = _modes_using(option)
    why = (f"{modes[0]} mode only" if len(modes) == 1 else
           f"{', '.join(modes[:-1])} and {modes[-1]} modes only")
    if option == "accuracy_level":
        why = "int4 mode, and dynamic (int8 weight-only) on decoders, only"
    return (lambda v: v["mode"] in modes), why


RELEVANT = {
    **{("quantize", f.name): _quantize_rule(f.name) for f in dataclasses.fields(QuantizeConfig)
       if f.name != "mode" and len(_modes_using(f.name)) < len(SCHEME_FIELDS)},
    ("prune", "lr"): (lambda v: v["finetune_epochs"] > 0, "only with fine-tuning epochs > 0"),
    ("quantize", "target"): (lambda v: v["mode"] == "static", "static mode only"),
}
# Sliders where a slider reads better than a number box; (min, max, step) inside the config's open ranges.
SLIDERS = {("prune", "amount"): (0.05, 0.95, 0.05), ("distill", "width"): (0.05, 1.0, 0.05),
           ("distill", "alpha"): (0.0, 1.0, 0.05)}
FLOAT_FORMATS = {"lr": "%.5f"}


_MARKDOWN_SPECIAL = set("\\`*_[]<>#|~$")  # what formats inline text; "." or "-" matter only at a line's start


def escape_markdown(text: str) -> str:
    """`text` shown as written where Streamlit renders markdown (errors, captions): `__main__.MyCNN` rendered
    as a bold "main.MyCNN", and a file named my__model__.onnx lost its underscores."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in str(text))


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


# A decoder takes one quantize step (core.techniques.decoder): these options, and these modes, only; the others are
# shown disabled, and the techniques it does not take are not offered.
DECODER_OPTIONS = ("mode", "block_size", "accuracy_level")
DECODER_WHY = "ordinary ONNX models only: a language model gets int4 / int8 weight-only MatMulNBits"


def techniques_for(card: dict | None) -> list[str]:
    """The techniques a new variant may use on this model: quantize only for a decoder."""
    return ["quantize"] if (card or {}).get("task") == "text-generation" else list(TECHNIQUE_ORDER)


# Options that need the torch model (an ONNX-only upload has no weights to train): disabled, and fine-tuning set to
# 0, so that the form never accepts work the pipeline would skip.
NEEDS_TORCH_FIELDS = {("prune", "finetune_epochs"): 0, ("prune", "lr"): None}
NO_TORCH_WHY = "models with their torch weights only: an ONNX-only model has no weights to train"


def field_ui(technique: str, f: dataclasses.Field, value: Any, key: str, values: dict,
             node_names: list[str], torch_model: bool = True, decoder: bool = False) -> Any:
    """One widget for one config field, chosen by its type and metadata; returns the widget's value. On a decoder
    (`decoder`), the options it does not take are disabled and the quantize modes limited to its own."""
    meta = f.metadata or {}
    help_text = meta.get("help")
    relevant, why = RELEVANT.get((technique, f.name), (None, None))
    disabled = relevant is not None and not relevant(values)
    if decoder and technique == "quantize" and f.name not in DECODER_OPTIONS:
        disabled, why = True, DECODER_WHY
    if not torch_model and (technique, f.name) in NEEDS_TORCH_FIELDS:
        disabled, why = True, NO_TORCH_WHY
        forced = NEEDS_TORCH_FIELDS[(technique, f.name)]
        if forced is not None:
            value = forced
            if st.session_state.get(key, forced) != forced:
                del st.session_state[key]  # the widget then starts from `value`
    if disabled:
        help_text = f"{help_text} (Applies to {why}.)"
    label = _label(f.name)
    choices = meta.get("choices")
    if decoder and (technique, f.name) == ("quantize", "mode"):
        choices = tuple(c for c in choices if c in decoder_technique.DECODER_MODES)
        help_text = (f"{help_text} On a language model: int4, or dynamic (int8 weight-only); static, fp16 and qat "
                     "are not offered.")
        if value not in choices:
            value = choices[0]
            if st.session_state.get(key, value) not in choices:
                del st.session_state[key]
    if choices:
        return st.radio(label, list(choices), index=list(choices).index(value), key=key, help=help_text,
                        horizontal=True, disabled=disabled)
    if isinstance(value, bool):
        return st.checkbox(label, value=value, key=key, help=help_text, disabled=disabled)
    if f.name == "exclude":
        options = sorted(set(node_names) | set(value))
        return tuple(st.multiselect(label, options, default=list(value), key=key, help=help_text,
                                    disabled=disabled, accept_new_options=True,
                                    placeholder="no node excluded"))
    if isinstance(value, dict):  # calibration_overrides: {tensor: method} as JSON (the tuner's choice writes it)
        text = st.text_input(label, json.dumps(value) if value else "", key=key, help=help_text, disabled=disabled,
                             placeholder='{"tensor name": "percentile"}')
        try:
            parsed = json.loads(text) if text.strip() else {}
        except ValueError:
            raise BadInputError(f"{technique}.{f.name}: {text[:60]!r} is not a JSON mapping of tensor name to "
                                "method") from None
        return parsed
    if f.name == "block_size":
        options = sorted(set(BLOCK_SIZES) | {value})
        return st.selectbox(label, options, index=options.index(value), key=key, help=help_text, disabled=disabled)
    if (technique, f.name) in SLIDERS:
        low, high, step = SLIDERS[(technique, f.name)]
        return st.slider(label, low, high, float(min(max(value, low), high)), step, key=key, help=help_text,
                         disabled=disabled)
    if isinstance(value, int):
        return int(st.number_input(label, min_value=int(meta.get("minimum", 0)),
                                   max_value=int(meta.get("maximum", 10**9)), value=int(value), step=1, key=key,
                                   help=help_text, disabled=disabled))
    if isinstance(value, float):
        low = float(meta.get("minimum", 0.0))
        high = float(meta.get("maximum", 1e9))
        step = 1e-4 if f.name == "lr" else 0.5 if high > 10 else 0.05
        return float(st.number_input(label, min_value=low, max_value=high, value=float(value), step=step, key=key,
                                     help=help_text, disabled=disabled, format=FLOAT_FORMATS.get(f.name)))
    st.caption(f"{label}: {value!r}")
    return value


def step_ui(step: StepConfig, key: str, node_names: list[str], torch_model: bool = True,
            decoder: bool = False) -> StepConfig:
    """Every option of one step, two per row; returns the new config (raises FeatherweightError if invalid)."""
    values: dict[str, Any] = {}
    fields = dataclasses.fields(step)
    columns = st.columns(2)
    for i, f in enumerate(fields):
        with columns[i % 2]:
            values[f.name] = field_ui(step.technique, f, getattr(step, f.name), f"{key}.{f.name}", values, node_names,
                                      torch_model, decoder)
    return type(step)(**values)


def doomed_reason(variant: Variant, card: dict) -> str | None:
    """Why this variant cannot run on the model of `card` (None when it can): what the card already knows."""
    if card.get("task") == "text-generation":  # a decoder: the builder's own rules (core.techniques.decoder)
        return decoder_technique.refusal(variant.steps)
    torch_model = card.get("format") == "torch+onnx"
    ops = set(card.get("op_types") or {})
    for step in variant.steps:
        if step.technique == "prune" and step.method != "unstructured" and not torch_model:
            return f"{step.method} pruning needs the torch model; on this ONNX model use unstructured pruning"
        if step.technique == "distill" and not (torch_model and card.get("architecture")):
            return "distillation needs the torch model of a bundled classifier"
        if step.technique == "quantize" and step.mode in ("dynamic", "int4") and not ops & {"MatMul", "Gemm"} \
                and not (step.mode == "dynamic" and step.quantize_conv):
            return f"{step.mode} quantization touches only MatMul/Gemm, and this model has none"
    return None


def current_step(step: StepConfig, key: str) -> StepConfig:
    """`step` with the values its widgets (keyed under `key`) hold now, so a title drawn above the widgets
    shows this run's values, not the last run's; the step itself when they do not make a valid config."""
    values = {f.name: st.session_state.get(f"{key}.{f.name}", getattr(step, f.name)) for f in dataclasses.fields(step)}
    if isinstance(values.get("exclude"), list):
        values["exclude"] = tuple(values["exclude"])
    for name, value in values.items():  # a mapping's widget holds its JSON text (see the dict branch above)
        if isinstance(getattr(step, name), dict) and isinstance(value, str):
            try:
                values[name] = json.loads(value) if value.strip() else {}
            except ValueError:
                return step
    try:
        return type(step)(**values)
    except (FeatherweightError, TypeError, ValueError):
        return step


def benchmark_ui(bench: BenchmarkConfig, key: str, *, sequence_inputs: bool) -> BenchmarkConfig:
    """Batch sizes, threads, warm-up, runs and time cap (and sequence length for token inputs)."""
    meta = {f.name: f.metadata for f in dataclasses.fields(BenchmarkConfig)}
    options = sorted(set(BATCH_CHOICES) | set(bench.batch_sizes))
    sizes = st.multiselect("Batch sizes", options, default=list(bench.batch_sizes), key=f"{key}.batch_sizes",
                           help=meta["batch_sizes"]["help"] + " Batch 1 is the latency a single request sees; "
                                "large batches show throughput.", accept_new_options=True)
    sizes = tuple(sorted({int(s) for s in sizes if str(s).strip().isdigit()})) or bench.batch_sizes
    c1, c2, c3, c4 = st.columns(4)
    threads = c1.number_input("Threads", 1, 256, bench.threads, key=f"{key}.threads", help=meta["threads"]["help"])
    warmup = c2.number_input("Warm-up runs", 0, 100000, bench.warmup, key=f"{key}.warmup",
                             help=meta["warmup"]["help"])
    runs = c3.number_input("Timed runs", 1, 1000000, bench.runs, key=f"{key}.runs", help=meta["runs"]["help"])
    max_seconds = c4.number_input("Time cap per batch size (s)", 0.5, 3600.0, float(bench.max_seconds), 0.5,
                                  key=f"{key}.max_seconds", help=meta["max_seconds"]["help"])
    runtimes = st.multiselect("Runtimes", list(meta["runtimes"]["choices"]), default=list(bench.runtimes),
                              key=f"{key}.runtimes", help=meta["runtimes"]["help"] + " Each one's missing package "
                              "is named in the run's results.")
    runtimes = tuple(["onnxruntime"] + [r for r in runtimes if r != "onnxruntime"])  # always the reference
    sequence_length = bench.sequence_length
    if sequence_inputs:
        sequence_length = st.number_input("Sequence length (tokens)", 1, 65536, bench.sequence_length,
                                          key=f"{key}.sequence_length", help=meta["sequence_length"]["help"])
    return BenchmarkConfig(batch_sizes=sizes, threads=int(threads), warmup=int(warmup), runs=int(runs),
                           max_seconds=float(max_seconds), sequence_length=int(sequence_length),
                           runtimes=runtimes)


def variant_ui(variant: Variant, key: str, node_names: list[str],
               torch_model: bool = True, decoder: bool = False) -> tuple[Variant | None, str | None]:
    """A variant's name and every step's options; returns (variant, None) or (None, error)."""
    name = st.text_input("Variant name", variant.name, key=f"{key}.name",
                         help="Letters, digits, spaces and -_.=,[]+ (names the artifact folder).")
    steps, error = [], None
    for i, step in enumerate(variant.steps):
        st.markdown(f"**{i + 1}. {TECHNIQUE_TITLES.get(step.technique, step.technique)}** — "
                    f"{type(step).__doc__.strip()}")
        try:
            steps.append(step_ui(step, f"{key}.{i}.{step.technique}", node_names, torch_model, decoder))
        except FeatherweightError as exc:
            error = str(exc)
            steps.append(step)
    if error:
        return None, error
    try:
        return Variant(name.strip(), tuple(steps)), None
    except FeatherweightError as exc:
        return None, str(exc)


def new_variant_steps(techniques: list[str], card: dict | None = None) -> tuple:
    """Default configs for the chosen techniques, in the order the pipeline runs them, fitted to the model of
    `card`: on an ONNX-only model pruning is unstructured without fine-tuning (structured needs torch)."""
    torch_model = card is None or card.get("format") == "torch+onnx"
    steps = []
    for t in TECHNIQUE_ORDER:
        if t not in techniques:
            continue
        if t == "quantize" and (card or {}).get("task") == "text-generation":  # weight-only int4 for a decoder
            steps.append(STEP_TYPES[t](mode="int4"))
        elif t == "prune" and not torch_model:
            steps.append(STEP_TYPES[t](method="unstructured", finetune_epochs=0))
        else:
            steps.append(STEP_TYPES[t]())
    return tuple(steps)


# ---- sweep builder: several values per option, one variant per combination (core.spec.recipe.expand_sweep)

BOOL_TITLES = {True: "on", False: "off"}


def _format_number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _example(f: dataclasses.Field) -> str:
    """Two valid values for a numeric option, for help and error texts: the default and its double (or half)."""
    default = f.default
    other = default * 2 if default * 2 < (f.metadata or {}).get("maximum", math.inf) else default / 2
    other = int(other) if isinstance(default, int) else other
    return f"{_format_number(default)}, {_format_number(other)}"


def parse_numbers(technique: str, f: dataclasses.Field, text: str) -> list:
    """Comma-separated values for one numeric option, each checked by building the technique's config with it.

    Args:
        technique: the step's technique (a key of STEP_TYPES).
        f: the config field.
        text: what the user typed, e.g. ``"0.25, 0.5"``.

    Returns:
        The distinct values in the order given (ints for integer options).

    Raises:
        BadInputError: a piece that is not a finite number, a value the config rejects, or no value at all.
    """
    where = f"{technique}.{f.name}"
    integer = isinstance(f.default, int)
    values: list = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue  # "0.25, 0.5," or a double comma: nothing to sweep there
        try:
            number = float(piece)
        except ValueError:
            raise BadInputError(f"{where}: {piece!r} is not a number; give numbers separated by commas, "
                                f"e.g. {_example(f)}") from None
        if not math.isfinite(number):
            raise BadInputError(f"{where}={piece} must be a finite number")
        # An integer option keeps a fractional value as it is, so the config's own check names it.
        value = int(number) if integer and number.is_integer() else number
        STEP_TYPES[technique](**{f.name: value})  # the config's own validation: range, integer, power of two
        if value not in values:
            values.append(value)
    if not values:
        raise BadInputError(f"{where}: give at least one value")
    return values


def _applies(technique: str, name: str, axes: dict[str, list]) -> tuple[bool, bool, str | None]:
    """Whether an option matters to some and to all combinations of the values chosen above it, and why not.

    Each RELEVANT rule reads one option, so varying one option at a time from the first values is exact.
    """
    relevant, why = RELEVANT.get((technique, name), (None, None))
    if relevant is None:
        return True, True, None
    first = {k: v[0] for k, v in axes.items()}
    outcomes = [relevant(first)] + [relevant({**first, k: x}) for k, values in axes.items() for x in values]
    return any(outcomes), all(outcomes), why


def sweep_field_ui(technique: str, f: dataclasses.Field, key: str, axes: dict[str, list],
                   node_names: list[str]) -> list:
    """The values to sweep for one config field: a multiselect for choices and switches, comma-separated numbers
    otherwise; returns them as a list (one value: not an axis).

    Raises:
        BadInputError: a value the config rejects, or none picked.
    """
    meta = f.metadata or {}
    label = _label(f.name)
    some, every, why = _applies(technique, f.name, axes)
    help_text = meta.get("help")
    if not some:
        help_text = f"{help_text} (Applies to {why}: not swept for these variants.)"
    elif not every:
        help_text = f"{help_text} (Applies to {why}: the other variants ignore it.)"
    disabled = not some
    choices = meta.get("choices")
    if f.name == "calibration_overrides":  # a per-tensor mapping the sensitivity scan writes: not an axis
        st.caption(f"{label}: none (the tuner's calibration phase chooses them per tensor)")
        return [{}]
    if f.name == "exclude":  # a list-valued option: one list for every variant, not an axis
        picked = st.multiselect(label, sorted(node_names), key=key, help=f"{help_text} The same for every variant.",
                                accept_new_options=True, placeholder="no node excluded", disabled=disabled)
        return [list(picked)]
    if choices or isinstance(f.default, bool) or f.name == "block_size":
        options = list(choices) if choices else [True, False] if isinstance(f.default, bool) else BLOCK_SIZES
        picked = st.multiselect(label, options, default=[f.default], key=key, help=help_text, disabled=disabled,
                                format_func=lambda v: BOOL_TITLES.get(v, str(v)) if isinstance(v, bool) else str(v),
                                placeholder="pick one or more")
        values = [o for o in options if o in picked]  # the options' order, so names and variants are stable
        if disabled:
            return [f.default]
        if not values:
            raise BadInputError(f"{technique}.{f.name}: pick at least one value")
        return values
    text = st.text_input(label, _format_number(f.default), key=key, disabled=disabled,
                         help=f"{help_text} Several values separated by commas, e.g. {_example(f)}.")
    return [f.default] if disabled else parse_numbers(technique, f, text)


def sweep_ui(key: str, node_names: list[str], techniques_offered: list[str] | None = None
             ) -> tuple[dict | None, list[str]]:
    """A sweep's name, techniques and every option of each step with several values allowed.

    Returns:
        (the sweep block as `core.spec.recipe.expand_sweep` takes it, or None before a technique is picked; one error
        per option with a bad value).
    """
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    name = c1.text_input("Sweep name", key=f"{key}.name", placeholder="sweep",
                         help="Variants are named NAME[option=value,...] after the options that vary.")
    techniques = c2.multiselect("Techniques to sweep (run in this order: prune, distill, quantize)",
                                list(techniques_offered or TECHNIQUE_ORDER), key=f"{key}.techniques",
                                format_func=TECHNIQUE_TITLES.get)
    if not techniques:
        return None, []
    steps, errors = [], []
    for i, technique in enumerate(t for t in TECHNIQUE_ORDER if t in techniques):
        cls = STEP_TYPES[technique]
        st.markdown(f"**{i + 1}. {TECHNIQUE_TITLES[technique]}** — {cls.__doc__.strip()}")
        axes: dict[str, list] = {}
        columns = st.columns(2)
        for j, f in enumerate(dataclasses.fields(cls)):
            with columns[j % 2]:
                try:
                    axes[f.name] = sweep_field_ui(technique, f, f"{key}.{technique}.{f.name}", axes, node_names)
                except BadInputError as exc:
                    errors.append(str(exc))
                    axes[f.name] = [f.default]
        steps.append({"technique": technique, **{k: v if len(v) > 1 else v[0] for k, v in axes.items()}})
    return {"name": (name or "").strip() or "sweep", "steps": steps}, errors


def distinct_variant_count(variants: tuple[Variant, ...]) -> int:
    """How many of these variants build different models: options that do not apply to a variant (RELEVANT,
    e.g. calibration outside static mode) are set to their defaults before comparing."""
    seen = set()
    for variant in variants:
        steps = []
        for step in variant.steps:
            values = step.to_dict()
            for f in dataclasses.fields(step):
                relevant, _ = RELEVANT.get((step.technique, f.name), (None, None))
                if relevant is not None and not relevant(values):
                    values[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            steps.append(values)
        seen.add(json.dumps(steps, sort_keys=True, default=str))
    return len(seen)
