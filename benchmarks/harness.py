"""Run every benchmark target, compare with its thresholds, and write BENCHMARKS.md.

Each target is a recipe plus checks on same-run ratios from its results. Usage::

    python -m benchmarks.harness [--only NAME ...] [--out DIR] [--markdown BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.pipeline import run_recipe
from core.recipe import Recipe
from core.results import results_frame

BENCH = {"batch_sizes": [1, 256], "threads": 1, "warmup": 20, "runs": 200, "max_seconds": 10}


@dataclass
class Check:
    """One threshold: a label, how to read the value from the results table, and the comparison."""

    label: str
    value: Callable  # (frame, run) -> float | None
    op: str  # ">=" or "<="
    threshold: float
    unit: str = ""

    def passes(self, value) -> bool:
        if value is None:
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


@dataclass
class Target:
    """A named target: the recipe it runs and the checks on its results."""

    name: str
    recipe: dict
    checks: list = field(default_factory=list)
    requires: Callable | None = None  # () -> str | None: a reason to skip (e.g. a missing extra)
    execute: Callable | None = None  # (recipe dict, out dir) -> RunResult, instead of run_recipe (the tuner)


def row(frame, name: str, column: str):
    """A value of variant `name` in the results table, or None."""
    match = frame[frame["name"] == name]
    if match.empty or match.iloc[0]["status"] != "ok":
        return None
    value = match.iloc[0][column]
    return None if value is None or value != value else float(value)


def variant_info(run, name: str, key: str):
    """A value from a variant's `info` (facts a step reported, such as sparsity)."""
    for variant in run["result"].variants:
        if variant.name == name and variant.status == "ok":
            value = variant.info.get(key)
            return None if value is None else float(value)
    return None


def _difference(a, b, scale: float = 1.0):
    return None if a is None or b is None else (a - b) * scale


def wall_s(frame, run) -> float:
    return run["wall_s"]


def retrieval_drop_pt(run, name: str):
    """Paraphrase-retrieval accuracy lost by variant `name` against the baseline, in points (None if missing)."""
    variants = {v.name: v for v in run["result"].variants}
    base, variant = variants.get("baseline"), variants.get(name)
    if base is None or variant is None or variant.status != "ok":
        return None
    before, after = base.info.get("retrieval_accuracy"), variant.info.get("retrieval_accuracy")
    return None if before is None or after is None else round((before - after) * 100, 4)


def sample_unavailable(name: str) -> str | None:
    """Why a sample cannot run here (its extra is missing), or None."""
    from sample_models import SAMPLE_MODELS, available

    if name not in SAMPLE_MODELS:
        return f"sample:{name} is not registered"
    ok, hint = available(SAMPLE_MODELS[name])
    return None if ok else hint


