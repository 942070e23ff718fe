"""Insight page: which layer broke the accuracy (sensitivity scan), the best variant within a quality budget
(tuner), and why a variant is not faster (CPU, per-operator profile, rules, batch x thread scaling).

Every measurement runs as a job in a worker process (core.jobs.insight); this page only submits, polls and draws."""

from __future__ import annotations

import streamlit as st

from core.jobs import insight
from core.errors import FeatherweightError
from core.format import MISSING, format_bytes, format_speedup
from core.views.insight import op_time_figure, scaling_figure, sensitivity_figure, sensitivity_heatmap, tune_figure
from core.session import DATA_KEY, MODEL_KEY, NO_DATA, RECIPE_KEY, RECIPE_VERSION_KEY
from core.jobs.store import ACTIVE
from core.results.table import is_decoder_run
from ui import services
from ui.forms import escape_markdown
from ui.job_status import job_status_ui
from ui.run_picker import run_picker_ui
from ui.shell import ensure_app_shell
from ui import state as state_keys

ensure_app_shell()

POLL_S = 0.5

# Tables show words and units, not the JSON field names (drop_pt, sqnr_db, p50_ms).
SCAN_COLUMNS = {
    "rank": st.column_config.TextColumn("Rank", help="1 = most sensitive; '=' marks layers tied within one "
                                        "validation sample, whose order the scan cannot tell"),
    "name": st.column_config.TextColumn("Layer"), "type": st.column_config.TextColumn("Op type"),
    "drop": st.column_config.NumberColumn("Quality drop (pt)", format="%.2f",
                                          help="Lost when only this layer is quantized"),
    "agreement": st.column_config.NumberColumn("Agreement", format="percent", help="Top-1 equal to the baseline's"),
    "sqnr_db": st.column_config.NumberColumn("SQNR (dB)", format="%.1f", help="Higher = less damage to the outputs"),
    "params": st.column_config.NumberColumn("Params", format="localized")}
TUNE_COLUMNS = {
    "name": st.column_config.TextColumn("Trial"), "status": st.column_config.TextColumn("Status"),
    "drop_pt": st.column_config.NumberColumn("Quality drop (pt)", format="%.2f"),
    "speedup": st.column_config.NumberColumn("× faster (chosen on)", format="%.2f×",
                                             help="The trial's own timing against the baseline, on validation "
                                                  "inputs: what the tuner chose on"),
    "reported": st.column_config.TextColumn("Speed-up (reported)",
                                            help="A separate timing of every trial together at the end, with its 95% "
                                                 "interval: the figure to quote (no choice read it)"),
    "size_bytes": st.column_config.NumberColumn("Size (bytes)", format="localized"),
    "reason": st.column_config.TextColumn("Why kept or not", width="large")}
SCALING_COLUMNS = {
    "variant": st.column_config.TextColumn("Variant"), "batch_size": st.column_config.NumberColumn("Batch size"),
    "threads": st.column_config.NumberColumn("Threads"),
    "p50_ms": st.column_config.NumberColumn("p50 latency (ms)", format="%.3f"),
    "p90_ms": st.column_config.NumberColumn("p90 latency (ms)", format="%.3f"),
    "throughput": st.column_config.NumberColumn("Throughput (samples/s)", format="localized"),
    "ms_per_sample": st.column_config.NumberColumn("Latency per sample (ms)", format="%.4f")}


# --------------------------------------------------------------------------------------------------------------
# Jobs


def _submit(kind: str, config: dict, model, data, label: str, state_key: str) -> None:
    """Queue an insight job for the current model and data and remember its run id under `state_key`."""
    try:
        st.session_state[state_key] = services.submit_insight_job(kind, config, model, data, label)
    except FeatherweightError as exc:
        st.session_state[state_keys.NOTICE_KEY] = ("error", str(exc))


def _submit_diagnose(config: dict, record, state_key: str, label: str) -> None:
    try:
        st.session_state[state_key] = services.submit_diagnosis(config, record, label)
    except FeatherweightError as exc:
        st.session_state[state_keys.NOTICE_KEY] = ("error", str(exc))


