"""Compare page: the Pareto explorer with budgets, the results table, latency and batch scaling, a variant's
detail (steps, quantized nodes, sparsity, side-by-side predictions, "why no speedup?") and the exports."""

from __future__ import annotations

import math

import streamlit as st

from core import format as fmt
from core.views import vega
from core.results.compare import (OBJECTIVES, QUALITY_METRICS, Budget, best_caveats, best_variant, chart_caption,
                                  chose_on_reported, chosen_on, drop_text, generations_table, is_decoder_run,
                                  latency_label, layer_sparsity_table, ok_rows, quality_drop_pt, quality_metrics,
                                  variant, within_budget)
from core.results.explain import why_no_speedup, why_not_faster_on
from core.results.runtimes import POINT_SEPARATOR, run_runtimes, runtime_entry, ship_table
from core.results.summary import default_summary_variant, run_summary, summary_variants
from core.io.runtimes import runtime_label
from core.results.devices import DEFAULT_DEVICES, variants_fitting
from core.errors import FeatherweightError
from core.io.files import inside_run
from core.results.table import batch_sizes_of, quality_caption, speedup_text, timing_caption
from core.jobs.store import ACTIVE
from ui import services
from ui.events import clicked_variant
from ui.run_picker import run_picker_ui
from ui.shell import ensure_app_shell
from ui.tables import results_table_ui

ensure_app_shell()

RUN_PICK_KEY = "compare_run_pick"
POLL_S = 1.0
ANY_DEVICE = "Any device"


def watch_ui(run_id: str) -> None:
    """While the run is active, rerun the page whenever a variant finishes (results.json changes)."""
    seen = services.results_mtime(run_id)

    @st.fragment(run_every=POLL_S)
    def watch() -> None:
        record = services.store().get(run_id)
        if services.results_mtime(run_id) != seen or record.status not in ACTIVE:
            st.rerun()
        progress = services.store().progress(run_id) or {}
        st.caption(f":material/autorenew: Running — {progress.get('variant') or 'starting'}: "
                   f"{progress.get('message') or ''}. Results appear here as each variant finishes.")

    watch()


def budget_ui(frame, batch_size: int, run_id: str) -> Budget:
    """Three sliders: max latency at the batch size, max size and max quality drop (all at 'no limit' first)."""
    rows = ok_rows(frame)
    lat = rows.get(f"p50_ms_bs{batch_size}")
    c1, c2, c3 = st.columns(3)
    budget = {}
    if lat is not None and lat.notna().any():
        top = float(lat.max()) * 1.05
        step = _step(top)
        value = c1.slider(f"Max {latency_label(services.run_results(run_id) or {}, batch_size)}", 0.0,
                          _ceil(top, step), _ceil(top, step),
                          step, key=f"budget.lat.{run_id}.{batch_size}", format=_format(step),
                          help="Variants slower than this are greyed out.")
        budget["max_latency_ms"] = None if value >= _ceil(top, step) else value
    unit, scale = fmt.size_unit(rows["size_bytes"].max())
    top = float(rows["size_bytes"].max()) / scale * 1.05
    step = _step(top)
    value = c2.slider(f"Max size ({unit})", 0.0, _ceil(top, step), _ceil(top, step), step, format=_format(step),
                      key=f"budget.size.{run_id}", help="Variants bigger than this are greyed out.")
    budget["max_size_bytes"] = None if value >= _ceil(top, step) else value * scale
    drop, label = quality_drop_pt(rows)
    if drop.notna().any():
        high = max(0.5, float(drop.max()) * 1.05)
        # "Max 1 - cosine to baseline (pt)" read as a formula: name the quantity, give the formula in the help.
        shown = "cosine loss vs baseline (pt)" if label.startswith("1 - cosine") else label
        value = c3.slider(f"Max {shown}", 0.0, _ceil(high, 0.05), _ceil(high, 0.05), 0.05,
                          key=f"budget.drop.{run_id}", help="Variants that lose more quality than this are greyed out."
                          + (" Cosine loss = 100 × (1 − mean cosine to the baseline's outputs)." if shown != label
                             else ""))
        budget["max_drop_pt"] = None if value >= _ceil(high, 0.05) else value
    # Each slider opens at its right end, which is no limit: an encoder's "15.6 pt" there read as a chosen budget.
    st.caption("Budgets: a slider at its right end sets no limit. " + (
        "None set." if not any(v is not None for v in budget.values()) else "Variants outside them are grey."))
    return Budget(**budget)


