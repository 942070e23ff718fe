"""Learn page: workshop explainers. Each answers "what does this knob do?" by showing it on the current model's
real weights and data: quantization grids and calibration, pruning masks and the accuracy-vs-sparsity curve,
soft targets and a live two-student distillation, and a size estimate checked against measured runs."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core.teach import explainers as learn

from core.views import learn as learn_viz
from core.errors import FeatherweightError
from core.session import learn_sources
from core.format import MISSING, format_bytes, format_count
from ui import services
from ui.explain import explain, explain_live
from ui.lessons import glossary_ui, lessons_ui
from ui.process_cache import process_cached
from ui.run_picker import run_picker_ui
from ui.shell import ensure_app_shell

ensure_app_shell()

# Session-state and widget keys (one place, so tests and other pages agree).
INT4_WEIGHTS = 64  # projection matrices the int4 table quantizes: all of tiny-lm's, a sample of a 0.5B model's
MODEL_SPEC_KEY = "fw_model_spec"  # optional: a model spec ("sample:NAME" or a path) chosen elsewhere
LEARN_MODEL_KEY = "learn_model"
SECTION_KEY = "learn_section"
Q_TENSOR_KEY = "learn_q_tensor"
BITS_KEY = "learn_bits"
SYMMETRIC_KEY = "learn_symmetric"
CHECK_ORT_KEY = "learn_check_ort"
CALIB_TENSOR_KEY = "learn_calib_tensor"
PERCENTILE_KEY = "learn_percentile"
ENTROPY_BINS_KEY = "learn_entropy_bins"
LOG_Y_KEY = "learn_log_y"
P_TENSOR_KEY = "learn_p_tensor"
SPARSITY_KEY = "learn_sparsity"
SWEEP_PATTERN_KEY = "learn_sweep_pattern"
SWEEP_EPOCHS_KEY = "learn_sweep_epochs"
SWEEP_BUTTON_KEY = "learn_sweep_run"
SWEEPS_KEY = "learn_sweeps_requested"  # the sweeps this session asked for (they stay shown, from the cache)
TEMPERATURE_KEY = "learn_temperature"
SAMPLE_KEY = "learn_sample"
D_WIDTH_KEY = "learn_distill_width"
D_ALPHA_KEY = "learn_distill_alpha"
D_EPOCHS_KEY = "learn_distill_epochs"
D_EXAMPLES_KEY = "learn_distill_examples"
TRAIN_BUTTON_KEY = "learn_distill_train"
DISTILL_RESULT_KEY = "learn_distill_result"
W_QUANT_KEY = "learn_whatif_quantize"
W_PRUNE_KEY = "learn_whatif_prune"
W_AMOUNT_KEY = "learn_whatif_amount"
W_WIDTH_KEY = "learn_whatif_width"
RUN_PICK_KEY = "learn_run"
RUN_CHOICE_KEY = "learn_run_choice"  # the run chosen for the estimate check

SEEN_CURRENT_KEY = "learn_seen_current"  # the session's current model when this page last looked

INT4_SECTION = "int4 blocks (LM)"
DECODING_SECTION = "Decoding (LM)"
DEPTHWISE_SECTION = "Depthwise"
LESSONS_SECTION = "Lessons"  # the default: the lesson path loads no model, so a new visitor sees it at once
GLOSSARY_SECTION = "Glossary"
EXPLAINER_SECTIONS = ["Quantization", "Pruning", "Distillation", "Size & speed", DEPTHWISE_SECTION, INT4_SECTION,
                      DECODING_SECTION]
SECTIONS = [LESSONS_SECTION, *EXPLAINER_SECTIONS, GLOSSARY_SECTION]
LM_SECTIONS = (INT4_SECTION, DECODING_SECTION)  # explain a decoder: the current model if it is one, else tiny-lm
LM_SAMPLE = "sample:tiny-lm"
DEFAULT_SPEC = "sample:digits-cnn"
DEPTHWISE_DEFAULT = "sample:shapes-mobile"  # the Depthwise explainer opens on a net with depthwise layers
DEPTHWISE_OPENED_KEY = "learn_depthwise_opened"
LARGE_MODEL_PARAMS = 5_000_000
PERCENTILES = [99.0, 99.9, 99.99, 99.999]
ENTROPY_BINS = [128, 512, 2048, 4096]  # 2048: what the quantize step uses
CHART = {"theme": None, "config": {"displayModeBar": False}, "width": "stretch"}
PATTERN_TITLES = {"unstructured": "unstructured", "2:4": "2:4 (2 of every 4)", "channel": "whole channels"}


def _keep_valid(key: str, options: list, default) -> None:
    """Point a choice widget's state at `default` when its current value is not among `options` (the model
    changed under it), before the widget is drawn; the widget then takes no index / value of its own."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default


# --------------------------------------------------------------------------------------------------------------
# Which model: the session's, a spec another page set, or a sample picked here


def sources_ui() -> tuple[dict[str, learn.LearnSource], str | None]:
    """Every model the explainers can use, keyed by a plain cache key (the first is the default), and the key of
    the session's current model (from the Model page or 'fw_model_spec'), if any."""
    sources, current, warnings = learn_sources(st.session_state, spec_key=MODEL_SPEC_KEY, default=DEFAULT_SPEC)
    for warning in warnings:
        st.warning(warning, icon=":material/info:")
    return sources, current


