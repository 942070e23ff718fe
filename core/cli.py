"""The `featherweight` command: run recipes, inspect models, list samples, scan layer sensitivity and tune
(also `python -m core`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from core.errors import BadInputError, FeatherweightError
from core.spec.recipe import Recipe, resolve_spec

EXIT_BAD_INPUT = 2
PATHS_HELP = ("Paths on the command line are relative to the current directory; model: and data: paths inside a "
              "recipe are relative to the recipe file's folder.")


def _here(spec: str | None) -> str | None:
    """A path the user typed, made absolute against their working directory (so the error lines and the files a
    run records name it in full); sample:NAME and None pass through."""
    return resolve_spec(spec, os.getcwd())


def _out_dir(path: str) -> str:
    """`--out` made absolute; a file there is refused before any work starts."""
    out = _here(path)
    if os.path.exists(out) and not os.path.isdir(out):
        raise BadInputError(f"--out {out} is a file; give a directory (new or existing)")
    return out


def _progress_bar():
    """A tqdm bar over the run's overall fraction, on stderr."""
    from tqdm import tqdm

    bar = tqdm(total=1000, file=sys.stderr, unit="‰", bar_format="{l_bar}{bar}| {elapsed} {postfix}",
               disable=not sys.stderr.isatty() and os.environ.get("FEATHERWEIGHT_PROGRESS") != "1")

    def on_progress(event):
        bar.n = int(event.fraction * 1000)
        bar.set_description_str((event.variant or "run")[:24])
        bar.set_postfix_str(event.message[:60])
        if event.kind == "variant_done" and event.result:
            r = event.result
            status = r["status"] if r["status"] != "ok" else "ok"
            detail = r.get("error") or ""
            bar.write(f"  {r['name']}: {status} {detail}".rstrip())
        bar.refresh()
        if event.kind == "done":
            bar.close()

    return on_progress


def cmd_run(args) -> int:
    from core.jobs.entries import run_recipe_isolated

    # The recipe, model and data are read, and the run executes, in a worker process with resource limits
    # (FEATHERWEIGHT_WORKER_*): a hostile file can crash or exhaust only that worker.
    out = _out_dir(args.out)
    # Read here first with the bounded loader (text, values and nesting capped; what the dashboard does in its own
    # process), so a bad value is one line at once; the worker reads the recipe, model and data again.
    Recipe.load(_here(args.recipe))
    result = run_recipe_isolated(_here(args.recipe), out, model=_here(args.model), data=_here(args.data),
                                 executor=args.executor, ray_address=args.ray_address, on_progress=_progress_bar())
    failed = result.get("failed") or []
    from core.views.report import results_table_text  # the end-of-run table: size, quality, speed-up per variant

    print(results_table_text(out))
    for line in _dataset_warnings(out):
        print(f"warning: {line}", file=sys.stderr)
    _print_cost_summary(out)
    print(f"wrote {os.path.join(out, 'results.json')} ({result.get('variants')} variants"
          + (f", failed: {', '.join(failed)}" if failed else "") + ")")
    return 0