def _ceil(value: float, step: float) -> float:
    return float(round(math.ceil(value / step) * step, 10))


def _format(step: float) -> str:
    """Slider number format with as many decimals as the step has."""
    return f"%.{max(0, -math.floor(math.log10(step)))}f"


def _step(top: float) -> float:
    """A slider step of about a hundredth of the range, as a float (Streamlit wants one numeric type)."""
    return float(10 ** math.floor(math.log10(max(top, 1e-6)) - 2))


def _select_from_chart(chart_key: str, pick_key: str) -> None:
    """on_select callback: open the clicked variant in the detail view."""
    name = clicked_variant(st.session_state.get(chart_key))
    if name:  # a bake-off's point ("int8 · OpenVINO") opens its variant
        st.session_state[pick_key] = name.split(POINT_SEPARATOR)[0]


def detail_ui(results: dict, frame, run_id: str, name: str, batch_size: int) -> None:
    """One variant: headline ratios, steps, notes, quantized nodes, sparsity and side-by-side predictions."""
    import yaml

    v = variant(results, name)
    if v is None:
        return
    if v.get("status") != "ok":
        st.error(f"{name} {v.get('status')}: {v.get('error')}", icon=":material/error:")
        return
    row = frame[frame["name"] == name].iloc[0]
    drop, drop_label = quality_drop_pt(frame[frame["name"] == name])
    c = st.columns(4)
    c[0].metric("Size", fmt.format_bytes(row["size_bytes"]), f"{fmt.format_ratio(row['x_smaller'])} smaller",
                delta_color="off", delta_arrow="off")
    if is_decoder_run(results):  # tokens/s, and the interleaved rounds' decode speed-up with its interval
        c[1].metric("Decode tokens/s", f"{row['decode_tok_s']:,.0f}", speedup_text(row, 1), delta_color="off",
                    delta_arrow="off", help="Batch 1 with the KV cache; higher is better. Speed-up against the "
                                            "same-run fp32: median per-round ratio and its 95% interval.")
    else:
        c[1].metric(f"p50 at batch {batch_size}", fmt.format_ms(row.get(f"p50_ms_bs{batch_size}")),
                    speedup_text(row, batch_size), delta_color="off", delta_arrow="off",
                    help="Speed-up against the same-run baseline: median per-round ratio and its 95% interval.")
    change = -float(drop.iloc[0]) if not math.isnan(drop.iloc[0]) else None
    if row.get("accuracy") is not None and not math.isnan(row.get("accuracy")):
        c[2].metric("Accuracy", fmt.format_pct(row["accuracy"]),
                    None if change is None or abs(change) < 0.005 else f"{change:+.2f} pt",
                    help="Change in percentage points vs the baseline")
    elif is_decoder_run(results):
        c[2].metric("Perplexity", f"{row['perplexity']:.4g}", drop_text(None if change is None else -change,
                                                                           drop_label) + " vs fp32",
                    delta_color="off", delta_arrow="off",
                    help="On the held-out text; lower is better.")
    else:
        c[2].metric(drop_label.capitalize(), "–" if change is None else f"{-change:.2f}")
    if is_decoder_run(results):  # quality against fp32, teacher-forced on the held-out text
        agreement = row.get("next_token_agreement")
        c[3].metric("KL(fp32 ‖ variant) / token", f"{row['kl_per_token']:.2e}",
                    None if agreement is None or math.isnan(agreement) else f"{agreement:.1%} same top-1 as fp32",
                    delta_color="off", delta_arrow="off",
                    help="Nats per held-out token; 0 = the same next-token distribution as fp32. Below: the share "
                         "of positions whose most likely next token is fp32's.")
    else:
        c[3].metric("Build time", f"{v['build_s']:.1f} s" if v.get("build_s") else "–")

    if name != "baseline":
        st.page_link("pages/graph.py", label="Open in graph", icon=":material/account_tree:",
                     query_params={"run": run_id, "variant": name},
                     help="This variant beside the baseline, node by node (precision, latency, mapping).")
    for note in why_no_speedup(results, name, batch_size):
        st.info(f"**Why no speed-up?** {note}", icon=":material/lightbulb:")
    if len(run_runtimes(results)) > 1:
        runtimes_detail_ui(results, name, batch_size)

    left, right = st.columns(2)
    with left:
        st.markdown("###### Steps")
        if v.get("steps"):
            st.code(yaml.safe_dump(v["steps"], sort_keys=False, default_flow_style=False), language="yaml")
        else:
            st.caption("The unmodified model, measured in the same run.")
        info = v.get("info") or {}
        nodes, layers = info.get("quantized_nodes"), info.get("quantized_layers")
        if layers:  # the layers now in integers; the Q/DQ nodes around them are counted, not listed
            st.markdown(f"###### Quantized layers ({len(layers)})")
            st.dataframe({"layer": layers}, hide_index=True, placeholder=fmt.MISSING,
                         height=min(300, 38 + 35 * len(layers)), width="stretch")
            helpers = len([n for n in nodes or [] if n not in layers])
            if helpers:
                st.caption(f"and {helpers} Quantize / Dequantize nodes that convert between float and int8 "
                           "around them")
        elif nodes:  # a run from before quantized layers were recorded
            st.markdown(f"###### Quantize / dequantize nodes ({len(nodes)})")
            st.dataframe({"node": nodes}, hide_index=True, placeholder=fmt.MISSING,
                         height=min(300, 38 + 35 * len(nodes)), width="stretch")
        if info.get("excluded_nodes"):
            st.caption("Kept in float: " + ", ".join(info["excluded_nodes"]))
        shown = ("quantized_nodes", "quantized_layers", "layer_sparsity", "excluded_nodes")
        extra = {k: val for k, val in info.items() if k not in shown}
        if extra:
            with st.expander("More details"):
                st.json(extra, expanded=False)
    with right:
        sparsity = layer_sparsity_table(v.get("info") or {})
        if not sparsity.empty:
            st.markdown("###### Per-layer sparsity")
            st.vega_lite_chart(vega.layer_sparsity_spec(sparsity, height=280), theme=None, key=f"sparsity.{name}",
                               width="stretch")
        if name != "baseline" and is_decoder_run(results):
            st.markdown("###### Greedy continuations vs fp32")
            st.dataframe(generations_table(results, name), hide_index=True, placeholder=fmt.MISSING, width="stretch")
            st.caption("Each prompt's greedy tokens beside fp32's; after the first difference the two models "
                       "continue different texts, so only the matching prefix compares them.")
        elif name != "baseline":
            predictions_ui(run_id, name)