TARGETS: list[Target] = [
    Target("digits-cnn static int8", {
        "model": "sample:digits-cnn", "data": "sample:digits", "benchmark": BENCH,
        "variants": [{"name": "int8-static", "steps": [{"technique": "quantize", "mode": "static"}]}]}, [
        Check("size: x smaller", lambda f, r: row(f, "int8-static", "x_smaller"), ">=", 3.4, "x"),
        Check("speed: x faster at batch 256", lambda f, r: row(f, "int8-static", "speedup_bs256"), ">=", 2.0, "x"),
        Check("accuracy drop", lambda f, r: row(f, "int8-static", "accuracy_drop_pt"), "<=", 0.3, "pt"),
    ]),
    Target("default recipe on digits-cnn, end to end", {
        "model": "sample:digits-cnn", "data": "sample:digits", "benchmark": BENCH,
        "variants": [{"name": "int8-dynamic", "steps": [{"technique": "quantize", "mode": "dynamic"}]},
                     {"name": "int8-static", "steps": [{"technique": "quantize", "mode": "static"}]},
                     {"name": "fp16", "steps": [{"technique": "quantize", "mode": "fp16"}]}]}, [
        Check("wall time (load, build, measure all)", wall_s, "<=", 30.0, "s"),
    ]),
    Target("digits-cnn structured prune 50% + fine-tune + static int8", {
        "model": "sample:digits-cnn", "data": "sample:digits", "benchmark": BENCH,
        "variants": [{"name": "pruned-int8", "steps": [
            {"technique": "prune", "method": "structured", "amount": 0.5, "finetune_epochs": 10},
            {"technique": "quantize", "mode": "static"}]}]}, [
        Check("size: x smaller", lambda f, r: row(f, "pruned-int8", "x_smaller"), ">=", 8.0, "x"),
        Check("speed: x faster at batch 256", lambda f, r: row(f, "pruned-int8", "speedup_bs256"), ">=", 4.0, "x"),
        Check("accuracy drop", lambda f, r: row(f, "pruned-int8", "accuracy_drop_pt"), "<=", 1.0, "pt"),
    ]),
    Target("digits-cnn unstructured prune 80% + fine-tune", {
        "model": "sample:digits-cnn", "data": "sample:digits", "benchmark": BENCH,
        "variants": [{"name": "sparse80", "steps": [
            {"technique": "prune", "method": "unstructured", "amount": 0.8, "finetune_epochs": 10}]}]}, [
        Check("accuracy drop", lambda f, r: row(f, "sparse80", "accuracy_drop_pt"), "<=", 0.5, "pt"),
        Check("compressed size: x smaller", lambda f, r: row(f, "sparse80", "x_smaller_compressed"), ">=", 3.0,
              "x"),
        Check("sparsity reported", lambda f, r: variant_info(r, "sparse80", "sparsity"), ">=", 0.79, ""),
    ]),
    Target("shapes-cnn distilled student (width 0.25) vs its control", {
        "model": "sample:shapes-cnn", "data": "sample:shapes", "benchmark": {**BENCH, "runs": 50},
        "variants": [{"name": "student", "steps": [
            {"technique": "distill", "width": 0.25, "temperature": 4, "alpha": 0.7, "epochs": 60,
             "control": True}]}]}, [
        Check("x fewer params", lambda f, r: row(f, "student", "x_fewer_params"), ">=", 10.0, "x"),
        Check("accuracy gain over the control twin",
              lambda f, r: _difference(row(f, "student", "accuracy"), row(f, "student (control)", "accuracy"),
                                       100), ">=", 0.01, "pt"),
    ], requires=lambda: sample_unavailable("shapes-cnn")),
    Target("minilm dynamic int8 per-channel", {
        "model": "sample:minilm", "data": "sample:sentences",
        # max_seconds lets all 20 runs happen: fp32 takes ~1.4 s per 32 x 128 batch on one thread
        "benchmark": {"batch_sizes": [32], "sequence_length": 128, "threads": 1, "warmup": 3, "runs": 20,
                      "max_seconds": 60},
        "variants": [{"name": "int8-dynamic",
                      "steps": [{"technique": "quantize", "mode": "dynamic", "per_channel": True}]}]}, [
        Check("size: x smaller", lambda f, r: row(f, "int8-dynamic", "x_smaller"), ">=", 3.5, "x"),
        Check("speed: x faster at batch 32 x 128 tokens", lambda f, r: row(f, "int8-dynamic", "speedup_bs32"),
              ">=", 2.0, "x"),
        Check("cosine mean to fp32", lambda f, r: row(f, "int8-dynamic", "cosine_mean"), ">=", 0.99),
        Check("paraphrase retrieval drop", lambda f, r: retrieval_drop_pt(r, "int8-dynamic"), "<=", 0.0, "pt"),
    ], requires=lambda: sample_unavailable("minilm")),
]


# --------------------------------------------------------------------------------------------------------------
# Tuner targets: `execute` runs core.tuner instead of a recipe; checks read the best variant from tune.json.


def run_tuner(spec: dict, out: Path):
    """Run the accuracy-aware tuner as `featherweight tune` does (in this process); return its RunResult."""
    from core.tuner import TuneConfig, tune_to_dir

    return tune_to_dir(spec["model"], spec["data"], TuneConfig.from_dict(spec["tune"]), out).run


def tune_best(run, key: str):
    """A field of the tuner's best trial (tune.json), or None when the best is the baseline."""
    from core.tuner import load_tune_log

    log = load_tune_log(run["out"]) or {}
    best = next((t for t in log.get("trials", []) if t["name"] == log.get("best")), None)
    return None if best is None or best["name"] == "baseline" else best.get(key)


def tune_best_row(frame, run, column: str):
    """The best variant's value in the (same-run) results table."""
    from core.tuner import load_tune_log

    return row(frame, (load_tune_log(run["out"]) or {}).get("best", ""), column)


def beats_static_int8_or_explains(frame, run):
    """Speed-up of the tuner's best over plain static int8 (paired timings); 1.0 when nothing beat plain int8
    and tune.json explains why (each other trial's reason), 0 when neither."""
    from core.tuner import load_tune_log

    log = load_tune_log(run["out"]) or {}
    trials = {t["name"]: t for t in log.get("trials", [])}
    best, plain = trials.get(log.get("best")), trials.get("int8-static")
    if best is None or plain is None or not plain.get("speedup"):
        return None
    if best["name"] not in ("int8-static", "baseline") and best.get("speedup"):
        return round(best["speedup"] / plain["speedup"], 4)
    explained = any("Nothing beat plain static int8" in line or "No variant within" in line
                    for line in log.get("summary", []))
    return 1.0 if explained else 0.0


TARGETS += [
    Target("digits-cnn tuner, 0.5 pt in 120 s", {
        "model": "sample:digits-cnn", "data": "sample:digits",
        "tune": {"max_drop_pt": 0.5, "objective": "latency", "batch_size": 256, "budget_s": 120}}, [
        Check("best: x faster at batch 256 (paired timing)", lambda f, r: tune_best(r, "speedup"), ">=", 2.0, "x"),
        Check("best: x faster at batch 256 (p50, same run)", lambda f, r: tune_best_row(f, r, "speedup_bs256"),
              ">=", 2.0, "x"),
        Check("best: accuracy drop", lambda f, r: tune_best_row(f, r, "accuracy_drop_pt"), "<=", 0.5, "pt"),
        Check("tuner wall time incl. loading (budget 120 s)", wall_s, "<=", 135.0, "s"),
    ], execute=run_tuner),
    Target("shapes-cnn tuner, 0.5 pt in 180 s", {
        "model": "sample:shapes-cnn", "data": "sample:shapes",
        "tune": {"max_drop_pt": 0.5, "objective": "latency", "batch_size": 256, "budget_s": 180}}, [
        Check("best vs plain static int8 (x faster; 1.0 = none, explained)", beats_static_int8_or_explains,
              ">=", 1.0, "x"),
        Check("best: accuracy drop", lambda f, r: tune_best_row(f, r, "accuracy_drop_pt") or 0.0, "<=", 0.5, "pt"),
    ], requires=lambda: sample_unavailable("shapes-cnn"), execute=run_tuner),
]