def _pick_run(kinds: tuple, state_key: str, widget_key: str, *, with_results: bool = False, label: str = "Run"):
    """The session's runs of these kinds in the one run picker, remembering the choice in `state_key`."""
    records = services.runs_of_kind(kinds, with_results=with_results)
    return run_picker_ui(records, widget_key, remember=state_key, label=label) if records else None


# --------------------------------------------------------------------------------------------------------------
# Sensitivity


def scan_form_ui(model) -> dict:
    """The scan's settings as a SensitivityConfig dict."""
    c1, c2, c3 = st.columns(3)
    technique = c1.radio("Change one layer at a time by", ["quantize", "prune"], key="scan_technique",
                         format_func={"quantize": "quantizing it (int8)", "prune": "pruning it"}.get)
    config: dict = {"technique": technique}
    if technique == "quantize":
        config["mode"] = c2.selectbox("Mode", ["static", "dynamic"], key="scan_mode",
                                      help="static: weights and activations int8 (Conv and MatMul); dynamic: "
                                           "MatMul weights only.")
        config["per_channel"] = c3.toggle("Per-channel weights", value=True, key="scan_per_channel")
        config["calibration"] = c3.selectbox("Calibration", ["minmax", "entropy", "percentile"],
                                             key="scan_calibration")
    else:
        config["amount"] = c2.slider("Share of the layer's weights zeroed", 0.1, 0.95, 0.5, 0.05,
                                     key="scan_amount")
        extra = c3.multiselect("Also measure (heatmap)", [0.3, 0.5, 0.7, 0.9], default=[0.3, 0.7, 0.9],
                               key="scan_amounts", format_func=lambda a: f"{a:.0%}")
        config["amounts"] = [a for a in extra if a != config["amount"]]
    return config


def keep_top_k_ui(result: dict) -> None:
    """The one-click fix: keep the k most sensitive layers in float in the Optimize page's recipe."""
    from core.spec.recipe import Recipe
    from core.analysis.sensitivity import recipe_with_exclude, top_layers

    layers = [row for row in result.get("layers", []) if row.get("drop") is not None]
    if result.get("technique") != "quantize":
        st.caption("A prune scan ranks layers for pruning; keeping layers in float applies to quantize scans.")
        return
    if not layers:
        return
    if st.session_state.get(state_keys.TOPK_KEY, 1) > len(layers):  # left over from a scan with more layers
        st.session_state[state_keys.TOPK_KEY] = len(layers)
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    k = c1.number_input("k", 1, len(layers), min(2, len(layers)), key=state_keys.TOPK_KEY)
    if c2.button(f"Keep the top {k} in float", icon=":material/ac_unit:", key="keep_top_k"):
        names = top_layers(result, int(k))
        recipe = st.session_state.get(RECIPE_KEY) or Recipe()
        st.session_state[RECIPE_KEY] = recipe_with_exclude(recipe, names)
        st.session_state[RECIPE_VERSION_KEY] = st.session_state.get(RECIPE_VERSION_KEY, 0) + 1
        st.session_state[state_keys.NOTICE_KEY] = ("success", f"Every quantize step of the recipe now keeps "
                                                           f"{', '.join(names)} in float.")
        st.rerun()


