"""Forms rendered from the step config dataclasses' field metadata (help, choices, minimum, maximum): every
option of every technique, with its default and help text. Each `*_ui()` returns plain values or configs."""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from core.errors import FeatherweightError
from core.recipe import STEP_TYPES, BenchmarkConfig, StepConfig, Variant

BATCH_CHOICES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
BLOCK_SIZES = [16, 32, 64, 128, 256]
TECHNIQUE_TITLES = {"quantize": "Quantize", "prune": "Prune", "distill": "Distill"}
TECHNIQUE_ORDER = ("prune", "distill", "quantize")  # torch steps before ONNX steps

# When an option matters, given the values above it (others are shown but disabled, with the reason).
RELEVANT = {
    ("quantize", "per_channel"): (lambda v: v["mode"] in ("static", "dynamic"), "static and dynamic modes only"),
    ("quantize", "calibration"): (lambda v: v["mode"] == "static", "static mode only"),
    ("quantize", "samples"): (lambda v: v["mode"] == "static", "static mode only"),
    ("quantize", "quantize_conv"): (lambda v: v["mode"] == "dynamic", "dynamic mode only"),
    ("quantize", "block_size"): (lambda v: v["mode"] == "int4", "int4 mode only"),
    ("prune", "lr"): (lambda v: v["finetune_epochs"] > 0, "only with fine-tuning epochs > 0"),
}
# Sliders where a slider reads better than a number box; (min, max, step) inside the config's open ranges.
SLIDERS = {("prune", "amount"): (0.05, 0.95, 0.05), ("distill", "width"): (0.05, 1.0, 0.05),
           ("distill", "alpha"): (0.0, 1.0, 0.05)}
FLOAT_FORMATS = {"lr": "%.5f"}


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def field_ui(technique: str, f: dataclasses.Field, value: Any, key: str, values: dict,
             node_names: list[str]) -> Any:
    """One widget for one config field, chosen by its type and metadata; returns the widget's value."""
    meta = f.metadata or {}
    help_text = meta.get("help")
    relevant, why = RELEVANT.get((technique, f.name), (None, None))
    disabled = relevant is not None and not relevant(values)
    if disabled:
        help_text = f"{help_text} (Applies to {why}.)"
    label = _label(f.name)
    choices = meta.get("choices")
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


def step_ui(step: StepConfig, key: str, node_names: list[str]) -> StepConfig:
    """Every option of one step, two per row; returns the new config (raises FeatherweightError if invalid)."""
    values: dict[str, Any] = {}
    fields = dataclasses.fields(step)
    columns = st.columns(2)
    for i, f in enumerate(fields):
        with columns[i % 2]:
            values[f.name] = field_ui(step.technique, f, getattr(step, f.name), f"{key}.{f.name}", values, node_names)
    return type(step)(**values)


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
    sequence_length = bench.sequence_length
    if sequence_inputs:
        sequence_length = st.number_input("Sequence length (tokens)", 1, 65536, bench.sequence_length,
                                          key=f"{key}.sequence_length", help=meta["sequence_length"]["help"])
    return BenchmarkConfig(batch_sizes=sizes, threads=int(threads), warmup=int(warmup), runs=int(runs),
                           max_seconds=float(max_seconds), sequence_length=int(sequence_length))


def variant_ui(variant: Variant, key: str, node_names: list[str]) -> tuple[Variant | None, str | None]:
    """A variant's name and every step's options; returns (variant, None) or (None, error)."""
    name = st.text_input("Variant name", variant.name, key=f"{key}.name",
                         help="Letters, digits, spaces and -_.=,[]+ (names the artifact folder).")
    steps, error = [], None
    for i, step in enumerate(variant.steps):
        st.markdown(f"**{i + 1}. {TECHNIQUE_TITLES.get(step.technique, step.technique)}** — "
                    f"{type(step).__doc__.strip()}")
        try:
            steps.append(step_ui(step, f"{key}.{i}.{step.technique}", node_names))
        except FeatherweightError as exc:
            error = str(exc)
            steps.append(step)
    if error:
        return None, error
    try:
        return Variant(name.strip(), tuple(steps)), None
    except FeatherweightError as exc:
        return None, str(exc)


def new_variant_steps(techniques: list[str]) -> tuple:
    """Default configs for the chosen techniques, in the order the pipeline runs them."""
    return tuple(STEP_TYPES[t]() for t in TECHNIQUE_ORDER if t in techniques)