# --------------------------------------------------------------------------------------------------------------
# 1. Quantization










def _calibration_samples(facts: dict) -> int:
    """The pipeline's 128 calibration samples, or 16 for big models, whose every tensor gets a histogram."""
    return learn.CALIBRATION_SAMPLES if facts["params"] <= LARGE_MODEL_PARAMS else 16


def quantization_ui(key: str, source: learn.LearnSource, facts: dict) -> None:
    weights = {w.name: w for w in facts["weights"]}
    if not weights:
        st.info("This model has no float Conv / Gemm / MatMul weights to quantize.")
        return
    st.subheader("Weights snap to a grid")
    c1, c2, c3 = st.columns([2, 2, 1])
    names = list(weights)
    _keep_valid(Q_TENSOR_KEY, names, names[0])
    tensor = c1.selectbox("Weight tensor", names, key=Q_TENSOR_KEY,
                          format_func=lambda n: f"{n} · {weights[n].op_type} {'×'.join(map(str, weights[n].shape))}")
    bits = c2.slider("Bits", 2, 8, 8, key=BITS_KEY, help="Fewer bits, fewer levels, bigger steps.")
    symmetric = c3.toggle("Symmetric", True, key=SYMMETRIC_KEY,
                          help="On: the grid is centred on 0 (zero point 0), as onnxruntime stores int8 weights. "
                               "Off: unsigned codes shifted by a zero point to cover exactly [min, max].")
    view = explain(source, "quantization", tensor=tensor, bits=bits, symmetric=symmetric)
    chart, numbers = st.columns([3, 1])
    chart.plotly_chart(learn_viz.weight_grid_figure(view["hist"], view["grid"], view["level_counts"], bits=bits),
                       key="learn_grid_chart", **CHART)
    numbers.metric("Scale (step between levels)", f"{view['scale']:.4g}")
    numbers.metric("Zero point", f"{view['zero_point']}")
    numbers.metric("Levels", f"{view['levels']}", help=f"integer codes {view['qmin']} … {view['qmax']}")
    numbers.metric("Mean squared error", f"{view['mse']:.3e}")
    numbers.metric("SQNR", f"{view['sqnr_db']:.1f} dB", help="signal-to-quantization-noise ratio: higher is better")
    formula = (f"max|w| / {view['qmax']} = {view['absmax']:.4g} / {view['qmax']}" if symmetric else
               f"(max − min) / {view['qmax']} = ({view['max']:.4g} − {view['min']:.4g}) / {view['qmax']}")
    st.caption(f"Every weight is replaced by the nearest grid line. **scale = {formula}**. At 8 bits symmetric "
               "this is exactly onnxruntime's int8 weight scheme; each bit removed doubles the step and costs "
               "about 6 dB.")

    st.subheader("One scale per tensor, or one per channel")
    left, right = st.columns(2)
    ratio = view["mse"] / view["mse_per_channel"] if view["mse_per_channel"] else float("inf")
    left.metric("Error with one scale per tensor (MSE)", f"{view['mse']:.3e}")
    right.metric("Error with one scale per channel (MSE)", f"{view['mse_per_channel']:.3e}",
                 delta=f"{ratio:.1f}× less error" if np.isfinite(ratio) else None, delta_color="normal")
    left.plotly_chart(learn_viz.channel_error_figure(view["channel_table"]), key="learn_channel_chart", **CHART)
    right.plotly_chart(learn_viz.bit_width_figure(view["bit_curve"], bits), key="learn_bits_chart", **CHART)
    st.caption(f"A shared scale must fit the channel with the largest weights, so channels of small weights get few "
               f"levels. Giving each of the {view['channels']} output channels its own scale costs "
               f"{view['channels']} extra numbers and fixes that.")
    if facts.get("decoder"):  # weight-only int4 / int8: no activation is quantized, so nothing to calibrate
        st.info("A decoder here gets weight-only quantization (int4 or int8 MatMulNBits, one scale per block of "
                "32 weights): its activations are not quantized ahead of time, so there is nothing to calibrate. "
                "**int4 blocks** shows the block scales on these weights; **Decoding** shows why fewer weight bytes "
                "make a token faster.", icon=":material/info:")
        return
    with st.expander("Is this exactly what onnxruntime does?"):
        st.caption("Quantize the model with onnxruntime (static int8, per channel), read back this tensor's int8 "
                   "weights and scales from the quantized graph, and compare.")
        if st.button("Check against onnxruntime", key=CHECK_ORT_KEY):
            try:
                check = explain(source, "onnxruntime_check", tensor=tensor)
            except FeatherweightError as exc:
                st.error(str(exc))
            else:
                if check["codes_equal"]:
                    st.success(f"Identical: every int8 code matches; largest scale difference "
                               f"{check['max_scale_diff']:.2g}; MSE {check['mse_ours']:.4g} here vs "
                               f"{check['mse_onnxruntime']:.4g} in onnxruntime's graph.",
                               icon=":material/check_circle:")
                else:
                    st.warning(f"{check['codes_differing']} codes differ; largest dequantized difference "
                               f"{check['max_dequantized_diff']:.3g}.")

    st.subheader("Activations need a range: calibration")
    if facts["synthetic"]:
        st.caption("This model has no data here, so calibration runs on synthetic inputs.")
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    percentile = c2.select_slider("Percentile", PERCENTILES, value=learn.DEFAULT_PERCENTILE, key=PERCENTILE_KEY,
                                  help="Percentile calibration clips the rarest values beyond this percentile.")
    entropy_bins = c3.select_slider("Entropy histogram bins", ENTROPY_BINS, value=learn.DEFAULT_ENTROPY_BINS,
                                    key=ENTROPY_BINS_KEY,
                                    help="The quantize step uses 2048 (TensorRT's choice). onnxruntime's own "
                                         "default, 128, leaves entropy calibration a single candidate (the full "
                                         "range); more bins let it choose a tighter clip.")
    log_y = c4.toggle("Log y", True, key=LOG_Y_KEY, help="A log count axis shows the rare large values.")
    samples = _calibration_samples(facts)
    try:
        study = explain(source, "calibration", percentile=float(percentile), entropy_bins=learn.DEFAULT_ENTROPY_BINS,
                        tensor=None, samples=samples)
    except FeatherweightError as exc:
        st.error(str(exc))
        return
    tensors = list(study["ranges"])
    if not tensors:
        st.info("onnxruntime found no float activations to calibrate in this graph.")
        return
    _keep_valid(CALIB_TENSOR_KEY, tensors, next((t for t in tensors if "relu" in t.lower()), tensors[0]))
    activation = c1.selectbox("Activation tensor", tensors, key=CALIB_TENSOR_KEY)
    ranges = study["ranges"][activation]
    if entropy_bins != learn.DEFAULT_ENTROPY_BINS:
        entropy = explain(source, "calibration", percentile=float(percentile), entropy_bins=int(entropy_bins),
                          tensor=activation, samples=samples)
        ranges = {**ranges, "entropy": entropy["ranges"][activation]["entropy"]}
    values = explain(source, "activations", tensor=activation, samples=samples)
    lo = min(float(values.min()), *(r[0] for r in ranges.values()))
    hi = max(float(values.max()), *(r[1] for r in ranges.values()))
    st.plotly_chart(learn_viz.activation_ranges_figure(learn.histogram(values, 120, (lo, hi)), ranges, log_y=log_y),
                    key="learn_calibration_chart", **CHART)
    table = learn.activation_range_table(values, ranges)
    st.dataframe(table, hide_index=True, width="stretch", key="learn_calibration_table",
                 placeholder=MISSING, column_config={
        "method": "Method", "low": st.column_config.NumberColumn("Low", format="%.4g"),
        "high": st.column_config.NumberColumn("High", format="%.4g"),
        "scale": st.column_config.NumberColumn("uint8 scale", format="%.4g"), "zero_point": "Zero point",
        "clipped_pct": st.column_config.NumberColumn("Clipped", format="%.4f%%"),
        "mse": st.column_config.NumberColumn("MSE", format="%.3g"),
        "max_abs_error": st.column_config.NumberColumn("Max error", format="%.3g"),
        "sqnr_db": st.column_config.NumberColumn("SQNR (dB)", format="%.1f")})
    st.caption(f"Ranges from the quantize step's own calibration on {study['samples']} calibration samples; errors are "
               "measured on the real activation values. A tighter range means finer steps for the common values, "
               "but everything outside it is clipped.")


