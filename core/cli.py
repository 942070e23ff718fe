"""The `featherweight` command: run recipes, inspect models, list samples (also `python -m core`)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from core.errors import FeatherweightError

EXIT_BAD_INPUT = 2


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
    from core.pipeline import run_recipe
    from core.recipe import Recipe

    recipe = Recipe.load(args.recipe)
    result = run_recipe(recipe, args.out, model_spec=args.model, data_spec=args.data, on_progress=_progress_bar(),
                        executor=args.executor, ray_address=args.ray_address)
    failed = [v.name for v in result.variants if v.status == "failed"]
    print(f"wrote {os.path.join(args.out, 'results.json')} ({len(result.variants)} variants"
          + (f", failed: {', '.join(failed)}" if failed else "") + ")")
    return 0


def cmd_inspect(args) -> int:
    from core.models import load_model, model_card

    card = model_card(load_model(args.model))
    print(json.dumps(card, indent=2))
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
                                                 "and measure what each choice does.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every variant of a recipe and write results.json / results.csv")
    run.add_argument("recipe", help="recipe file (.yaml, .yml or .json)")
    run.add_argument("--out", required=True, help="output directory")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input with one `error: ...` line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FeatherweightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