def runtimes_detail_ui(results: dict, name: str, batch_size: int) -> None:
    """One variant on every runtime of the bake-off: latency, speed-ups, the fidelity check, the kernels or the
    edge program, and why it is not faster there."""
    v = variant(results, name) or {}
    key = str(batch_size)
    rows = []
    for runtime in run_runtimes(results):
        entry = runtime_entry(v, runtime)
        own = (entry.get("speedup") or {}).get(key)
        # onnxruntime's own speed-up is already against the reference; the reference itself has none
        cross = (entry.get("vs_onnxruntime") or {}).get(key) or (own if runtime == "onnxruntime" else None)
        export, kernels = entry.get("export") or {}, entry.get("kernels") or {}
        work = (f"{kernels['int8']} int8 / {kernels['float']} float" if kernels else
                f"{export['delegated_share']:.0%} of operators on XNNPACK" if export else "–")
        rows.append({"runtime": runtime_label(runtime), "status": entry.get("status") or "–",
                     f"p50 at batch {batch_size}": fmt.format_ms(((entry.get("latency_ms") or {}).get(key) or {})
                                                                 .get("p50")),
                     "vs its baseline": fmt.format_speedup(own), "vs onnxruntime fp32": fmt.format_speedup(cross),
                     "same model?": (entry.get("fidelity") or {}).get("rule") or
                     ("the reference" if runtime == "onnxruntime" else "–"),
                     "heavy layers": work, "note": entry.get("error") or ""})
    st.markdown("###### On each runtime")
    st.dataframe(rows, hide_index=True, placeholder=fmt.MISSING, width="stretch")
    for runtime in run_runtimes(results):
        for note in why_not_faster_on(results, name, runtime, batch_size):
            st.info(f"**Why not faster on {runtime_label(runtime)}?** {note}", icon=":material/lightbulb:")