# --------------------------------------------------------------------------------------------------------------
# 2. Pruning






def pruning_ui(key: str, source: learn.LearnSource, facts: dict) -> None:
    weights = {w.name: w for w in facts["weights"]}
    if not weights:
        st.info("This model has no float Conv / Gemm / MatMul weights to prune.")
        return
    st.subheader("Which weights go: three mask patterns")
    c1, c2 = st.columns([2, 2])
    names = list(weights)
    _keep_valid(P_TENSOR_KEY, names, names[min(1, len(names) - 1)])  # the second layer: more inputs to see
    tensor = c1.selectbox("Layer", names, key=P_TENSOR_KEY,
                          format_func=lambda n: f"{n} · {weights[n].op_type} {'×'.join(map(str, weights[n].shape))}")
    percent = c2.slider("Sparsity (%)", 0, 95, 50, step=5, key=SPARSITY_KEY,
                        help="Share of weights (or of channels) set to zero. 2:4 is always 50%.")
    view = explain(source, "pruning", tensor=tensor, sparsity=percent / 100)
    st.plotly_chart(learn_viz.mask_heatmaps_figure(view["matrices"], PATTERN_TITLES), key="learn_mask_chart",
                    **CHART)
    cols = st.columns(len(learn.PRUNE_PATTERNS))
    for col, pattern in zip(cols, learn.PRUNE_PATTERNS):
        fact = view["facts"][pattern]
        if fact is None:
            col.metric(f"{pattern}: weights zeroed", "n/a")
            continue
        col.metric(f"{pattern}: weights zeroed", f"{fact['sparsity']:.0%}")
        col.caption(f"keeps {fact['kept_magnitude']:.0%} of the total |w| · removes "
                    f"{fact['relative_error']:.0%} of the layer's weight norm")
    st.caption(f"Top-left corner of the {view['shape'][0]}-channel layer; one row per output channel, pale cells are "
               "pruned. Unstructured keeps the most signal but dense CPU kernels still multiply every zero; whole "
               "channels make the layer really smaller and faster; 2:4 needs GPU sparse tensor cores.")

    st.subheader("Accuracy as sparsity grows")
    if not facts["labels"]:
        st.info("The sweep measures accuracy, so it needs labelled data; this model's data has no labels.")
        return
    c1, c2, c3 = st.columns([2, 2, 1])
    pattern = c1.radio("Pattern", list(learn.SWEEP_PATTERNS), horizontal=True, key=SWEEP_PATTERN_KEY,
                       format_func=lambda p: {"unstructured": "unstructured (global)",
                                              "channel": "channels (per layer)"}[p])
    epochs = c2.radio("Fine-tune epochs", [0, 1, 2], index=1, horizontal=True, key=SWEEP_EPOCHS_KEY,
                      disabled=not facts["torch"],
                      help="Quick fine-tuning on the train split with the pruned weights held at zero.")
    epochs = epochs if facts["torch"] else 0
    requested = st.session_state.setdefault(SWEEPS_KEY, set())
    wanted = (key, pattern, int(epochs))
    if c3.button("Run the sweep", key=SWEEP_BUTTON_KEY, type="primary", disabled=wanted in requested):
        requested.add(wanted)
    if wanted not in requested:
        st.caption(f"Prunes a copy at {len(learn.SWEEP_AMOUNTS)} sparsities and measures eval accuracy"
                   + (f", then fine-tunes each for {epochs} epoch{'s' if epochs != 1 else ''}" if epochs else "")
                   + ". Takes a few seconds; the result is kept.")
        return
    try:
        sweep = explain(source, "sweep", pattern=pattern, epochs=int(epochs))
    except FeatherweightError as exc:
        st.error(str(exc))
        return
    st.plotly_chart(learn_viz.sparsity_curve_figure(sweep, current=percent / 100), key="learn_sweep_chart", **CHART)
    base = float(sweep["accuracy"].iloc[0])
    holds = sweep[sweep["accuracy"] >= base - 0.01]["sparsity"].max()
    text = f"Baseline {base:.1%}. Without fine-tuning, accuracy stays within 1 pt of it up to {holds:.0%} zeros."
    if sweep["accuracy_finetuned"].notna().any():
        tuned = sweep[sweep["accuracy_finetuned"].astype(float) >= base - 0.01]["sparsity"]
        text += f" With {epochs} epoch{'s' if epochs != 1 else ''} of fine-tuning: up to {tuned.max():.0%}." \
            if len(tuned) else " Fine-tuning recovers part of the loss."
    st.caption(text)