def sensitivity_result_ui(result: dict) -> None:
    from core.analysis.sensitivity import resolution_caption

    layers = result.get("layers", [])
    ok = [row for row in layers if row.get("drop") is not None]
    base = (result.get("baseline") or {}).get("accuracy")
    c1, c2, c3 = st.columns(3)
    c1.metric("Layers scanned", len(layers))
    c2.metric("Baseline accuracy", f"{base * 100:.2f}%" if base is not None else "—")
    if ok:
        # A drop is bad news (red, down); "no drop" is not news at all (grey), never an alarm-red arrow.
        dropped = ok[0]["drop"] > 0
        c3.metric("Most sensitive" + (" (tied)" if ok[0].get("tied") else ""),
                  ok[0]["name"].split("/")[-2] if "/" in ok[0]["name"] else ok[0]["name"],
                  f"-{ok[0]['drop']:.2f} pt" if dropped else "no drop", delta_color="normal" if dropped else "off",
                  delta_arrow="auto" if dropped else "off")
    st.caption(f"Scan of **{result.get('model')}** ({result.get('technique')}); drop = {result.get('metric')}. "
               "SQNR compares the outputs with the baseline's (higher = less damage). "
               + resolution_caption(result))
    chart, heat = st.tabs(["Ranked", "Heatmap"])
    with chart:
        st.plotly_chart(sensitivity_figure(result), key="scan_ranked")
    with heat:
        st.plotly_chart(sensitivity_heatmap(result), key="scan_heatmap")
    keep_top_k_ui(result)
    failed = [row for row in layers if row.get("error")]
    for row in failed:
        st.warning(f"{row['name']}: {row['error']}", icon=":material/warning:")
    st.dataframe([{"rank": "" if row.get("rank") is None else f"{row['rank']}{'=' if row.get('tied') else ''}",
                   **{k: row.get(k) for k in ("name", "type", "drop", "agreement", "sqnr_db", "params")}}
                  for row in layers], hide_index=True, key="scan_table", column_config=SCAN_COLUMNS,
                 placeholder=MISSING)


def graph_link_ui(result: dict, scan_id: str) -> None:
    """A layer of the scan -> its node on the Graph page, with this scan's sensitivity overlaid."""
    nodes = [row["node"] for row in result.get("layers", []) if row.get("node")]
    if not nodes:
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    node = c1.selectbox("Layer to find on the graph", nodes, key=f"scan_graph_node.{scan_id}")
    # A button, not st.page_link: the page also runs on its own (tests), where no navigation lists pages/graph.py.
    if c2.button("Open in graph", icon=":material/account_tree:", key=f"scan_graph_open.{scan_id}"):
        st.switch_page("pages/graph.py", query_params={"node": node, "scan": scan_id})


def sensitivity_ui(model, data) -> None:
    st.markdown("Change **one layer at a time** and measure how much each one alone costs: the layers at the top "
                "are the ones to keep in float (or prune less).")
    if model is not None:
        config = scan_form_ui(model)
        st.button("Scan layers", type="primary", icon=":material/radar:", key="scan_start",
                  on_click=_submit, args=("sensitivity", config, model, data,
                                          f"sensitivity · {model.label}", state_keys.SCAN_RUN_KEY))
    record = _pick_run(("sensitivity",), state_keys.SCAN_RUN_KEY, "scan_pick", label="Scan")
    if record is None:
        st.info("No scan yet: choose the settings above and press **Scan layers**.", icon=":material/radar:")
        return
    state = job_status_ui(record.id, "scan")
    from core.analysis.sensitivity import load_sensitivity

    path = services.run_dir(record.id) / "sensitivity.json"
    if state not in ACTIVE and path.exists():
        try:
            result = load_sensitivity(path).to_dict()  # ranked, ties marked (old scans too)
            sensitivity_result_ui(result)
            graph_link_ui(result, record.id)
        except FeatherweightError as exc:
            st.error(str(exc), icon=":material/error:")


# --------------------------------------------------------------------------------------------------------------
# Tuner


def tune_form_ui(model) -> dict:
    c1, c2, c3, c4 = st.columns(4)
    max_drop = c1.number_input("Max quality drop (pt)", 0.0, 100.0, 0.5, 0.1, key="tune_max_drop",
                               help="Accuracy points with labelled data; else disagreement with the baseline.")
    objective = c2.radio("Objective", ["latency", "size"], key="tune_objective",
                         format_func={"latency": "fastest", "size": "smallest"}.get)
    batch = c3.selectbox("Batch size", [1, 8, 32, 64, 128, 256], index=5, key="tune_batch",
                         disabled=objective != "latency")
    budget = c4.slider("Time budget (s)", 30, 600, 120, 10, key="tune_budget")
    torch_model = (model.card.get("format") or "").startswith("torch")
    prune = st.toggle("Try structured pruning with fine-tuning", value=torch_model, disabled=not torch_model,
                      key="tune_prune", help="Needs a torch model (samples, or uploaded weights of a sample "
                                             "architecture); ONNX-only models are quantized only.")
    return {"max_drop_pt": float(max_drop), "objective": objective, "batch_size": int(batch),
            "budget_s": float(budget), "allow_prune": bool(prune and torch_model)}