def predictions_ui(run_id: str, name: str) -> None:
    """Test samples through the baseline and the variant side by side, the flipped ones (top-1 changed) first."""
    st.markdown("###### Predictions vs the baseline")
    try:
        with st.spinner("Running the test samples through both models…"):
            result = services.run_side_by_side(run_id, name, 8)
    except (FeatherweightError, OSError) as exc:
        st.caption(f"Predictions unavailable: {exc}")
        return
    table = result.table
    if result.task == "classification":
        if result.flips is not None and result.scanned:
            shown = int((~table["agree"].astype(bool)).sum())
            st.caption(f"{result.flips} of {result.scanned} test samples flip (top-1 class differs from the "
                       f"baseline's)" + (f"; the {shown} shown first are flips." if shown else "; none flipped, so "
                                         "these are spread over the test split."))
        else:
            agree = int(table["agree"].sum())
            st.caption(f"{agree} of {len(table)} samples get the same top-1 class as the baseline.")
        if result.images:
            titles = [f"{'✓' if a else '✗'} {b}→{o}" for a, b, o in zip(table["agree"], table["baseline"], table[name])]
            st.image(vega.thumbnails(result.images), caption=titles, width=96)
        st.dataframe(table, hide_index=True, placeholder=fmt.MISSING, width="stretch", column_config={
            "baseline_conf": st.column_config.NumberColumn("baseline p", format="percent"),
            f"{name}_conf": st.column_config.NumberColumn(f"{name} p", format="percent"),
            "agree": st.column_config.CheckboxColumn("same")})
    else:
        st.caption(f"The {len(table)} least faithful of {result.scanned or len(table)} test samples (lowest cosine "
                   "to the baseline) first.")
        st.dataframe(table, hide_index=True, placeholder=fmt.MISSING, width="stretch", column_config={
            "cosine": st.column_config.NumberColumn("cosine", format="%.5f"),
            "max_abs_diff": st.column_config.NumberColumn("max |Δ|", format="%.4g")})