# --------------------------------------------------------------------------------------------------------------
# 3. Distillation




def distillation_ui(key: str, source: learn.LearnSource, facts: dict) -> None:
    if facts["task"] != "classification":
        st.info("Distillation explainers need a classifier (one 2-D logits output); this model is not one.")
        return
    teacher = explain(source, "teacher")
    logits, labels = teacher["logits"], teacher["labels"]
    st.subheader("Soft targets: what the teacher knows that a label does not")
    c1, c2 = st.columns([3, 2])
    temperature = c1.slider("Temperature T", 0.5, 20.0, 4.0, step=0.5, key=TEMPERATURE_KEY,
                            help="softmax(logits / T): higher T flattens the teacher's probabilities.")
    index = c2.number_input("Eval sample", 0, len(logits) - 1, teacher["interesting"], key=f"{SAMPLE_KEY}.{key}",
                            help="Starts at the sample where the teacher's second guess is strongest.")
    fact = learn.soft_target_facts(logits[int(index)], float(temperature))
    label = None if labels is None else int(labels[int(index)])
    chart, numbers = st.columns([3, 1])
    chart.plotly_chart(learn_viz.soft_targets_figure(fact["probs"], label, float(temperature)),
                       key="learn_soft_chart", **CHART)
    numbers.metric("Entropy of the soft targets", f"{fact['entropy_bits']:.2f} bits",
                   help=f"0 bits for a one-hot label; {fact['max_entropy_bits']:.2f} bits for a uniform guess")
    numbers.metric("Entropy of the label", "0 bits")
    numbers.metric("Teacher's top class", f"{fact['top']} ({fact['top_prob']:.0%})")
    numbers.metric("Runner-up", f"{fact['runner_up']} ({fact['runner_up_prob']:.1%})")
    curve = learn.temperature_curve(logits)
    st.plotly_chart(learn_viz.temperature_figure(curve, float(temperature), fact["max_entropy_bits"]),
                    key="learn_temperature_chart", **CHART)
    st.caption("A label says only which class is right. The teacher also says what the input resembles; raising "
               "T turns up those small probabilities (more bits per example), so the student learns which "
               "classes look alike. Too high and every class looks the same.")

    st.subheader("Live: a small student, with and without the teacher")
    if not facts["labels"]:
        st.info("The comparison trains one student on labels alone, so it needs labelled data.")
        return
    c1, c2, c3, c4 = st.columns(4)
    width = c1.select_slider("Student width", [0.125, 0.25, 0.5], value=0.25, key=D_WIDTH_KEY,
                             help="Share of the teacher's channels / neurons in every layer.")
    alpha = c2.slider("Teacher weight α", 0.0, 1.0, 0.7, step=0.1, key=D_ALPHA_KEY,
                      help="α × soft-target loss + (1 − α) × label loss.")
    epochs = c3.slider("Epochs", 3, 30, 15, key=D_EPOCHS_KEY)
    choices = [n for n in (100, 300, 1000) if n < facts["train"]] + [facts["train"]]
    _keep_valid(D_EXAMPLES_KEY, choices, 300 if 300 in choices else choices[-1])
    examples = c4.select_slider("Training examples", choices, key=D_EXAMPLES_KEY,
                                help="Fewer labelled examples: the teacher's help shows more.")
    settings = {"key": key, "width": float(width), "alpha": float(alpha), "epochs": int(epochs),
                "examples": int(examples), "temperature": float(temperature)}
    placeholder = st.empty()
    clicked = st.button("Train both students", key=TRAIN_BUTTON_KEY, type="primary")
    if clicked:
        points: list = []
        bar = st.progress(0.0, text="Starting a worker for the two students…")

        def on_point(point: dict) -> None:  # called here, in the script thread, as the worker sends each point
            points.append(point)
            if point["student"] == learn.STUDENTS[-1]:  # both students have this epoch: redraw once
                placeholder.plotly_chart(learn_viz.distill_curves_figure(points, epochs=epochs),
                                         key=f"learn_distill_live_{point['epoch']}", **CHART)
                bar.progress(point["epoch"] / epochs, text=f"Epoch {point['epoch']} of {epochs}")

        try:
            # The training runs in a worker with the Learn limits; leaving the page stops it (the rerun's
            # exception reaches run_isolated, which kills the worker).
            points = explain_live(source, "distill", on_point, width=width, temperature=temperature, alpha=alpha,
                                  epochs=epochs, train_samples=examples)
        except FeatherweightError as exc:
            bar.empty()
            st.error(str(exc))
            return
        bar.empty()
        st.session_state[DISTILL_RESULT_KEY] = {"settings": settings, "points": points}
    result = st.session_state.get(DISTILL_RESULT_KEY)
    if not result or result["settings"]["key"] != key:
        if not clicked:
            placeholder.plotly_chart(learn_viz.distill_curves_figure([], epochs=epochs), key="learn_distill_empty",
                                     **CHART)
            st.caption("Two identical students (same initial weights, same batches) train for a few seconds; "
                       "the curves update every epoch.")
        return
    if not clicked:
        placeholder.plotly_chart(learn_viz.distill_curves_figure(result["points"], epochs=result["settings"]
                                                                 ["epochs"]), key="learn_distill_chart", **CHART)
    final = {p["student"]: p for p in result["points"] if p["epoch"] == result["settings"]["epochs"]}
    taught, alone = final["with teacher"], final["labels only"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Student with teacher: eval accuracy", f"{taught['eval_accuracy']:.1%}",
              delta=f"{(taught['eval_accuracy'] - alone['eval_accuracy']) * 100:+.1f} pt vs labels only")
    c2.metric("Student with teacher: eval loss", f"{taught['eval_loss']:.3f}",
              delta=f"{taught['eval_loss'] - alone['eval_loss']:+.3f} vs labels only", delta_color="inverse")
    c3.metric("Student size", f"{format_count(taught['student_params'])} params",
              help=f"the teacher has {taught['teacher_params']:,}")
    note = "" if result["settings"] == settings else " Settings changed since: train again to see their effect."
    st.caption("Eval loss is the cross-entropy on the eval labels, the same yardstick for both students: soft "
               "targets usually give a better-calibrated student even when accuracy ties." + note)