def tune_result_ui(run_id: str, active: bool) -> None:
    from core.analysis.tuner import load_tune_log

    directory = services.run_dir(run_id)

    @st.fragment(run_every=POLL_S if active else None)
    def live() -> None:
        log = load_tune_log(directory)
        if log is None:
            st.caption("The tuner's trials appear here as it measures them.")
            return
        best = log.get("best")
        trials = log.get("trials", [])
        best_trial = next((t for t in trials if t["name"] == best), {})
        c1, c2, c3 = st.columns(3)
        # Not a metric: a metric cuts a long name ("int8-static[per_channel=F…"); markdown wraps it whole.
        c1.markdown(f"<small>{'Best so far' if log.get('status') == 'running' else 'Best'}</small>  \n"
                    f"**{escape_markdown(str(best or '–'))}**", unsafe_allow_html=True)
        if (log.get("config") or {}).get("objective") == "size":
            c2.metric("Size", format_bytes(best_trial.get("size_bytes")))
        else:
            reported = best_trial.get("reported_speedup")
            c2.metric(f"Speed-up at batch {log.get('timing_batch')}",
                      format_speedup(reported) if reported else f"{best_trial.get('speedup') or 1:.2f}x",
                      None if reported else "chosen on; the reported timing comes at the end", delta_color="off",
                      delta_arrow="off")
        c3.metric("Quality drop", f"{best_trial.get('drop_pt') or 0:.2f} pt")
        st.plotly_chart(tune_figure(log), key=f"tune_chart.{len(trials)}")
        for line in log.get("summary", []):
            st.markdown(line)
        st.dataframe([{**{k: t.get(k) for k in ("name", "status", "drop_pt", "speedup")},
                       "reported": format_speedup(t.get("reported_speedup")) if t["name"] != "baseline" else "1x",
                       **{k: t.get(k) for k in ("size_bytes", "reason")}}
                      for t in trials], hide_index=True, key=f"tune_table.{len(trials)}", column_config=TUNE_COLUMNS,
                     placeholder=MISSING)
        best_yaml = directory / "best.yaml"
        if best_yaml.exists() and not active:
            c1, c2, c3 = st.columns(3)
            c1.download_button("Download best.yaml", best_yaml.read_text(encoding="utf-8"), file_name="best.yaml",
                               mime="application/x-yaml", icon=":material/download:", key="tune_download",
                               on_click="ignore")
            c2.button("Use in Optimize", icon=":material/tune:", key="tune_use", on_click=_use_best,
                      args=(best_yaml.read_text(encoding="utf-8"),))
            if c3.button("Open in Compare", icon=":material/scatter_plot:", key="tune_compare"):
                services.open_run(run_id)
                st.switch_page("pages/compare.py")

    live()


def _use_best(text: str) -> None:
    from core.spec.recipe import Recipe

    recipe = Recipe.from_text(text)
    st.session_state[RECIPE_KEY] = recipe.replace(model=None, data=None)
    st.session_state[RECIPE_VERSION_KEY] = st.session_state.get(RECIPE_VERSION_KEY, 0) + 1
    st.session_state[state_keys.NOTICE_KEY] = ("success", "The best variant is now the Optimize page's recipe.")


def tuner_ui(model, data) -> None:
    st.markdown("Give a **quality budget** and a **time budget**: the tuner tries static / dynamic int8, "
                "calibrations, keeping sensitive layers in float and structured pruning, and keeps the best so "
                "far, so stopping early still leaves an answer.")
    if model is not None:
        config = tune_form_ui(model)
        st.button("Start tuning", type="primary", icon=":material/auto_fix_high:", key="tune_start",
                  on_click=_submit, args=("tune", config, model, data, f"tune · {model.label}",
                                          state_keys.TUNE_RUN_KEY))
    record = _pick_run(("tune",), state_keys.TUNE_RUN_KEY, "tune_pick", label="Tuning run")
    if record is None:
        st.info("No tuning run yet.", icon=":material/auto_fix_high:")
        return
    state = job_status_ui(record.id, "tuning run")
    if state is not None:
        tune_result_ui(record.id, state in ACTIVE)