def exports_ui(results: dict, frame, run_id: str, name: str | None, batch_size: int, budget: Budget,
               objective: str) -> None:
    """Downloads: the selected variant's model, the recipe, the results CSV and the HTML report."""
    from core.views.report import build_report
    from core.spec.portable import portable_recipe

    run_dir = services.run_dir(run_id)
    v = variant(results, name) if name else None
    c = st.columns(4)
    if v is not None and v.get("status") == "ok" and v.get("artifact") and is_decoder_run(results):
        slug = v["artifact"].split("/")[-2]
        c[0].download_button(f"Model · {slug}.zip", data=services.decoder_export(run_id, name),
                             file_name=f"{slug}.zip", mime="application/zip", icon=":material/download:",
                             width="stretch", key=f"dl_model.{run_id}.{name}", on_click="ignore",
                             help="model.onnx, its external data, genai_config.json and the tokenizer: "
                                  "onnxruntime_genai.Model on the unzipped folder generates with it.")
    elif v is not None and v.get("status") == "ok" and v.get("artifact"):
        artifact = inside_run(run_dir, v["artifact"])

        def model_bytes() -> bytes:
            if artifact is None:
                raise FeatherweightError("artifact outside the run directory")
            return artifact.read_bytes()

        c[0].download_button(f"Model · {name}.onnx", data=model_bytes, file_name=f"{v['artifact'].split('/')[-2]}.onnx",
                             mime="application/octet-stream", icon=":material/download:", width="stretch",
                             key=f"dl_model.{run_id}.{name}", on_click="ignore")
    else:
        c[0].button("Model", disabled=True, help="Select a measured variant to download its model.", width="stretch")
    edge = runtime_entry(v, "executorch") if v is not None else {}
    if edge.get("status") == "ok" and edge.get("artifact"):
        program = inside_run(run_dir, edge["artifact"])
        if program is not None:
            st.download_button(f"Edge program · {name}.pte (ExecuTorch, XNNPACK)", data=program.read_bytes,
                               file_name=f"{edge['artifact'].split('/')[-2]}.pte", mime="application/octet-stream",
                               icon=":material/download:", key=f"dl_pte.{run_id}.{name}", on_click="ignore",
                               help="Load it with ExecuTorch's runtime on the device (XNNPACK delegate).")
    try:
        recipe_yaml = portable_recipe(results).to_yaml()
    except FeatherweightError:
        recipe_yaml = None
    c[1].download_button("Recipe · recipe.yaml", data=recipe_yaml or "", file_name="recipe.yaml",
                         mime="application/x-yaml", icon=":material/download:", width="stretch",
                         disabled=recipe_yaml is None, key=f"dl_recipe.{run_id}",
                         help="`featherweight run recipe.yaml --out DIR` reproduces this run (put uploaded files "
                              "next to it).", on_click="ignore")
    c[2].download_button("Results · results.csv", data=frame.to_csv(index=False), file_name="results.csv",
                         mime="text/csv", icon=":material/download:", width="stretch", key=f"dl_csv.{run_id}",
                         on_click="ignore")
    c[3].download_button("Report · report.html",
                         data=lambda: build_report(results, run_id=run_id, batch_size=batch_size, budget=budget,
                                                   objective=objective),
                         file_name=f"featherweight-report-{run_id}.html", mime="text/html", icon=":material/download:",
                         width="stretch", key=f"dl_report.{run_id}",
                         help="One self-contained HTML file (charts work offline) with the environment and settings.",
                         on_click="ignore")