# --------------------------------------------------------------------------------------------------------------
# 4. Size and speed






def _whatif_steps(quant: str, prune: str, amount: float, width: float | None) -> tuple:
    steps = []
    if width:
        steps.append((("technique", "distill"), ("width", width)))
    if prune != "none":
        steps.append((("technique", "prune"), ("method", prune), ("amount", amount)))
    if quant != "none":
        steps.append((("technique", "quantize"), ("mode", quant)))
    return tuple(steps)


def size_ui(key: str, source: learn.LearnSource, facts: dict) -> None:
    st.subheader("What each technique does to bytes and arithmetic")
    c1, c2 = st.columns(2)
    amount = c1.slider("Pruning amount (%)", 10, 90, 50, step=10, key=W_AMOUNT_KEY) / 100
    width = c2.select_slider("Student width", [0.125, 0.25, 0.5, 0.75], value=0.25, key=W_WIDTH_KEY)
    table = explain(source, "techniques", amount=amount, width=float(width))
    # The table full width (beside the chart its MACs column was cut off), sizes as format_bytes writes them
    # everywhere ("641 kB", where the column format gave "641KB"), then size and MACs side by side.
    shown = table.assign(size_bytes=table["size_bytes"].map(format_bytes))
    st.dataframe(shown, hide_index=True, width="stretch", key="learn_technique_table",
                 placeholder=MISSING, column_config={
        "technique": "Technique", "size_bytes": st.column_config.TextColumn("Est. size"),
        "x_smaller": st.column_config.NumberColumn("× smaller", format="%.1f×"),
        "bytes_per_weight": st.column_config.NumberColumn(
            "Bytes / weight", format="%.2f", help="Averaged over all of this model's weights, scales included; "
                                                  "layers a technique skips stay at 4 bytes."),
        "params": st.column_config.NumberColumn("Weights", format="localized"),
        "macs_per_sample": st.column_config.NumberColumn("MACs / sample", format="localized"),
        "arithmetic": "Arithmetic", "faster_on_cpu": "Faster on a CPU?"})
    st.plotly_chart(learn_viz.technique_size_figure(table), key="learn_size_chart", **CHART)
    st.caption("Sizes are **estimates** from this model's layers: weights at 4 bytes (fp32), 2 (fp16), 1 (int8, plus "
               "a scale per channel) or half (int4, plus a scale per 32), plus the graph structure the quantizers add, "
               "a per-tensor overhead fitted to the quantized digits samples' files. Run a recipe to measure them; "
               "the last section compares the two. Zeros from unstructured or 2:4 pruning are still stored and "
               "still multiplied on a CPU; removing channels or training a narrower student shrinks both bytes and "
               "multiply-adds.")

    st.subheader("What-if: estimate before you run")
    c1, c2, c3 = st.columns(3)
    quant = c1.selectbox("Quantize", ["none", "static", "dynamic", "fp16", "int4"], index=1, key=W_QUANT_KEY)
    prune = c2.selectbox("Prune", ["none", "structured", "unstructured", "2:4"], key=W_PRUNE_KEY)
    distill = c3.selectbox("Distill to a student", [None, 0.25, 0.5], key="learn_whatif_distill",
                           format_func=lambda w: "no" if w is None else f"width {w}")
    steps = _whatif_steps(quant, prune, amount, distill)
    base = explain(source, "estimate", steps=[])
    est = explain(source, "estimate", steps=[dict(s) for s in steps])
    c1, c2, c3 = st.columns(3)
    c1.metric("Estimated size", format_bytes(est["total_bytes"]),
              delta=f"{base['total_bytes'] / max(1, est['total_bytes']):.1f}× smaller", delta_color="off")
    c2.metric("Weights", format_count(est["params"]))
    c3.metric("Scales and graph structure", format_bytes(est["scales"] + est["structure"]))

    st.subheader("Estimate vs measured")
    try:
        runs = services.runs_with_variants()  # this session's runs only
    except (FeatherweightError, OSError) as exc:
        st.warning(f"The run store cannot be read: {exc}")
        return
    if not runs:
        st.info("No finished runs yet: run a recipe to compare (Optimize page), then come back to see each "
                "variant's estimated size beside its measured one.", icon=":material/science:")
        return
    run_id = run_picker_ui(runs, RUN_PICK_KEY, remember=RUN_CHOICE_KEY).id
    try:
        compare = services.run_estimates(run_id)
    except (FeatherweightError, OSError) as exc:
        st.warning(f"Cannot estimate this run's variants: {exc}")
        return
    left, right = st.columns([3, 2])
    left.plotly_chart(learn_viz.estimate_vs_measured_figure(compare), key="learn_compare_chart", **CHART)
    right.dataframe(compare.drop(columns=["note"]).assign(estimate_bytes=compare["estimate_bytes"].map(format_bytes),
                                                          measured_bytes=compare["measured_bytes"].map(format_bytes)),
                    hide_index=True, width="stretch", key="learn_compare_table", placeholder=MISSING,
                    column_config={"variant": "Variant", "steps": "Steps",
                                   "estimate_bytes": st.column_config.TextColumn("Estimated"),
                                   "measured_bytes": st.column_config.TextColumn("Measured"),
                                   "error_pct": st.column_config.NumberColumn("Error", format="%+.1f%%")})
    worst = compare["error_pct"].abs().max()
    st.caption(f"The estimate counts weights, scales and graph structure from the baseline's layers; it is within "
               f"{worst:.1f}% on this run. Global structured pruning ranks channels across layers, so its per-layer "
               "cuts (and size) differ most from the even cut the estimate assumes.")


