"""Graph page: the baseline and a variant side by side in Google's Model Explorer, node by node: precision,
per-node latency before / after, sensitivity, channels kept, weight bytes, and the nodes that stayed in float for
no reason."""

from __future__ import annotations

import streamlit as st

from core.errors import FeatherweightError
from core.format import format_speedup
from core.session import RUN_KEY
from core.views.graph import PRECISION_COLOR
from core.format import MISSING
from ui import graph_explorer, services
from ui.run_picker import run_picker_ui
from ui.shell import ensure_app_shell

ensure_app_shell()

RUN_PICK_KEY = "graph_run_pick"
VARIANT_PARAM = "variant"  # ?variant=NAME: the variant to draw (Compare's "Open in graph")
NODE_PARAM = "node"  # ?node=NAME: the node to select (Insight's sensitivity table)
SCAN_PARAM = "scan"  # ?scan=RUN_ID: the sensitivity scan to overlay
NO_SCAN = ""


def _graph_runs() -> list:
    """The session's recipe runs with at least one measured variant beside the baseline, then the gallery's."""
    out = []
    for record in [*services.runs_of_kind(("run",), limit=200), *services.gallery_runs()]:
        variants = (services.run_results(record.id) or {}).get("variants") or []
        if len([v for v in variants if v.get("status") == "ok" and v.get("artifact")]) > 1:
            out.append(record)
    return out


def _param_choice(param: str, allowed: list, key: str):
    """A query parameter picks the widget's value once (a link from another page), then the widget owns it."""
    value = st.query_params.get(param)
    if value in allowed and st.session_state.get(f"{key}.from_url") != value:
        st.session_state[key] = value
        st.session_state[f"{key}.from_url"] = value


def legend_ui() -> None:
    chips = " ".join(f"<span style='background:{color};padding:1px 8px;border-radius:4px;margin-right:6px'>"
                     f"{name}</span>" for name, color in PRECISION_COLOR.items())
    st.markdown(f"Precision colours: {chips} · mapped nodes share the baseline's id, so selecting one selects it "
                "in both panes; Model Explorer's **Node data** panel switches the overlay (latency, ratio, "
                "sensitivity, channels kept, weight bytes, stayed-in-float, mapping).", unsafe_allow_html=True)


def summary_ui(view: dict) -> None:
    counts, profile = view["counts"], view.get("profile") or {}
    c = st.columns(4)
    c[0].metric("Variant nodes", counts["variant_nodes"], f"{counts['variant_nodes'] - counts['baseline_nodes']:+d} "
                "vs baseline", delta_color="off", delta_arrow="off")
    precision = counts["precision"]
    c[1].metric("Quantized nodes", precision["int8"] + precision["int4"],
                f"{precision['int8']} int8 · {precision['int4']} int4 · {precision['fp16']} fp16",
                delta_color="off", delta_arrow="off")
    c[2].metric("Stayed in float for no reason", counts["float_for_no_reason"])
    if profile:
        before, after = profile["before_total_ms"], profile["after_total_ms"]
        kernel = profile.get("kernel_speedup")
        run = profile.get("run_speedup")
        step = profile.get("decode_step_past_tokens")
        c[3].metric("Kernel time, one decoded token" if step is not None else
                    f"Kernel time, batch {profile['batch_size']}", f"{after:.3f} ms",
                    (f"{format_speedup(kernel)} vs {before:.3f} ms" if kernel else
                     f"{before / after:.2f}x vs {before:.3f} ms" if after else None), delta_color="off",
                    delta_arrow="off", help="Sum of onnxruntime's per-node kernel times (profiler, warm-up excluded, "
                    f"mean per run), both graphs timed interleaved in rounds ({profile.get('rounds', '?')} rounds) "
                    "when this view was built; the speed-up is the median per-round ratio with its 95% interval"
                    + (f"; a decoder's is one decode step after {step} tokens of KV cache" if step is not None
                       else "")
                    + (f". Compare's speed-up at this batch: {format_speedup(run)}." if run else "."))
    st.caption(f"{counts['mapped']} of {counts['variant_nodes']} variant nodes traced to a baseline node "
               f"({counts['helpers']} added to serve one, such as Q/DQ pairs); {counts['added']} new; "
               f"{counts['fused']} baseline node(s) fused into another, {counts['removed']} removed.")
    for node, reason in (view.get("flagged") or {}).items():
        st.warning(f"**{node}**: {reason}. Why no speed-up: this node still runs the float kernel.",
                   icon=":material/priority_high:")


st.header("Graph")
records = _graph_runs()
if not records:
    st.info("No run with a variant yet. Start one on the **Optimize** page; each variant can then be drawn here "
            "beside its baseline.", icon=":material/account_tree:")
    st.page_link("pages/optimize.py", label="Go to Optimize", icon=":material/arrow_forward:")
    st.stop()

_scan_from_url = st.query_params.get(SCAN_PARAM)
if _scan_from_url and st.session_state.get("graph_scan.opened") != _scan_from_url:
    # From Insight: open the newest run of the scanned model, so the scan's layers are on the graph.
    st.session_state["graph_scan.opened"] = _scan_from_url
    scanned = next((r for r in services.visible_runs() if r.id == _scan_from_url), None)
    same_model = [r for r in records if scanned is not None and r.model == scanned.model]
    if same_model and st.session_state.get(RUN_KEY) not in {r.id for r in same_model}:
        services.open_run(same_model[0].id)
run_id = run_picker_ui(records, RUN_PICK_KEY).id
results = services.run_results(run_id) or {}
names = [v["name"] for v in (results.get("variants") or [])[1:] if v.get("status") == "ok" and v.get("artifact")]
variant_key = f"graph_variant.{run_id}"
_param_choice(VARIANT_PARAM, names, variant_key)
scans = services.runs_of_kind(("sensitivity",))
scan_ids = [NO_SCAN] + [r.id for r in scans]
_param_choice(SCAN_PARAM, scan_ids, "graph_scan")
labels = {r.id: r.label for r in scans}
c1, c2 = st.columns(2)
name = c1.selectbox("Variant", names, key=variant_key, help="Drawn on the right, the baseline on the left.")
scan_id = c2.selectbox("Sensitivity overlay", scan_ids, key="graph_scan",
                       format_func=lambda i: "none" if i == NO_SCAN else labels.get(i, i),
                       help="A sensitivity scan from the Insight page: each layer's drop when only it is changed.")
st.query_params[VARIANT_PARAM] = name

try:
    with st.spinner("Mapping nodes and profiling both graphs in a worker..."):
        view = graph_explorer.graph_view(run_id, name, scan_id or None)
except FeatherweightError as exc:
    st.error(str(exc), icon=":material/error:")
    st.stop()

summary_ui(view)
legend_ui()
focus = st.query_params.get(NODE_PARAM)
graph_explorer.show(view["token"], focus=focus)
with st.expander("Node by node", expanded=False):
    st.dataframe(view["rows"], hide_index=True, placeholder=MISSING, key=f"graph_rows.{run_id}.{name}",
                 column_config={"before_ms": st.column_config.NumberColumn("before (ms)", format="%.4f"),
                                "after_ms": st.column_config.NumberColumn("after (ms)", format="%.4f"),
                                "ratio": st.column_config.NumberColumn("after / before", format="%.2f")})