def summary_ui(results: dict, run_id: str, sizes: list[int]) -> None:
    """The one-screen summary: one variant against the baseline, with its PNG and PDF."""
    names = summary_variants(results)
    if not names:
        st.info("No measured variant beside the baseline yet.", icon=":material/hourglass_top:")
        return
    c1, c2 = st.columns(2)
    batch_size = c1.selectbox("Batch size", sizes, index=len(sizes) - 1, key=f"summary_bs.{run_id}")
    default = default_summary_variant(results, batch_size)
    name = c2.selectbox("Variant", names, index=names.index(default) if default in names else 0,
                        key=f"summary_variant.{run_id}", help="Opens on the fastest variant that loses less than "
                                                              "one test sample of quality.")
    summary = run_summary(results, name, batch_size, run_id=run_id)
    with st.container(border=True, key="summary_card"):
        st.subheader(f"{summary.model} → {summary.variant}")
        st.caption(f"Against the baseline measured in the same run · batch {summary.batch_size}")
        c = st.columns(4)
        c[0].metric("× smaller", fmt.format_ratio(summary.x_smaller), summary.size_text, delta_color="off",
                    delta_arrow="off")
        c[1].metric(f"× {summary.speed_label}", fmt.format_ratio(summary.speed_ratio), summary.speed_text,
                    delta_color="off", delta_arrow="off",
                    help="Timed interleaved with the baseline, with its 95% interval, where the run has it; else "
                         "the ratio of the two p50 latencies of this one run.")
        c[2].metric(f"{summary.quality_label.capitalize()} change", summary.quality_change,
                    summary.quality_note or None, delta_color="off", delta_arrow="off")
        c[3].metric(summary.cost_unit.capitalize(), fmt.format_usd(summary.cost_usd),
                    f"baseline {fmt.format_usd(summary.base_cost_usd)}", delta_color="off", delta_arrow="off",
                    help="Measured throughput priced at the run's cost assumptions (Cost page).")
        st.success(summary.verdict, icon=":material/campaign:")
        st.caption(f"Measured on {summary.measured_on} · run {run_id}")
    c = st.columns(2)
    for column, image_format, mime in ((c[0], "png", "image/png"), (c[1], "pdf", "application/pdf")):
        column.download_button(f"Summary · {image_format.upper()}", width="stretch", icon=":material/download:",
                               data=lambda f=image_format: services.run_summary_image(run_id, name, batch_size, f),
                               file_name=f"featherweight-summary-{run_id}.{image_format}", mime=mime, key=f"dl_summary_{image_format}.{run_id}",
                               on_click="ignore", help="The same summary as one 16:9 image (PNG 2560 × 1440) or "
                                                       "one PDF page, for a slide or an e-mail.")


st.title("Compare")
# Only what Compare can show: recipe runs that are in progress or have results. Insight jobs (scans, tuning runs,
# profiles, scaling) live in the store too but have no variants to compare; a run stopped before its baseline
# was measured has nothing to draw (History still lists it).
records = services.comparable_runs()
if not records:
    st.info("No runs yet. Start one on the **Optimize** page: results appear here as each variant finishes.",
            icon=":material/scatter_plot:")
    st.page_link("pages/optimize.py", label="Go to Optimize", icon=":material/arrow_forward:")
    st.stop()

record = run_picker_ui(records, RUN_PICK_KEY)
run_id = record.id
if record.status in ACTIVE:
    watch_ui(run_id)
results = services.run_results(run_id)
frame = services.run_frame(run_id)
if not results or frame is None or ok_rows(frame).empty:
    if record.status in ACTIVE:
        st.info("Waiting for the baseline to be measured…", icon=":material/hourglass_top:")
    else:
        st.warning(f"This run has no measured variants ({record.status}: {record.error or 'no results'}).",
                   icon=":material/warning:")
    st.stop()

sizes = batch_sizes_of(results)
env = results.get("environment") or {}
others = int((frame["name"] != "baseline").sum())  # counted without the baseline, as in the run's label
scored_on = results.get("data") or ((results.get("dataset") or {}).get("source") if is_decoder_run(results) else None)
st.caption(f"**{results.get('model')}** on **{scored_on or 'synthetic inputs'}** · baseline and {others} "
           f"variant{'s' if others != 1 else ''} · "
           f"{env.get('cpu', 'CPU')} · {env.get('threads', 1)} thread(s) · started {results.get('started_at', '–')}")
st.caption(quality_caption(results))
if timing_caption(results):
    st.caption(timing_caption(results))
view = st.segmented_control("View", ["Explore", "Summary"], default="Explore", key=f"compare_view.{run_id}",
                            help="Summary: one variant against the baseline on one screen, as PNG or PDF.")
if view == "Summary":
    summary_ui(results, run_id, sizes)
    st.stop()