def depthwise_ui(key: str, source: learn.LearnSource, facts: dict) -> None:
    """Why depthwise convs quantize badly, and what cross-layer equalization does about it (issue 18)."""
    st.subheader("Depthwise convolutions and per-tensor int8: how far apart the channels are")
    try:
        view = explain(source, "depthwise")
    except FeatherweightError as exc:
        st.error(str(exc))
        return
    layers = view["layers"]
    if layers.empty:
        st.info("This model has no Conv layers: nothing to equalize.")
        return
    st.plotly_chart(learn_viz.depthwise_spread_figure(view), key="learn_depthwise_chart", **CHART)
    worst = layers[layers["layer"] == view["worst"]].iloc[0]
    st.caption(f"One int8 scale per tensor must fit the channel with the largest weights. In {view['worst']} "
               f"({worst['kind']}, {worst['channels']} channels) the largest channel's weights are "
               f"{worst['spread_before']:.0f}x the smallest's, so the smallest spans "
               f"{worst['smallest_levels_before']:.1f} of 127 levels. Cross-layer equalization divides each channel "
               f"by a factor and multiplies the next layer's matching input by it (exact in fp32): after it, "
               f"{worst['spread_after']:.1f}x and {worst['smallest_levels_after']:.1f} levels, over "
               f"{view['pairs']} equalized pairs. Per-channel int8 solves the same problem with one scale per channel. "
               "Whether the spread costs accuracy is measured, not assumed: a spread of a few times costs next to "
               "nothing (make bench: shapes-mobile's plain per-tensor int8 within 0.1 pt of fp32), one of hundreds "
               "collapses per-tensor int8 (its spread fixture: more than 20 pt, equalization back within 1 pt).")
    st.dataframe(layers, hide_index=True, placeholder=MISSING, width="stretch", key="learn_depthwise_table",
                 column_config={"spread_before": st.column_config.NumberColumn("Spread before", format="%.1fx"),
                                "spread_after": st.column_config.NumberColumn("Spread after", format="%.1fx"),
                                "smallest_levels_before": st.column_config.NumberColumn("Levels before",
                                                                                        format="%.1f"),
                                "smallest_levels_after": st.column_config.NumberColumn("Levels after",
                                                                                       format="%.1f")})