def run_target(target: Target, out_root: Path) -> dict:
    """Run one target's recipe and evaluate its checks."""
    skip = target.requires() if target.requires else None
    if skip:
        return {"target": target, "skipped": skip, "checks": []}
    out = out_root / target.name.replace(" ", "_").replace(",", "").replace(":", "")
    start = time.perf_counter()
    if target.execute is not None:
        result = target.execute(target.recipe, out)
    else:
        result = run_recipe(Recipe.from_dict(target.recipe), out)
    wall = time.perf_counter() - start
    run = {"wall_s": wall, "result": result, "out": out}
    frame = results_frame(result.to_dict())
    checks = []
    for check in target.checks:
        value = check.value(frame, run)
        checks.append({"check": check, "value": value, "pass": check.passes(value)})
    return {"target": target, "skipped": None, "checks": checks, "frame": frame, "wall_s": wall,
            "environment": result.environment}


def _fmt(value, unit):
    if value is None:
        return "n/a"
    return f"{value:.3g} {unit}".strip() if abs(value) < 1000 else f"{value:,.0f} {unit}".strip()


def _table(frame) -> str:
    """A pandas frame as a Markdown table, numbers to 4 significant digits."""
    def cell(value):
        if value is None or value != value:
            return ""
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in record) + " |" for record in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def markdown(outcomes: list[dict], environment: dict) -> str:
    """BENCHMARKS.md: machine, versions, and every target with measured value and pass/fail."""
    lines = ["# Benchmarks", "",
             f"Written by `make bench` on {dt.date.today().isoformat()}. Every ratio is same-run (the baseline is "
             "measured in the same run as the variant), latency is the median (p50) of timed runs after warm-up, "
             f"onnxruntime with {environment.get('threads', 1)} intra-op thread.", "",
             "## Machine", "",
             f"- CPU: {environment.get('cpu')} ({environment.get('cores')} cores), flags: "
             f"{', '.join(environment.get('cpu_flags', [])) or 'none recorded'}",
             f"- Platform: {environment.get('platform')}",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in environment.get("versions", {}).items()), "",
             "## Targets", "", "| target | check | threshold | measured | result |", "|---|---|---|---|---|"]
    for outcome in outcomes:
        name = outcome["target"].name
        if outcome["skipped"]:
            lines.append(f"| {name} | — | — | — | skipped: {outcome['skipped']} |")
            continue
        for c in outcome["checks"]:
            check = c["check"]
            lines.append(f"| {name} | {check.label} | {check.op} {check.threshold:g} {check.unit} | "
                         f"{_fmt(c['value'], check.unit)} | {'pass' if c['pass'] else '**FAIL**'} |")
    lines += ["", "## Variant tables", ""]
    for outcome in outcomes:
        if outcome["skipped"]:
            continue
        frame = outcome["frame"]
        columns = [c for c in ("name", "status", "size_bytes", "x_smaller", "x_smaller_compressed", "params",
                               "accuracy", "accuracy_drop_pt", "agreement", "cosine_mean", "p50_ms_bs1",
                               "p50_ms_bs32", "p50_ms_bs256", "speedup_bs32", "speedup_bs256")
                   if c in frame.columns]
        lines += [f"### {outcome['target'].name} ({outcome['wall_s']:.1f} s)", "",
                  _table(frame[columns]), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="run only targets whose name contains one of these words")
    parser.add_argument("--out", default=".featherweight/bench", help="where runs are written")
    parser.add_argument("--markdown", default="BENCHMARKS.md", help="the report to write")
    args = parser.parse_args(argv)
    targets = [t for t in TARGETS if not args.only or any(w in t.name for w in args.only)]
    outcomes = []
    environment = {}
    for target in targets:
        print(f"== {target.name}", flush=True)
        outcome = run_target(target, Path(args.out))
        environment = outcome.get("environment") or environment
        for c in outcome["checks"]:
            print(f"   {c['check'].label}: {_fmt(c['value'], c['check'].unit)} "
                  f"({c['check'].op} {c['check'].threshold:g}) {'pass' if c['pass'] else 'FAIL'}", flush=True)
        outcomes.append(outcome)
    Path(args.markdown).write_text(markdown(outcomes, environment), encoding="utf-8")
    failed = sum(not c["pass"] for o in outcomes for c in o["checks"])
    print(f"wrote {args.markdown}: {failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
