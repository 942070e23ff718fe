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


def row(frame, name: str, column: str):
    """A value of variant `name` in the results table, or None."""
    match = frame[frame["name"] == name]
    if match.empty or match.iloc[0]["status"] != "ok":
        return None
    value = match.iloc[0][column]
    return None if value is None or value != value else float(value)


def wall_s(frame, run) -> float:
    return run["wall_s"]


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
]


def run_target(target: Target, out_root: Path) -> dict:
    """Run one target's recipe and evaluate its checks."""
    skip = target.requires() if target.requires else None
    if skip:
        return {"target": target, "skipped": skip, "checks": []}
    recipe = Recipe.from_dict(target.recipe)
    out = out_root / target.name.replace(" ", "_").replace(",", "").replace(":", "")
    start = time.perf_counter()
    result = run_recipe(recipe, out)
    wall = time.perf_counter() - start
    run = {"wall_s": wall, "result": result}
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
                               "p50_ms_bs256", "speedup_bs256") if c in frame.columns]
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