with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    batch_size = c1.selectbox("Batch size", sizes, index=len(sizes) - 1, key=f"compare_bs.{run_id}",
                              help="Latency and speed-ups at this batch size.")
    metrics = quality_metrics(frame) or ["accuracy"]
    color_by = c2.selectbox("Colour by", metrics, format_func=lambda m: QUALITY_METRICS.get(m, m),
                            key=f"compare_color.{run_id}")
    objective = c3.segmented_control("Best means", list(OBJECTIVES), default="fastest", key=f"objective.{run_id}",
                                     help="How the best variant inside the budget is chosen.") or "fastest"
    runtimes = run_runtimes(results)
    bakeoff = len(runtimes) > 1
    if bakeoff:
        shown = st.multiselect("Runtimes", runtimes, default=runtimes, format_func=runtime_label,
                               key=f"compare_runtimes.{run_id}", help="Every variant was timed on each runtime "
                               "(same threads, interleaved rounds); each point is one variant on one runtime, its "
                               "marker shape the runtime.") or runtimes
        points = services.run_points(run_id)
        frame = points[points["runtime"].isin(shown)].reset_index(drop=True)
    device_names = [ANY_DEVICE] + [d.name for d in DEFAULT_DEVICES]
    device_name = st.selectbox("Fits on", device_names, key=f"compare_device.{run_id}",
                               help="Show only variants whose weights and peak activations (a language "
                                    "model's: its KV cache) fit this device (profiles and assumptions on the Cost "
                                    "page).")
    budget = budget_ui(frame, batch_size, run_id)

table = services.run_frame(run_id) if bakeoff else frame  # one row per variant (onnxruntime's figures)
if device_name != ANY_DEVICE:
    fitting = variants_fitting(results, next(d for d in DEFAULT_DEVICES if d.name == device_name))
    by = frame["variant"] if bakeoff else frame["name"]
    frame = frame[by.isin(fitting) | (by == "baseline")].reset_index(drop=True)
    table = table[table["name"].isin(fitting) | (table["name"] == "baseline")].reset_index(drop=True)
    st.caption(f"Showing the {len(fitting)} variant(s) that fit on {device_name}"
               + ("" if "baseline" in fitting else "; the baseline does not fit and is shown for reference") + ".")

best = best_variant(frame, budget, batch_size, objective)
budget_set = any(v is not None for v in (budget.max_latency_ms, budget.max_size_bytes, budget.max_drop_pt))
inside = within_budget(chosen_on(frame), budget, batch_size) & (frame["status"] == "ok")
pick_key = f"variant_pick.{run_id}"
chart_key = f"pareto.{run_id}"
names = list(ok_rows(table)["name"]) + [n for n, s in zip(table["name"], table["status"]) if s != "ok"]
best_variant_name = best.split(POINT_SEPARATOR)[0] if bakeoff and best else best
if st.session_state.get(pick_key) not in names:
    st.session_state[pick_key] = best_variant_name if best_variant_name in names else names[0]
selected = st.session_state[pick_key]

if best is None:
    st.warning("No variant fits inside these budgets: loosen one of them.", icon=":material/filter_alt_off:")