def _dataset_warnings(out_dir: str) -> list[str]:
    """The run's data warnings (a calibration split shorter than asked), from its results.json."""
    try:
        results = json.loads(Path(out_dir, "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list((results.get("dataset") or {}).get("warnings") or [])


def _print_cost_summary(out_dir: str) -> None:
    """Cost per million, energy per inference and monthly saving per variant (core.results.cost, default assumptions);
    for a run timed on several runtimes, which runtime to ship each variant on (core.results.runtimes)."""
    from core.results.cost import summary_lines

    try:
        with open(os.path.join(out_dir, "results.json"), encoding="utf-8") as fh:
            results = json.load(fh)
    except (OSError, ValueError):
        return
    for line in summary_lines(results):
        print(line)
    from core.results.runtimes import ship_lines  # a bake-off run: which runtime to ship each variant on

    for line in ship_lines(results):
        print(line)


def cmd_inspect(args) -> int:
    from core.jobs.entries import inspect_isolated

    card = inspect_isolated(_here(args.model))  # parsed in a worker with resource limits (FEATHERWEIGHT_INSPECT_*)
    print(json.dumps(card, indent=2))
    return 0


def cmd_sensitivity(args) -> int:
    from core.jobs.insight import run_isolated_job
    from core.analysis.sensitivity import SensitivityConfig

    config = SensitivityConfig(technique=args.technique, mode=args.mode, per_channel=not args.per_tensor,
                               calibration=args.calibration, samples=args.samples, amount=args.amount,
                               amounts=tuple(args.amounts or ()), max_samples=args.max_samples)
    out = _out_dir(args.out)
    summary = run_isolated_job("sensitivity", _here(args.model), _here(args.data), config.to_dict(), out,
                               on_progress=_progress_bar())
    print(f"most sensitive first ({summary.get('metric')}):")
    for layer in summary.get("layers", [])[:10]:
        sqnr = "identical" if layer["sqnr_db"] is None else f"SQNR {layer['sqnr_db']:.1f} dB"
        drop = "failed" if layer["drop"] is None else f"{layer['drop']:+.2f} pt"
        rank = "" if layer.get("rank") is None else f"{layer['rank']}{'=' if layer.get('tied') else ''}"
        print(f"  {rank:>4} {drop:>10}  {sqnr:<16} {layer['name']}")
    if summary.get("resolution"):
        print(summary["resolution"])
    print(f"wrote {os.path.join(out, 'sensitivity.json')}")
    return 0


def cmd_tune(args) -> int:
    from core.jobs.insight import run_isolated_job
    from core.analysis.tuner import TuneConfig

    config = TuneConfig(max_drop_pt=args.max_drop, objective=args.objective, batch_size=args.batch_size,
                        budget_s=args.budget_s, threads=args.threads, allow_prune=not args.no_prune,
                        finetune_epochs=args.finetune_epochs, seed=args.seed)
    out = _out_dir(args.out)
    summary = run_isolated_job("tune", _here(args.model), _here(args.data), config.to_dict(), out,
                               on_progress=_progress_bar())
    for line in summary.get("summary", []):
        print(line)
    print(f"wrote {os.path.join(out, 'results.json')} and {os.path.join(out, 'best.yaml')} "
          f"(best: {summary.get('best')}, {summary.get('elapsed_s', 0):.0f} s)")
    return 0


def cmd_gallery(args) -> int:
    # the pipeline, the graph worker and the samples load with the gallery: imported when it is built
    from core.jobs.gallery import build_gallery
    from core.jobs.store import RunStore, default_root

    root = resolve_spec(args.home, os.getcwd()) if args.home else default_root()
    store = RunStore(root)
    print(f"reference gallery in {store.root}", flush=True)
    entries = build_gallery(store, samples=args.samples or None, presets=args.presets or None,
                            graph=not args.no_graph, force=args.force,
                            on_message=lambda message: print(message, flush=True))
    counts = {status: sum(e.status == status for e in entries) for status in ("built", "kept", "skipped", "failed")}
    print(", ".join(f"{n} {status}" for status, n in counts.items()))
    return 0


def cmd_samples(args) -> int:
    from sample_models import SAMPLE_DATASETS, SAMPLE_MODELS, available

    rows = {"models": [{"name": f"sample:{m.name}", "data": f"sample:{m.dataset}", "description": m.description,
                        "available": available(m)[0], "note": available(m)[1]} for m in SAMPLE_MODELS.values()],
            "datasets": [{"name": f"sample:{d.name}", "description": d.description}
                         for d in SAMPLE_DATASETS.values()]}
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("models:")
    for row in rows["models"]:
        flag = "" if row["available"] else f"  [unavailable: {row['note']}]"
        print(f"  {row['name']:<22} data {row['data']:<18} {row['description']}{flag}")
    print("datasets:")
    for row in rows["datasets"]:
        print(f"  {row['name']:<22} {row['description']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featherweight",
                                     description="Make neural networks small and fast: quantize, prune, distill, "
                                                 "and measure what each choice does. " + PATHS_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every variant of a recipe and write results.json / results.csv",
                         description="Run every variant of a recipe and write DIR/results.json, results.csv, "
                                     "recipe.yaml and each variant's model (nothing outside DIR but the sample "
                                     "cache). " + PATHS_HELP)
    run.add_argument("recipe", help="recipe file (.yaml, .yml or .json); its model: / data: paths are relative "
                                    "to its folder")
    run.add_argument("--out", required=True, metavar="DIR", help="output directory")
    run.add_argument("--model", help="model override: a file path or sample:NAME")
    run.add_argument("--data", help="data override: a file path or sample:NAME")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local (default): variants one after another here; ray: each variant a Ray task")
    run.add_argument("--ray-address", help="Ray cluster address (else FEATHERWEIGHT_RAY_ADDRESS, else a local "
                                           "Ray runtime is started)")
    run.set_defaults(func=cmd_run)
    inspect = sub.add_parser("inspect", help="print a model's card as JSON")
    inspect.add_argument("model", help="a file path or sample:NAME")
    inspect.set_defaults(func=cmd_inspect)
    samples = sub.add_parser("samples", help="list the sample models and datasets")
    samples.add_argument("--json", action="store_true", help="print JSON")
    samples.set_defaults(func=cmd_samples)
    sens = sub.add_parser("sensitivity", help="quantize or prune one layer at a time and rank the layers by the "
                                               "damage; writes DIR/sensitivity.json")
    sens.add_argument("model", help="a file path or sample:NAME")
    sens.add_argument("--data", help="a file path or sample:NAME (omitted: synthetic inputs, fidelity only)")
    sens.add_argument("--technique", choices=("quantize", "prune"), default="quantize")
    sens.add_argument("--out", required=True, help="output directory")
    sens.add_argument("--mode", default="static", help="quantize mode: static (default), dynamic, fp16, int4")
    sens.add_argument("--per-tensor", action="store_true", help="quantize: one scale per tensor, not per channel")
    sens.add_argument("--calibration", default="minmax", help="quantize static: minmax, entropy or percentile")
    sens.add_argument("--samples", type=int, default=128, help="quantize static: calibration samples")
    sens.add_argument("--amount", type=float, default=0.5, help="prune: share of each layer's weights zeroed")
    sens.add_argument("--amounts", type=float, nargs="*", help="prune: more amounts to measure (heatmap)")
    sens.add_argument("--max-samples", type=int, help="score on the first N validation samples only (faster)")
    sens.set_defaults(func=cmd_sensitivity)
    tune = sub.add_parser("tune", help="search for the fastest (or smallest) variant within a quality drop and a "
                                       "time budget; writes results.json, tune.json and best.yaml")
    tune.add_argument("model", help="a file path or sample:NAME")
    tune.add_argument("--data", help="a file path or sample:NAME (omitted: synthetic inputs, fidelity only)")
    tune.add_argument("--out", required=True, help="output directory")
    tune.add_argument("--max-drop", type=float, default=0.5, help="quality drop allowed, in points (default 0.5)")
    tune.add_argument("--objective", choices=("latency", "size"), default="latency")
    tune.add_argument("--batch-size", type=int, default=256, help="batch size the latency objective uses")
    tune.add_argument("--budget-s", type=float, default=120.0, help="time budget in seconds (default 120)")
    tune.add_argument("--threads", type=int, default=1, help="onnxruntime threads for timing")
    tune.add_argument("--no-prune", action="store_true", help="do not try structured pruning")
    tune.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning epochs after pruning")
    tune.add_argument("--seed", type=int, default=0)
    tune.set_defaults(func=cmd_tune)
    gallery = sub.add_parser("gallery", help="build the reference gallery: every sample's presets run ahead, so "
                                             "any visitor of the dashboard opens them at once (make demo)")
    gallery.add_argument("--samples", nargs="*", metavar="NAME", help="only these samples (default: every sample "
                                                                      "this install can load)")
    gallery.add_argument("--presets", nargs="*", metavar="NAME", help="only these presets (default: all)")
    gallery.add_argument("--home", help="the run store (default: FEATHERWEIGHT_HOME, else ~/.featherweight)")
    gallery.add_argument("--no-graph", action="store_true", help="skip the Graph views (they take a few seconds "
                                                                  "per variant)")
    gallery.add_argument("--force", action="store_true", help="rebuild runs whose recipe is already in the "
                                                               "gallery")
    gallery.set_defaults(func=cmd_gallery)
    return parser


def _quiet_logs() -> None:
    """The contract is one `error: ...` line: worker logs (stderr tails) are shown only with
    FEATHERWEIGHT_LOG_LEVEL (e.g. INFO), else dropped instead of going to Python's last-resort handler."""
    import logging

    log = logging.getLogger("featherweight")
    level = os.environ.get("FEATHERWEIGHT_LOG_LEVEL", "").upper()
    if level and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
    elif not log.handlers:
        log.addHandler(logging.NullHandler())
        log.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input with one `error: ...` line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_logs()
    try:
        return args.func(args)
    except FeatherweightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
