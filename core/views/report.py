"""A self-contained HTML report of a run for stakeholders: summary and verdict, charts (plotly.js inlined once, so it
opens offline), the results tables, "why no speedup?" notes, the environment and the exact settings (recipe)."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

import pandas as pd

from core import format as fmt
from core.views import charts as viz
from core.results.compare import (OBJECTIVES, Budget, best_caveats, best_variant, chose_on_reported, is_decoder_run,
                                  latency_table, ok_rows, quality_drop_pt)
from core.results.explain import why_no_speedup, why_not_faster_on
from core.results.runtimes import point_name, run_runtimes, runtime_frame, ship_table
from core.io.runtimes import runtime_label
from core.measure.quality import CONFIDENT_MARGIN
from core.results.table import (batch_sizes_of, quality_caption, quality_split_of, resolution_text, results_frame,
                                split_sizes_text, speedup_text, timing_caption)
from core.io.text import summary_text
from core.errors import FeatherweightError
from core.results.summary import run_summary
from core.spec.portable import portable_recipe

# plotly.js for the report: the "basic" bundle (scatter, bar and pie traces: every chart the report draws), 1.2 MB
# against the full bundle's 4.8 MB, from npm's plotly.js-basic-dist-min of the same version plotly.py writes for
# (MIT, LICENSE beside it). A plotly.py of another version falls back to its own full bundle.
PLOTLY_BASIC = Path(__file__).parent / "assets" / "plotly-basic.min.js"
BASIC_TRACES = ("scatter", "bar", "pie")
# Speed and cost columns per table: more batch sizes than this go into a second table, so that no table is wider
# than a laptop screen (1280 px: 1 + 3 x 3 columns of numbers fit in the report's 1100 px).
BATCHES_PER_TABLE = 3

CSS = """
body { font-family: Inter, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; color: #1f2937; margin: 0;
       background: #f8fafc; line-height: 1.5; }
main { max-width: 1100px; margin: 0 auto; padding: 32px 28px 64px; background: white; }
h1 { font-size: 28px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 36px 0 8px; border-bottom: 1px solid #e5e7eb;
     padding-bottom: 6px; }
.sub { color: #6b7280; margin: 0 0 20px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; }
.card { border: 1px solid #e5e7eb; border-radius: 10px; padding: 12px 16px; }
.card .k { color: #6b7280; font-size: 13px; } .card .v { font-size: 22px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
.table-wrap { overflow-x: auto; max-width: 100%; margin-bottom: 14px; }
th, td { text-align: right; padding: 5px 8px; border-bottom: 1px solid #e5e7eb; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 120px; }
.verdict { background: #eef2ff; border-radius: 10px; padding: 12px 16px; font-size: 17px; margin: 14px 0 0; }
th { white-space: normal; vertical-align: bottom; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
th { background: #f3f4f6; font-weight: 600; }
tr.best td { background: #eef2ff; font-weight: 600; }
tr.failed td { color: #9ca3af; }
.notes li { margin-bottom: 4px; }
pre { background: #f3f4f6; padding: 12px; border-radius: 8px; overflow-x: auto; font-size: 13px; }
footer { color: #9ca3af; font-size: 12px; margin-top: 40px; }
"""


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


def _cost_basis(results: dict) -> str:
    """The pricing assumption behind the $ / million column, from the run's recorded cost block."""
    for variant in results.get("variants", []):
        assumptions = (variant.get("cost") or {}).get("assumptions")
        if assumptions:
            price = assumptions.get("price_per_core_hour_usd")
            return (f"$ / million = measured throughput at {price} USD per core-hour (an assumption; "
                    "change it on the Cost page).")
    return ""


def _flips_text(row) -> str:
    if row.get("flips") is None or pd.isna(row.get("flips")):
        return "–"
    return f"{int(row['flips'])} ({fmt.format_pct(row.get('flip_rate'))})"


def _confident_text(row) -> str:
    """"99.7% of 350": agreement on the samples whose baseline margin is clear, and how many qualified."""
    n = row.get("confident_samples")
    if n is None or pd.isna(n):
        return "–"
    value = row.get("agreement_confident")
    return f"{'–' if value is None or pd.isna(value) else fmt.format_pct(value)} of {int(n)}"


def _table_html(head: list[str], rows: list[tuple[str, list]], wrap: tuple[int, ...] = ()) -> str:
    """One table: header cells, then (css class, cells) rows; columns in `wrap` may break their text."""
    body = "".join(f"<tr class='{css}'>" + "".join(
        f"<td class='wrap'>{_esc(c)}</td>" if j in wrap else f"<td>{_esc(c)}</td>" for j, c in enumerate(cells))
        + "</tr>" for css, cells in rows)
    # A table wider than the window still scrolls inside its box rather than widening the page.
    return ("<div class='table-wrap'><table><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + body + "</tbody></table></div>")


def results_table_html(frame: pd.DataFrame, batch_sizes: list[int], best: str | None) -> str:
    """The results as tables no wider than a laptop screen, ratios to the baseline: size and quality (classifiers
    also get flips, agreement on clear-margin samples and top-k overlap), then speed and cost, at most
    BATCHES_PER_TABLE batch sizes per table."""
    drop, drop_label = quality_drop_pt(frame)
    head = ["Variant", "Technique", "Status", "Size", "× smaller", "Params", "Accuracy", drop_label.capitalize()]
    fidelity = "flips" in frame and frame["flips"].notna().any()
    if fidelity:
        k = frame["topk"].dropna()
        head += ["Flips", f"Agreement, margin ≥ {CONFIDENT_MARGIN:g}",
                 f"Top-{int(k.iloc[0]) if len(k) else 'k'} overlap"]
    css = {r["name"]: "best" if r["name"] == best else ("failed" if r["status"] != "ok" else "")
           for _, r in frame.iterrows()}
    rows = []
    for i, r in frame.iterrows():
        technique = r["technique"] if isinstance(r["technique"], str) and r["technique"] else "–"
        cells = [r["name"], technique, r["status"], fmt.format_bytes(r["size_bytes"]),
                 fmt.format_ratio(r["x_smaller"]), fmt.format_count(r["params"]), fmt.format_pct(r.get("accuracy")),
                 "–" if pd.isna(drop[i]) else f"{drop[i]:.2f}"]
        if fidelity:
            cells += [_flips_text(r), _confident_text(r), fmt.format_pct(r.get("topk_overlap"))]
        rows.append((css[r["name"]], cells))
    tables = [_table_html(head, rows, wrap=(0, 1))]
    for start in range(0, len(batch_sizes), BATCHES_PER_TABLE):
        sizes = batch_sizes[start:start + BATCHES_PER_TABLE]
        speed_head = ["Variant"] + [h for bs in sizes for h in (f"p50 @ {bs}", f"Speed-up @ {bs} (95% interval)",
                                                                 f"$ / million @ {bs}")]
        speed_rows = [(css[r["name"]], [r["name"]] + [c for bs in sizes for c in (
            fmt.format_ms(r.get(f"p50_ms_bs{bs}")), speedup_text(r, bs),
            fmt.format_usd(r.get(f"usd_per_million_bs{bs}")))]) for _, r in frame.iterrows()]
        tables.append(_table_html(speed_head, speed_rows, wrap=(0,)))
    return "".join(tables)


def decoder_table_html(frame: pd.DataFrame) -> str:
    """A decoder run's own table: tokens/s, time to first token, peak RSS, perplexity, KL, agreement and cost
    per million tokens ('' for other runs)."""
    if "decode_tok_s" not in frame:
        return ""
    head = ["Variant", "Size", "× smaller", "Decode tok/s", "× faster decode (95%)", "Prefill tok/s", "TTFT",
            "Peak RSS", "Perplexity", "Perplexity +%", "KL / token", "Next-token agreement",
            "Greedy prefix match", "$ / million tokens"]
    rows = []
    for _, r in frame.iterrows():
        def num(key, digits=1, r=r):
            value = r.get(key)
            return "–" if value is None or pd.isna(value) else f"{value:,.{digits}f}"

        cells = [r["name"], viz.format_bytes(r["size_bytes"]), viz.format_ratio(r["x_smaller"]), num("decode_tok_s"),
                 speedup_text(r, 1), num("prefill_tok_s"), viz.format_ms(r.get("ttft_ms")),
                 f"{num('peak_rss_mb', 0)} MB", num("perplexity", 3), num("perplexity_increase_pct", 2),
                 "–" if pd.isna(r.get("kl_per_token")) else f"{r['kl_per_token']:.2e}",
                 viz.format_pct(r.get("next_token_agreement")), num("mean_first_divergence"),
                 viz.format_usd(r.get("usd_per_million_tokens"))]
        rows.append(("", cells))
    # Two tables of 8 and 7 columns: the 14 in one were wider than a laptop screen.
    return ("<h2>Decoding (batch 1, KV cache)</h2><p class='sub'>Measured with onnxruntime-genai, every variant in "
            "its own worker process in the same run: decode speed timed interleaved in rounds (the speed-up is the "
            "median per-round ratio with its 95% interval); perplexity, KL(fp32 ‖ variant) per token and next-token "
            "agreement with fp32 are teacher-forced on the held-out text; the greedy prefix match counts the tokens "
            "a variant generates exactly as fp32 does before the first difference; peak RSS is each worker's own "
            "high-water mark; the cost prices generated tokens at the decode rate.</p>"
            + _table_html(head[:8], [(c, cells[:8]) for c, cells in rows], wrap=(0,))
            + _table_html(head[:1] + head[8:], [(c, cells[:1] + cells[8:]) for c, cells in rows], wrap=(0,)))


def build_report(results: dict, *, title: str | None = None, run_id: str | None = None,
                 batch_size: int | None = None, budget: Budget | None = None, objective: str = "fastest") -> str:
    """Render a run as one HTML page that needs no network.

    Args:
        results: the run's results.json.
        title: page title (default: the model's name).
        run_id: shown in the header when given.
        batch_size: the batch size the summary and the Pareto chart use (default: the largest timed).
        budget: limits for picking the best variant (default: none).
        objective: what "best" means: fastest, smallest or most accurate.

    Returns:
        The HTML document as a string (plotly.js inlined once: about 1.3 MB with the basic bundle).
    """
    frame = results_frame(results)
    sizes = batch_sizes_of(results)
    batch_size = batch_size if batch_size in sizes else (sizes[-1] if sizes else 1)
    budget = budget or Budget()
    best = best_variant(frame, budget, batch_size, objective) if sizes else None
    measured = ok_rows(frame)
    latency = latency_table(results)
    title = title or f"Featherweight report: {results.get('model', 'model')}"
    env = results.get("environment") or {}

    budget_set = any(v is not None for v in (budget.max_latency_ms, budget.max_size_bytes, budget.max_drop_pt))
    bakeoff = len(run_runtimes(results)) > 1
    points = runtime_frame(results) if bakeoff else frame
    best_point = best_variant(points, budget, batch_size, objective) if bakeoff and sizes else best
    figures = [("Size vs latency" + (", every variant on every runtime" if bakeoff else ""),
                viz.pareto_figure(points, batch_size, budget=budget, best=best_point,
                                  best_label="best within budget" if budget_set else objective)),
               ("Ratios to the baseline", viz.ratio_bars_figure(frame, batch_size)),
               (f"Latency percentiles at batch {batch_size}",
                viz.latency_percentiles_figure(latency, batch_size, decoder=is_decoder_run(results))),
               ("Batch-size scaling", viz.batch_scaling_figure(latency, decoder=is_decoder_run(results)))]
    script, basic = plotly_script()
    chart_html = []
    for heading, fig in figures:
        if basic and any(trace.type not in BASIC_TRACES for trace in fig.data):
            script, basic = plotly_script(full=True)
        chart_html.append(f"<h2>{_esc(heading)}</h2>" + fig.to_html(full_html=False, include_plotlyjs=False,
                                                                     config={"displaylogo": False}))

    summary = _summary_cards(frame, best, batch_size, quality_split_of(results), results.get("task"),
                             best_label="Best within budget" if budget_set else
                             f"{OBJECTIVES.get(objective, objective).capitalize()} (no budget set)")
    verdict = ""
    if best is not None and best != "baseline":
        try:
            verdict = f"<p class='verdict'>{_esc(run_summary(results, best, batch_size, run_id=run_id).verdict)}</p>"
        except FeatherweightError:
            verdict = ""
    notes = []
    for name in measured["name"] if not measured.empty else []:
        for note in why_no_speedup(results, name, batch_size):
            notes.append(f"<li><b>{_esc(name)}</b>: {_esc(note)}</li>")
        for runtime in run_runtimes(results) if len(run_runtimes(results)) > 1 else ():  # a bake-off's runtimes
            for note in why_not_faster_on(results, name, runtime, batch_size):
                notes.append(f"<li><b>{_esc(point_name(name, runtime))}</b>: {_esc(note)}</li>")
    failures = [f"<li><b>{_esc(r['name'])}</b>: {_esc(r['status'])} — {_esc(r['error'])}</li>"
                for _, r in frame.iterrows() if r["status"] != "ok"]
    recipe_yaml = _recipe_yaml(results)
    versions = env.get("versions") or {}
    env_rows = [("CPU", env.get("cpu")), ("CPU features", ", ".join(env.get("cpu_flags") or []) or "–"),
                ("Cores / benchmark threads", f"{env.get('cores', '–')} / {env.get('threads', '–')}"),
                ("Platform", env.get("platform")), ("Executor", env.get("executor")),
                *[(k, v) for k, v in versions.items()]]
    dataset = results.get("dataset") or {}
    budget_text = ", ".join(filter(None, [
        f"latency ≤ {fmt.format_ms(budget.max_latency_ms)}" if budget.max_latency_ms is not None else None,
        f"size ≤ {fmt.format_bytes(budget.max_size_bytes)}" if budget.max_size_bytes is not None else None,
        f"quality drop ≤ {budget.max_drop_pt:.2f} pt" if budget.max_drop_pt is not None else None]))
    best_text = (f"best = {objective} within {budget_text}" if budget_text
                 else f"highlighted: the {OBJECTIVES.get(objective, objective)} (no budget set)")
    if is_decoder_run(results):
        data_text = f"<p>Held-out text: {_esc(summary_text(dataset))}.</p>"
    else:
        data_text = (f"<p>{_esc(dataset.get('source', results.get('data') or 'synthetic'))}: "
                     f"{dataset.get('train', '–')} train, {dataset.get('calib', '–')} calibration, "
                     f"{dataset.get('validation', '–')} validation (what a tuner or a sensitivity scan chooses on) "
                     f"and {dataset.get('eval', '–')} held-out test samples (every number in this report); labels: "
                     f"{'yes' if dataset.get('labels') else 'no'}.</p>")
    others = len(frame) - int((frame["name"] == "baseline").sum())
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title><style>{CSS}</style>
<script type="text/javascript">{script}</script></head>
<body><main>
<h1>{_esc(title)}</h1>
<p class="sub">Model <b>{_esc(results.get('model'))}</b> · data <b>{_esc(results.get('data') or 'synthetic inputs')}</b>
· run {_esc(run_id or '–')} · started {_esc(results.get('started_at') or '–')} · status {_esc(results.get('status'))}
· baseline and {others} variant{'s' if others != 1 else ''} · {_esc(best_text)} at batch {batch_size}</p>
{summary}
{verdict}
<h2>Results</h2>
<p class="sub">Ratios are to the baseline measured in the same run. Latency is the median (p50) of timed runs
after warm-up, single session, {env.get('threads', 1)} thread(s). {_esc(timing_caption(results))}
{_esc(quality_caption(results))} {_esc(_choice_caption(frame))}
Flips: samples whose top-1 class differs from the baseline's; agreement at margin ≥ {CONFIDENT_MARGIN:g}: on the
samples where the baseline's top class beats the runner-up by at least {CONFIDENT_MARGIN:g} probability (how many
qualified is shown). {_esc(_cost_basis(results))}</p>
{results_table_html(frame, sizes, best)}
{decoder_table_html(frame)}
{runtimes_html(results, batch_size, best_point) if bakeoff else ''}
{''.join(chart_html)}
<h2>Why no speed-up?</h2>
{'<ul class="notes">' + ''.join(notes) + '</ul>' if notes else '<p>No caveats for this run.</p>'}
{'<h2>Variants that did not finish</h2><ul class="notes">' + ''.join(failures) + '</ul>' if failures else ''}
<h2>Data</h2>
{data_text}
<h2>Environment</h2>
<table>{''.join(f'<tr><td>{_esc(k)}</td><td style="text-align:left">{_esc(v)}</td></tr>' for k, v in env_rows)}</table>
<h2>Settings (recipe)</h2>
<p class="sub">Reproduce with <code>featherweight run recipe.yaml --out results/</code>.</p>
<pre>{_esc(recipe_yaml)}</pre>
<footer>Generated by Featherweight on {generated}.</footer>
</main></body></html>
"""


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if j < 2 else h.rjust(w) for j, (h, w) in enumerate(zip(head, widths)))]
    lines += ["  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths)))
              for row in rows]
    return "\n".join(lines)


def decoder_text_table(frame: pd.DataFrame, results: dict) -> str:
    """A decoder run in a terminal: size, perplexity and its change, KL per token, decode tokens/s and speed-up
    with its interval, prefill tokens/s, time to first token and peak RSS."""
    head = ["variant", "status", "size", "× smaller", "perplexity", "ppl +%", "KL/token", "decode tok/s",
            "decode speed-up", "prefill tok/s", "TTFT ms", "peak RSS MB"]

    def num(r, key, spec):
        value = r.get(key)
        return "–" if value is None or pd.isna(value) else format(value, spec)

    rows = [[str(r["name"]), str(r["status"]), fmt.format_bytes(r["size_bytes"]), fmt.format_ratio(r["x_smaller"]),
             num(r, "perplexity", ".4f"), num(r, "perplexity_increase_pct", "+.2f"), num(r, "kl_per_token", ".2e"),
             num(r, "decode_tok_s", ",.0f"), speedup_text(r, 1), num(r, "prefill_tok_s", ",.0f"),
             num(r, "ttft_ms", ".2f"), num(r, "peak_rss_mb", ",.0f")] for _, r in frame.iterrows()]
    caption = timing_caption(results)
    return _text_table(head, rows) + (f"\n{caption}" if caption else "")


def runtimes_html(results: dict, batch_size: int, best_point: str | None) -> str:
    """The bake-off's section: the best point within the budget (with its runtime), and which runtime to ship each
    variant on, with the speed against onnxruntime fp32 and whether the runner-up is measurably slower."""
    ship = ship_table(results, batch_size)
    rows = "".join(f"<tr><td style='text-align:left'>{_esc(r['variant'])}</td><td style='text-align:left'>"
                   f"<b>{_esc(r['ship_on'])}</b></td><td>{_esc(r['speed'])}</td><td>{fmt.format_ms(r['p50_ms'])}</td>"
                   f"<td style='text-align:left'>{_esc(r['margin'])}</td></tr>" for _, r in ship.iterrows())
    frame = runtime_frame(results)
    failed = "".join(f"<li><b>{_esc(r['name'])}</b>: {_esc(r['status'])} — {_esc(r['error'])}</li>"
                     for _, r in frame[frame["status"] != "ok"].iterrows())
    labels = ", ".join(runtime_label(r) for r in run_runtimes(results))
    best = (f"<p>Best within the budget, on any runtime: <b>{_esc(best_point)}</b>.</p>" if best_point else "")
    return (f"<h2>Which runtime to ship</h2><p class='sub'>Every variant was timed on {_esc(labels)} with the same "
            f"threads, interleaved in rounds; each speed is against the baseline on onnxruntime at batch "
            f"{batch_size} (median of per-round ratios, 95% interval), and each runtime's outputs were checked "
            f"against the reference first.</p>{best}<div class='table-wrap'><table><tr><th>variant</th><th>ship on"
            f"</th><th>vs onnxruntime fp32</th><th>p50</th><th>runner-up</th></tr>{rows}</table></div>"
            + (f"<ul class='notes'>{failed}</ul>" if failed else ""))


def results_text_table(results: dict) -> str:
    """The table a terminal shows at the end of `featherweight run`: per variant its size, × smaller, accuracy
    (or agreement / cosine without labels), quality drop and × faster at each timed batch size; a decoder run's
    own columns (`decoder_text_table`)."""
    frame = results_frame(results)
    if frame.empty:
        return ""
    if is_decoder_run(results):
        return decoder_text_table(frame, results)
    sizes = batch_sizes_of(results)
    drop, drop_label = quality_drop_pt(frame)
    quality = next((m for m in ("accuracy", "agreement", "cosine_mean") if m in frame and frame[m].notna().any()),
                   None)
    head = ["variant", "status", "size", "× smaller", {"accuracy": "accuracy", "agreement": "agreement",
                                                       "cosine_mean": "cosine"}.get(quality, "quality"),
            drop_label.replace(" (pt)", " pt")] + [f"speed-up @{bs}" for bs in sizes]
    rows = []
    for i, r in frame.iterrows():
        value = r.get(quality) if quality else None
        shown = ("–" if value is None or pd.isna(value) else fmt.format_pct(value, 2) if quality != "cosine_mean"
                 else f"{value:.4f}")
        cells = [str(r["name"]), str(r["status"]), fmt.format_bytes(r["size_bytes"]), fmt.format_ratio(r["x_smaller"]),
                 shown, "–" if pd.isna(drop[i]) else f"{drop[i]:.2f}"]
        cells += [speedup_text(r, bs) for bs in sizes]
        rows.append(cells)
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if j < 2 else h.rjust(w) for j, (h, w) in enumerate(zip(head, widths)))]
    lines += ["  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths)))
              for row in rows]
    dataset = results.get("dataset") or {}
    sizes_line = split_sizes_text(dataset.get("splits"), results.get("task", "classification") == "classification")
    if sizes_line:
        lines.append(f"data: {sizes_line}")
    caption = timing_caption(results)
    return "\n".join(lines + ([caption] if caption else []))


def results_table_text(out_dir) -> str:
    """`results_text_table` of the results.json in `out_dir` ("" when there is none yet)."""
    try:
        results = json.loads((Path(out_dir) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return results_text_table(results)


def plotly_script(full: bool = False) -> tuple[str, bool]:
    """plotly.js to inline once: (the script, whether it is the basic bundle). The basic bundle when it is there
    and of the version plotly.py writes figures for (else plotly.py's full bundle), or the full one when asked."""
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    if not full:
        try:
            with open(PLOTLY_BASIC, encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            text = ""
        if f"v{get_plotlyjs_version()}\n" in text[:300]:
            return text, True
    return get_plotlyjs(), False


def _choice_caption(frame: pd.DataFrame) -> str:
    """What the best within budget was chosen on (never the numbers shown for it)."""
    if chose_on_reported(frame):
        return "The best within budget is chosen on the numbers shown (this run predates validation scoring)."
    return ("The best within budget is chosen on the validation split and the timing rounds held out for choosing; "
            "the numbers shown for it are the test split's and the reported rounds'.")


def _summary_cards(frame: pd.DataFrame, best: str | None, batch_size: int, split: dict | None = None,
                   task: str | None = None, best_label: str = "Best within budget") -> str:
    measured = ok_rows(frame)
    base = measured[measured["name"] == "baseline"]
    cards = []
    if not base.empty:
        b = base.iloc[0]
        cards.append(("Baseline", f"{fmt.format_bytes(b['size_bytes'])} · "
                                  f"{fmt.format_ms(b.get(f'p50_ms_bs{batch_size}'))}"))
        if b.get("accuracy") is not None and not pd.isna(b.get("accuracy")):
            cards.append(("Baseline accuracy", fmt.format_pct(b["accuracy"])))
    if best is not None:
        r = measured[measured["name"] == best].iloc[0]
        drop, _ = quality_drop_pt(measured[measured["name"] == best])
        cards += [(best_label, best), ("Smaller", fmt.format_ratio(r["x_smaller"])),
                  (f"Speed-up at batch {batch_size}", speedup_text(r, batch_size)),
                  ("Quality change", fmt.format_pt(None if pd.isna(drop.iloc[0]) else drop.iloc[0])
                   + (f" ({resolution_text(split['n'])})" if split and split.get("n") and
                      (task or "classification") == "classification" else ""))]
        caveats = best_caveats(measured, best, batch_size)
        if caveats:
            cards.append(("Caveat", "; ".join(caveats)))
    else:
        cards.append((best_label, "none"))
    return "<div class='cards'>" + "".join(f"<div class='card'><div class='k'>{_esc(k)}</div>"
                                           f"<div class='v'>{_esc(v)}</div></div>" for k, v in cards) + "</div>"


def _recipe_yaml(results: dict) -> str:
    try:
        return portable_recipe(results).to_yaml()
    except FeatherweightError:  # an old or hand-edited results.json: show what is there
        return json.dumps(results.get("recipe") or {}, indent=2)