else:
    row = frame[frame["name"] == best].iloc[0]
    drop, _ = quality_drop_pt(frame[frame["name"] == best])  # _: the drop's label
    caveats = best_caveats(frame, best, batch_size)
    heading = f"Best within budget ({objective})" if budget_set else f"{objective.capitalize()} (no budget set)"
    text = (f"**{heading}: {best}** — {fmt.format_ratio(row['x_smaller'])} smaller, "
            f"speed-up {speedup_text(row, batch_size)} at batch {batch_size}, "
            f"{'perplexity' if is_decoder_run(results) else 'quality drop'} {drop_text(drop.iloc[0], _)}. "
            + ("Chosen on the reported numbers (this run predates validation scoring)." if chose_on_reported(frame)
               else "Chosen on the validation split and the timing rounds held out for choosing; the numbers "
                    "shown are the test split's and the reported rounds'."))
    if bakeoff:  # the point names its runtime; its speed is against the one reference, onnxruntime fp32
        ratio, low, high = (row.get(f"vs_onnxruntime{k}_bs{batch_size}") for k in ("", "_low", "_high"))
        speed = fmt.format_speedup({"ratio": ratio, "low": low, "high": high}) if ratio else "–"
        text = (f"**{heading}: {row['variant']} on {row['runtime_label']}** — "
                f"{fmt.format_ratio(row['x_smaller'])} smaller, {speed} against the baseline on onnxruntime at "
                f"batch {batch_size}, quality drop {'–' if math.isnan(drop.iloc[0]) else f'{drop.iloc[0]:.2f} pt'} "
                f"(measured on {row['runtime_label']}).")
    if caveats:  # best on one axis, far worse on another: say so, in a warning, not a star
        st.warning(f"{text} But {' and '.join(caveats)}: set a size or latency budget to rule it out.",
                   icon=":material/warning:")
    else:
        st.success(text, icon=":material/star:")

st.vega_lite_chart(vega.pareto_spec(frame, batch_size, color_by=color_by, budget=budget, best=best, selected=selected,
                                   best_label="best within budget" if budget_set else objective),
                   theme=None, key=chart_key, on_select=lambda: _select_from_chart(chart_key, pick_key),
                   selection_mode=vega.PICK, width="stretch")
st.caption(chart_caption(results))
if bakeoff:
    st.subheader("Which runtime to ship")
    st.caption(f"Per variant, the runtime where it ran fastest at batch {batch_size}, against the baseline on "
               "onnxruntime (95% interval), and whether the runner-up is measurably slower.")
    st.dataframe(ship_table(results, batch_size), hide_index=True, placeholder=fmt.MISSING, width="stretch",
                 column_config={
        "ship_on": "ship on", "speed": "vs onnxruntime fp32",
        "p50_ms": st.column_config.NumberColumn(f"p50 at batch {batch_size} (ms)", format="%.3f"),
        "runner_up": "runner-up"})

failed = frame[frame["status"] != "ok"]
for _, r in failed.iterrows():
    st.caption(f":material/error: **{r['name']}** {r['status']}: {r['error']}")

st.subheader("Results")
results_table_ui(table, sizes, inside=within_budget(table, budget, batch_size) & (table["status"] == "ok") if bakeoff
                 else inside, best=best_variant_name, key=f"results_table.{run_id}")

lat_tab, scale_tab, ratio_tab = st.tabs(["Latency percentiles", "Batch-size scaling", "Ratios"])
latency = services.run_latency(run_id)
decoder = is_decoder_run(results)  # its latency is per decoded token, its throughput tokens/s
with lat_tab:
    st.vega_lite_chart(vega.latency_percentiles_spec(latency, batch_size, decoder=decoder), theme=None,
                       key=f"lat.{run_id}", width="stretch")
with scale_tab:
    metric = st.segmented_control("Show", ["throughput", "per_sample_ms"], default="throughput",
                                  format_func={"throughput": "Throughput", "per_sample_ms": "Latency per token"
                                               if decoder else "Latency per sample"}.get,
                                  key=f"scale_metric.{run_id}") or "throughput"
    st.vega_lite_chart(vega.batch_scaling_spec(latency, metric, decoder=decoder), theme=None, key=f"scale.{run_id}",
                       width="stretch")
with ratio_tab:
    st.vega_lite_chart(vega.ratio_bars_spec(table, batch_size), theme=None, key=f"ratios.{run_id}", width="stretch")

st.subheader("Variant detail")
st.selectbox("Variant", names, key=pick_key, help="Or click a point on the chart.")
detail_ui(results, table, run_id, st.session_state[pick_key], batch_size)

st.subheader("Export")
exports_ui(results, table, run_id, st.session_state[pick_key], batch_size, budget, objective)
