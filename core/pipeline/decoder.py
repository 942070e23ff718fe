"""The decoder pipeline: build every variant (fp32 baseline first) with onnxruntime-genai's builder, then measure them
all together (`core.measure.decoding.measure_decoders`: one worker process per variant, speed timed interleaved in
rounds), so every ratio is a same-run ratio taken under the same load.

`core.pipeline.run.run_decoder` drives it. The held-out text (`core.io.text.heldout_text`): the sample's own text for
a sample, the user's ``.txt`` / ``.jsonl`` when given, else the bundled everyday sentences, each tokenized with the
checkpoint's own tokenizer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import FeatherweightError, StepFailedError
from core.format import hide_paths
from core.io.decoder import DecoderCheckpoint
from core.io.text import PROMPTS, PROMPT_TOKENS, HeldoutText, heldout_text, tokenizer_of
from core.measure import compute, decoding
from core.measure.nbits import choice_text
from core.results import cost
from core.techniques import decoder as technique

# Share of a run's progress bar spent building (the builder converts and quantizes every weight) vs measuring.
BUILD_SHARE = 0.4


def heldout(checkpoint: DecoderCheckpoint, data_spec: str | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """The held-out windows, the prompts (the first PROMPT_TOKENS of the first PROMPTS windows) and the summary
    results.json keeps as `dataset` (which text, how many tokens, the perplexity floor where known).

    Raises:
        BadInputError: data that is not text for a decoder, or text too short for one window.
    """
    text: HeldoutText = heldout_text(checkpoint, data_spec)
    summary = {**text.summary, "prompts": int(len(text.prompts)), "prompt_tokens": int(text.prompts.shape[1]),
               "new_tokens": decoding.NEW_TOKENS, "timed_new_tokens": decoding.TIMED_NEW_TOKENS,
               "prompt_text": decoded_texts(checkpoint, text.prompts)}
    return text.windows, text.prompts, summary


def decoded_texts(checkpoint: DecoderCheckpoint, rows) -> list[str]:
    """Token id rows as text, with the checkpoint's tokenizer (in the job's worker: the page only shows them)."""
    try:
        tokenizer = tokenizer_of(checkpoint)
        return [tokenizer.decode([int(i) for i in row], skip_special_tokens=False) for row in rows]
    except Exception:  # noqa: BLE001 - texts are a courtesy; the ids stay in the results
        return []


def build_one(checkpoint: DecoderCheckpoint, slug: str, steps, out_dir: Path, *, threads: int,
              report: Callable[[str, float], None] = lambda m, f: None) -> tuple[technique.DecoderBuild, float]:
    """Build one variant into ``out_dir/variants/<slug>``; returns the build and its seconds.

    Raises:
        FeatherweightError: steps decoders do not take, or the builder failed (one line).
    """
    started = time.perf_counter()
    build = technique.build_for_steps(steps)
    report(f"building {build.precision} with onnxruntime-genai's model builder", 0.1)
    technique.build_decoder_isolated(checkpoint, build, out_dir / "variants" / slug, threads=threads)
    return build, time.perf_counter() - started


def variant_fields(checkpoint: DecoderCheckpoint, slug: str, build: technique.DecoderBuild, built_s: float,
                   measured: dict, out_dir: Path, threads: int, *, is_baseline: bool) -> dict:
    """The results.json fields of one measured variant (`VariantResult` keyword arguments)."""
    artifact_dir = Path("variants") / slug
    prefix = measured["prefix_match"]
    fields = {
        "size_bytes": technique.onnx_bytes(out_dir / artifact_dir), "params": checkpoint.params,
        "artifact": (artifact_dir / "model.onnx").as_posix(),
        "tokens_per_s": measured["tokens_per_s"], "ttft_ms": measured["ttft_ms"],
        "peak_rss_mb": measured["peak_rss_mb"], "perplexity": measured["perplexity"],
        "kl_per_token": measured["kl_per_token"], "next_token_agreement": measured["next_token_agreement"],
        "greedy_divergence": {"first_divergence": prefix["first_divergence"],
                              "mean_first_divergence": prefix["mean_prefix_tokens"],
                              "diverged_prompts": prefix["diverged_prompts"], "new_tokens": prefix["new_tokens"]},
        "latency_ms": measured["latency_ms"], "throughput": measured["throughput"],
        "cpu_ms_per_sample": measured["cpu_ms_per_sample"],
        "speedup": measured.get("speedup") or {},
        "build_s": round(built_s, 3),
        "info": {"build": build.to_dict(), "greedy_tokens": measured["greedy_tokens"],
                 "continuations": decoded_texts(checkpoint, measured["greedy_tokens"]),
                 "nll_tokens": measured["nll_tokens"], "timed_calls": measured["timed_calls"],
                 "decode_ms_per_token": (measured["latency_ms"].get("1") or {}).get("p50"),
                 "next_token_agreement_confident": measured["next_token_agreement_confident"],
                 "confident_positions": measured["confident_positions"], "load_s": measured.get("load_s")},
        "split": {"quality": "test", "n": int(measured["nll_tokens"]), "windows": measured["windows"],
                  "selection": "validation", "selection_n": measured["selection"]["n"]},
        "selection": measured["selection"],
        "notes": [],
    }
    try:
        fields["compute"] = compute.decoder_compute_profile(
            checkpoint.config, checkpoint.tensors, weight_bytes=fields["size_bytes"], precision=build.precision,
            accuracy_level=build.accuracy_level)
    except ValueError as exc:  # a config without the sizes: the run loses its device-fit columns only
        fields["notes"].append(f"no compute profile: {exc}")
    fields["cost"] = {**cost.variant_cost(fields, cost.CostAssumptions(), threads),
                      **cost.decoder_cost(fields, cost.CostAssumptions(), threads)}
    if is_baseline:
        fields["notes"].append(f"fp32 decoder built by onnxruntime-genai's model builder from {checkpoint.source}; "
                               "latency_ms['1'] is milliseconds per decoded token (KV cache, batch 1)")
    elif build.level_choice is not None:
        fields["notes"].append(choice_text(build.level_choice))
    return fields


def run_variants(checkpoint: DecoderCheckpoint, variants: list, out_dir: Path, eval_ids: np.ndarray,
                 prompts: np.ndarray, *, threads: int, max_seconds: float, seed: int = 0,
                 should_stop: Callable[[], bool] = lambda: False,
                 emit: Callable[[str, str, float], None] = lambda variant, message, fraction: None
                 ) -> tuple[dict, dict]:
    """Build every variant, then measure them together.

    Args:
        variants: ``[(name, slug, steps)]``, the baseline (no steps) first.
        emit: progress as (variant name or None for all, message, fraction of the whole 0..1).

    Returns:
        (name -> ``{"status", "error", "fields"}`` in the order given, a variant not reached after `should_stop`
        being ``cancelled``; the timing record: method, rounds, contention).

    Raises:
        BadInputError / StepFailedError: the fp32 baseline could not be built or measured.
    """
    outcome = {name: {"status": "cancelled", "error": "cancelled by the user", "fields": {}}
               for name, _, _ in variants}
    builds, dirs = {}, {}
    baseline = variants[0][0]
    for index, (name, slug, steps) in enumerate(variants):
        if should_stop():
            return outcome, {}
        share = BUILD_SHARE / len(variants)
        try:
            builds[name] = build_one(checkpoint, slug, steps, out_dir, threads=threads,
                                     report=lambda m, f, _i=index, _n=name: emit(_n, m, share * (_i + f)))
            dirs[name] = out_dir / "variants" / slug
        except FeatherweightError as exc:
            if name == baseline:
                raise StepFailedError(f"{checkpoint.source}: the fp32 decoder could not be built: {exc}") from None
            outcome[name] = {"status": "failed", "error": hide_paths(str(exc)), "fields": {}}
        except Exception as exc:  # noqa: BLE001 - one broken variant must not lose the others
            first = hide_paths(str(exc).strip().splitlines()[0][:300]) if str(exc).strip() else ""
            if name == baseline:
                raise StepFailedError(f"{checkpoint.source}: the fp32 decoder could not be built: "
                                      f"{exc.__class__.__name__}: {first}") from None
            outcome[name] = {"status": "failed", "error": f"{exc.__class__.__name__}: {first}", "fields": {}}
    measured = decoding.measure_decoders(
        dirs, eval_ids, prompts, baseline=baseline, threads=threads, max_seconds=max_seconds,
        should_stop=should_stop, seed=seed,
        report=lambda m, f: emit(None, m, BUILD_SHARE + (1 - BUILD_SHARE) * f))
    for name, error in measured.failed.items():
        outcome[name] = {"status": "failed", "error": hide_paths(error), "fields": {}}
    for name, slug, _ in variants:
        if name in measured.fields:
            build, built_s = builds[name]
            outcome[name] = {"status": "ok", "error": None, "fields": variant_fields(
                checkpoint, slug, build, built_s, measured.fields[name], out_dir, threads,
                is_baseline=name == baseline)}
    return outcome, {**measured.timing, "stopped": measured.stopped}


__all__ = ["BUILD_SHARE", "PROMPTS", "PROMPT_TOKENS", "build_one", "decoded_texts", "heldout", "run_variants",
           "variant_fields"]