# --------------------------------------------------------------------------------------------------------------
# Diagnostics and scaling


def cpu_panel_ui() -> None:
    from core.analysis.diagnose import cpu_panel

    cpu = cpu_panel(threads=1)
    st.markdown(f"**{cpu['cpu']}** · {cpu['cores']} logical cores"
                + (f" ({cpu['physical_cores']} physical)" if cpu.get("physical_cores") else "")
                + f" · benchmarks use {cpu['threads_used']} thread")
    cols = st.columns(len(cpu["features"]))
    for col, (name, present) in zip(cols, cpu["features"].items()):
        col.markdown(f"{':material/check_circle:' if present else ':material/cancel:'} {name}")
    for note in cpu["notes"]:
        st.caption(note)


def _variants_of(record) -> list[str]:
    results = services.run_results(record.id) or {}
    return [v["name"] for v in results.get("variants", []) if v.get("status") == "ok"]


def diagnostics_ui() -> None:
    cpu_panel_ui()
    st.divider()
    record = _pick_run(("run", "tune"), "fw_insight_diag_source", "diag_source", with_results=True,
                       label="Run to diagnose")
    if record is None:
        st.info("No finished run yet: run a recipe (Optimize) or the tuner first.", icon=":material/info:")
    else:
        variants = [v for v in _variants_of(record) if v != "baseline"]
        if variants:
            from core.results.table import batch_sizes_of

            sizes = batch_sizes_of(services.run_results(record.id) or {}) or [1]
            c1, c2 = st.columns(2)
            variant = c1.selectbox("Variant (compared with the baseline)", variants, key="diag_variant")
            batch = c2.selectbox("Batch size", sizes, index=len(sizes) - 1, key="diag_batch")
            st.button("Profile per operator", icon=":material/troubleshoot:", key="diag_start",
                      on_click=_submit_diagnose,
                      args=({"source_run": record.id, "variants": [variant], "batch_size": int(batch)}, record,
                            state_keys.DIAG_RUN_KEY, f"profile · {variant}"))
    diag_id = st.session_state.get(state_keys.DIAG_RUN_KEY)
    if not diag_id:
        return
    state = job_status_ui(diag_id, "profile")
    diag = insight.load_diagnostics(services.run_dir(diag_id))
    if state in ACTIVE or not diag:
        return
    if diag.get("decode_step_past_tokens") is not None:
        st.caption(f":material/token: A decoder: profiled one decode step (1 new token after "
                   f"{diag['decode_step_past_tokens']} tokens of KV cache, batch 1), the step the run's per-token "
                   "speed averages over.")
    for name, part in (diag.get("variants") or {}).items():
        speed = part.get("speedup")
        speed = {"ratio": speed} if isinstance(speed, (int, float)) else speed  # a diagnosis from before intervals
        st.subheader(f"{name} vs baseline" + (f" · {format_speedup(speed)} at batch {diag.get('batch_size')}"
                                              if speed else ""))
        if part.get("kernel_speedup"):
            st.caption(f"Profiled here, interleaved in rounds with the baseline ({diag.get('rounds')} rounds): "
                       f"kernel time {format_speedup(part['kernel_speedup'])}, wall clock with the profiler on "
                       f"{format_speedup(part.get('wall_speedup'))}. The heading is the run's own timing.")
        st.plotly_chart(op_time_figure(part["comparison"], after_label=name), key=f"ops.{name}")
        findings = part.get("findings") or []
        if not findings:
            st.success("No rule found a reason for a missing speed-up.", icon=":material/check_circle:")
        for finding in findings:
            st.warning(f"**{finding['message']}**  \nFix: {finding['fix']}", icon=":material/lightbulb:")
        st.dataframe(part["comparison"], hide_index=True, placeholder=MISSING, key=f"ops_table.{name}")