# --------------------------------------------------------------------------------------------------------------
# int4 blocks: a decoder's weights, block size vs error vs bytes (core.teach.int4)


def int4_ui(source: learn.LearnSource) -> None:
    """int4 block quantization on a decoder's real weights (the current model's, or sample:tiny-lm's), and why
    tiny-lm's int4 speed-up says little about memory."""
    st.subheader("int4: one scale per block of weights")
    st.markdown("A 4-bit weight has 16 levels. One scale for a whole row would let a single large weight stretch "
                "the grid for all the others; so MatMulNBits cuts each row into **blocks** (the recipe's "
                "`block_size`) and gives each block its own scale. Smaller blocks: less error, more bytes for "
                f"scales. Below: {source.label}'s real attention and MLP weights (up to {INT4_WEIGHTS} of them), "
                "quantized the way onnxruntime's builder does it (symmetric, round to nearest).")
    try:
        with st.spinner(f"Quantizing {source.label}'s weights at each block size..."):
            table = explain(source, "int4_blocks", weights=INT4_WEIGHTS)
    except FeatherweightError as exc:
        st.error(f"Cannot read {source.label}'s weights: {exc}", icon=":material/error:")
        return
    st.plotly_chart(learn_viz.int4_block_figure(table), key="learn_int4_chart", **CHART)
    shown = table.assign(block=lambda t: t["block_size"].map(lambda b: "fp32" if b == 0 else str(int(b))),
                         size=lambda t: t["total_bytes"].map(format_bytes),
                         error_pct=lambda t: (t["relative_rms_error"] * 100).round(2))
    st.dataframe(shown[["block", "bits_per_weight", "size", "error_pct", "max_abs_error"]], hide_index=True,
                 placeholder=MISSING,
                 width="stretch")
    st.subheader("Why tiny-lm's int4 speed-up says little about memory")
    st.markdown("Decoding one token reads every weight once. tiny-lm's 2.4M weights are about 10 MB in fp32 and "
                "1.6 MB in int4: both fit in this CPU's caches, so reading fewer bytes saves little here. Whatever "
                "int4 changes in tiny-lm's tokens per second at batch 1 comes from the kernels (with "
                "`accuracy_level` 4, the level `auto` picks where it measures faster, MatMulNBits multiplies in "
                "int8, while fp32 runs a general matrix multiply on one row) and from per-token overheads; it "
                "depends on the CPU's int8 instructions (`make bench` checks >= 1.3x, labelled with the instruction "
                "set). A 0.5B-parameter decoder is about 2 GB in fp32: every token streams it from DRAM, decoding is "
                "memory-bound, and int4's ~6x fewer bytes are what make it faster (BENCHMARKS.md: a random-weight "
                "0.5B Llama, int4 decode >= 2x fp32, int4's peak memory <= 0.6x fp32's). **Decoding (LM)** "
                "explains why.")


def decoding_ui(source: learn.LearnSource) -> None:
    """How a decoder generates, on this decoder's shapes: the KV cache, why batch-1 decode is memory-bound, and why
    weight-only int4 helps exactly there (core.teach.decoding)."""
    st.subheader(f"Decoding one token at a time: {source.label}")
    try:
        with st.spinner("Reading the decoder's shapes and measuring this machine's memory bandwidth..."):
            view = explain(source, "decoding")
    except FeatherweightError as exc:
        st.error(f"Cannot explain {source.label}: {exc}", icon=":material/error:")
        return
    shape = view["shape"]
    c = st.columns(4)
    c[0].metric("Layers × KV heads × head size", f"{shape['layers']} × {shape['kv_heads']} × {shape['head_dim']}")
    c[1].metric("KV cache per token", format_bytes(view["kv_bytes_per_token"]),
                help="2 (key and value) × layers × KV heads × head size × 4 bytes (float32)")
    c[2].metric("Weights read per token, fp32", format_bytes(view["weight_bytes"]["fp32"]))
    c[3].metric("… in int4", format_bytes(view["weight_bytes"]["int4"]),
                f"{view['weight_bytes']['fp32'] / view['weight_bytes']['int4']:.1f}× fewer bytes", delta_color="off")
    st.markdown("**The KV cache.** A decoder predicts one token, appends it, and predicts the next. Attention needs "
                "the keys and values of every earlier token; recomputing them would cost the whole prompt again at "
                "every step, so the generator keeps them: the KV cache. The first pass over the prompt (prefill) "
                "fills it, many tokens at once; after that each step computes one token's keys and values and reads "
                "the rest.")
    st.plotly_chart(learn_viz.kv_cache_figure(view), key="learn_kv_chart", **CHART)
    st.markdown("**Why decoding is memory-bound.** Each step multiplies one row of activations by every weight "
                "matrix: each weight read from memory takes part in a single multiply-add. A CPU reads bytes from "
                "memory much more slowly than it multiplies, so at batch 1 the time per token is about the bytes "
                "read divided by the memory bandwidth.")
    if view.get("bandwidth_gb_s"):
        floor = view["floor_ms"]
        st.caption(f"Measured on this machine: {view['bandwidth_gb_s']:.1f} GB/s memory bandwidth (a "
                   f"{view['copy_mib']} MiB copy) and {view['gflops']:.0f} GFLOP/s float32 matrix multiply; "
                   f"so about {view['balance_flops_per_byte']:.0f} FLOPs per byte before the multiplies limit. "
                   f"Reading the weights alone takes about {floor['fp32']:.2f} ms per token in fp32, "
                   f"{floor['int8']:.2f} ms in int8, {floor['int4']:.2f} ms in int4 (estimates: bytes / bandwidth).")
    st.plotly_chart(learn_viz.decode_roofline_figure(view), key="learn_roofline_chart", **CHART)
    st.markdown("**Why weight-only int4 helps at batch 1.** int4 stores each weight in half a byte (plus one scale "
                "per block of 32), so each token reads about 6× fewer bytes than fp32, and in the memory-bound "
                "regime it runs up to that much faster; the arithmetic is the same or a little more (the weights "
                "are unpacked, and with `accuracy_level` 4 the activations are quantized to int8). Decode many "
                "sequences together and each byte read serves all of them: the lines fall where the multiplies "
                "become the limit, and there int4's fewer bytes no longer matter. A model whose weights fit in the "
                "CPU's cache (tiny-lm's 10 MB) is not memory-bound even at batch 1, which is why its int4 speed-up "
                "comes from kernels, not bytes.")
    st.caption("The curves are a roofline estimate from this machine's measured bandwidth and FLOP rate, not a "
               "measurement of the model; Compare shows the measured decode tokens/s of your runs.")