def scaling_ui() -> None:
    from core.analysis.scaling import DEFAULT_BATCH_SIZES, default_thread_counts

    record = _pick_run(("run", "tune"), "fw_insight_scaling_source", "scaling_source", with_results=True,
                       label="Run")
    if record is None:
        st.info("No finished run yet: run a recipe (Optimize) or the tuner first.", icon=":material/info:")
    elif is_decoder_run(services.run_results(record.id) or {}):
        st.info("A language model decodes one token at a time at batch 1, with a KV cache: its run measured that "
                "(tokens/s, with intervals, on **Compare**). Scaling over batch sizes applies to classifiers and "
                "encoders; the **Diagnostics** tab profiles one decode step per operator.", icon=":material/info:")
    else:
        variants = _variants_of(record)
        c1, c2, c3 = st.columns(3)
        chosen = c1.multiselect("Variants", variants, default=variants[:3], key="scaling_variants")
        sizes = c2.multiselect("Batch sizes", [1, 8, 32, 64, 128, 256, 512], default=list(DEFAULT_BATCH_SIZES),
                               key="scaling_batches")
        threads = c3.multiselect("Threads", sorted(set(default_thread_counts()) | {1}),
                                 default=default_thread_counts(), key="scaling_threads")
        st.button("Measure scaling", icon=":material/stacked_line_chart:", key="scaling_start",
                  disabled=not (chosen and sizes and threads), on_click=_submit_diagnose,
                  args=({"source_run": record.id, "variants": chosen, "profile": False,
                         "scaling_batch_sizes": sorted(sizes), "scaling_threads": sorted(threads)}, record,
                        state_keys.SCALING_RUN_KEY, f"scaling · {len(chosen)} variants"))
    run_id = st.session_state.get(state_keys.SCALING_RUN_KEY)
    if not run_id:
        return
    state = job_status_ui(run_id, "scaling measurement")
    diag = insight.load_diagnostics(services.run_dir(run_id))
    if state in ACTIVE or not diag or not diag.get("scaling"):
        return
    metric = st.radio("Show", ["throughput", "p50_ms", "ms_per_sample"], horizontal=True, key="scaling_metric",
                      format_func={"throughput": "throughput", "p50_ms": "latency",
                                   "ms_per_sample": "latency per sample"}.get)
    st.plotly_chart(scaling_figure(diag["scaling"], metric), key="scaling_chart")
    st.dataframe(diag["scaling"], hide_index=True, key="scaling_table", column_config=SCALING_COLUMNS,
                 placeholder=MISSING)


# --------------------------------------------------------------------------------------------------------------

st.title("Insight")
st.caption("Which layer broke my accuracy, and why is my optimized model not faster?")
current_model = st.session_state.get(MODEL_KEY)
current_data = st.session_state.get(DATA_KEY) or NO_DATA
notice = st.session_state.pop(state_keys.NOTICE_KEY, None)
if notice:
    {"error": st.error, "info": st.info}.get(notice[0], st.success)(notice[1])
if current_model is None:
    st.info("Pick a model on the Model page to scan or tune it; diagnostics work on finished runs.",
            icon=":material/deployed_code:")
elif current_model.card.get("task") == "text-generation":  # the layer scan and the tuner work on ONNX graphs
    st.info(f"{current_model.label} is a language model: the layer scan and the tuner work on ONNX classifiers and "
            "encoders. Compare its int4 / int8 variants on **Compare**; **Learn → Decoding (LM)** explains their "
            "speed.", icon=":material/info:")
    current_model = None
else:
    st.caption(f"Model **{current_model.label}** · data "
               f"**{current_data.label if current_data.spec else 'synthetic inputs'}**")

sensitivity_tab, tuner_tab, diagnostics_tab, scaling_tab = st.tabs(["Sensitivity", "Tuner", "Diagnostics",
                                                                    "Scaling"])
with sensitivity_tab:
    sensitivity_ui(current_model, current_data)
with tuner_tab:
    tuner_ui(current_model, current_data)
with diagnostics_tab:
    diagnostics_ui()
with scaling_tab:
    scaling_ui()