# --------------------------------------------------------------------------------------------------------------
# The page

def _open_section(section: str) -> None:
    st.session_state[SECTION_KEY] = section


st.title("Learn")
# A link may open a section (?section=Quantization): a lesson's hand-out, or a teacher's slide
linked = st.query_params.get("section")
if linked in SECTIONS and SECTION_KEY not in st.session_state:
    st.session_state[SECTION_KEY] = linked
section = st.segmented_control("Section", SECTIONS, default=SECTIONS[0], key=SECTION_KEY,
                               label_visibility="collapsed") or SECTIONS[0]
if section == LESSONS_SECTION:
    st.caption("A path of short lessons, each with an exercise on a sample, what we measured, and a question "
               "answered from your own run. The explainers (above) show each knob on a model's real weights.")
    lessons_ui(_open_section, section_key=SECTION_KEY, explainers=EXPLAINER_SECTIONS,
               glossary_section=GLOSSARY_SECTION)
    st.stop()
if section == GLOSSARY_SECTION:
    glossary_ui(lambda: _open_section(LESSONS_SECTION))
    st.stop()
st.caption("What does each knob do? Move it and watch, on this model's real weights and data.")
available, session_model = sources_ui()
if session_model is not None and st.session_state.get(SEEN_CURRENT_KEY) != session_model:
    st.session_state[SEEN_CURRENT_KEY] = session_model  # a new current model: explain that one
    st.session_state[LEARN_MODEL_KEY] = session_model
if section == DEPTHWISE_SECTION and session_model is None and not st.session_state.get(DEPTHWISE_OPENED_KEY) \
        and DEPTHWISE_DEFAULT in available:
    st.session_state[DEPTHWISE_OPENED_KEY] = True  # once: the visitor's own choice wins afterwards
    st.session_state[LEARN_MODEL_KEY] = DEPTHWISE_DEFAULT
_keep_valid(LEARN_MODEL_KEY, list(available), next(iter(available)))
top_left, _ = st.columns([1, 2])
model_key = top_left.selectbox("Model", list(available), format_func=lambda k: available[k].label,
                               key=LEARN_MODEL_KEY)
current = available[model_key]
try:
    model_facts = explain(current, "facts")
except FeatherweightError as exc:
    st.error(f"Cannot load {current.label}: {exc}", icon=":material/error:")
    st.stop()
if section in LM_SECTIONS:  # a decoder's sections: this model if it is one, else sample:tiny-lm
    lm_source = current if model_facts.get("decoder") else available.get(LM_SAMPLE)
    if lm_source is None:
        st.info("These sections explain a language model: install the lm extra (pip install -e '.[lm]') for "
                "sample:tiny-lm, or upload a zipped Hugging Face decoder on the Model page.", icon=":material/info:")
    elif not model_facts.get("decoder"):
        st.caption(f"{current.label} is not a language model: shown on sample:tiny-lm instead.")
    if lm_source is not None:
        (int4_ui if section == INT4_SECTION else decoding_ui)(lm_source)
    st.stop()
if model_facts.get("decoder") and section != "Quantization":
    st.info(f"{current.label} is a language model: {section.lower()} is not offered for decoders here (they take "
            "int4 / int8 weight-only quantization). See **Quantization** for its weights, **int4 blocks** and "
            "**Decoding**.", icon=":material/info:")
    st.stop()

if section == "Quantization":
    quantization_ui(model_key, current, model_facts)
elif section == "Pruning":
    pruning_ui(model_key, current, model_facts)
elif section == "Distillation":
    distillation_ui(model_key, current, model_facts)
elif section == DEPTHWISE_SECTION:
    depthwise_ui(model_key, current, model_facts)
else:
    size_ui(model_key, current, model_facts)
