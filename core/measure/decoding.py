"""Decoder measurements with onnxruntime-genai: tokens/s (prefill, decode) at batch 1, time to first token, peak
RSS, perplexity on held-out text, and greedy-token agreement with fp32 (with the first divergence position).

Each variant is measured in a fresh child process (``python -m core.measure.decoding``), so its peak RSS is its
own and not the maximum of everything the parent loaded before. Timing: one untimed warm-up pass over the
prompts, then `runs` timed passes; each number is the median over every timed prompt. Prefill is the
``append_tokens`` of the whole prompt; time to first token is prefill plus the first ``generate_next_token``;
decode tokens/s counts the remaining generated tokens over their time (KV cache in use, batch 1).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from core.errors import StepFailedError

NEW_TOKENS = 32  # greedy tokens generated per prompt (agreement and decode timing)
CHILD_TIMEOUT_S = 1800


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


def measure_in_process(model_dir: str | Path, eval_ids: np.ndarray, prompts: np.ndarray, *,
                       new_tokens: int = NEW_TOKENS, runs: int = 3) -> dict:
    """Measure one built decoder here (see the module docstring); `measure_isolated` runs this in a child.

    Args:
        model_dir: a folder from `core.techniques.decoder.build_decoder`.
        eval_ids: int (N, L) held-out windows; perplexity counts tokens 1..L-1 of each.
        prompts: int (P, T) prompts for greedy generation and timing.

    Returns:
        ``{"perplexity", "nll_tokens", "tokens_per_s": {"prefill", "decode"}, "ttft_ms", "peak_rss_mb",
        "greedy_tokens": [[...] per prompt], "timed_prompts", "next_token_top1": the arg-max next token at each
        held-out position (teacher-forced), "next_token_margin": its probability minus the runner-up's}``.
    """
    # onnxruntime_genai is imported here: this module is imported by the pipeline, which should not pay for it.
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    config.clear_providers()  # CPU
    model = og.Model(config)

    total_nll, count, top1, margins = 0.0, 0, [], []
    for window in np.asarray(eval_ids, dtype=np.int32):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(window) + 1, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(window[None, :])
        logits = np.asarray(generator.get_output("logits"), dtype=np.float64)[0]  # (L, V)
        logp = _log_softmax(logits[:-1])
        total_nll -= float(logp[np.arange(len(window) - 1), window[1:]].sum())
        ranked = np.sort(np.exp(logp), axis=-1)
        top1.append(logp.argmax(axis=-1).tolist())
        margins.append(np.round(ranked[:, -1] - ranked[:, -2], 4).tolist())  # top-1 minus top-2 probability
        count += len(window) - 1
        del generator

    prefill_s, first_s, decode_rate, greedy = [], [], [], []
    prompts = np.asarray(prompts, dtype=np.int32)
    for run in range(runs + 1):  # run 0 is the warm-up
        for prompt in prompts:
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(prompt) + new_tokens, min_length=len(prompt) + new_tokens,
                                      do_sample=False)
            generator = og.Generator(model, params)
            started = time.perf_counter()
            generator.append_tokens(prompt[None, :])
            prefilled = time.perf_counter()
            generator.generate_next_token()
            tokens = [int(generator.get_next_tokens()[0])]
            first = time.perf_counter()
            while not generator.is_done() and len(tokens) < new_tokens:
                generator.generate_next_token()
                tokens.append(int(generator.get_next_tokens()[0]))
            done = time.perf_counter()
            del generator
            if run == 0:
                greedy.append(tokens)
                continue
            prefill_s.append(prefilled - started)
            first_s.append(first - started)
            if len(tokens) > 1:
                decode_rate.append((len(tokens) - 1) / max(done - first, 1e-9))
    prompt_tokens = prompts.shape[1]
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"perplexity": math.exp(total_nll / max(1, count)), "nll_tokens": count,
            "tokens_per_s": {"prefill": prompt_tokens / float(np.median(prefill_s)),
                             "decode": float(np.median(decode_rate)) if decode_rate else None},
            "ttft_ms": 1000.0 * float(np.median(first_s)), "peak_rss_mb": rss_kb / 1024.0,
            "greedy_tokens": greedy, "timed_prompts": len(prefill_s), "prompt_tokens": int(prompt_tokens),
            "next_token_top1": top1, "next_token_margin": margins}


def measure_isolated(model_dir: str | Path, eval_ids: np.ndarray, prompts: np.ndarray, *,
                     new_tokens: int = NEW_TOKENS, runs: int = 3) -> dict:
    """`measure_in_process` in a fresh Python process (its own peak RSS); the token arrays travel as .npy files.

    Raises:
        StepFailedError: the child failed or timed out (its last line of output is kept).
    """
    model_dir = Path(model_dir)
    np.save(model_dir / "eval_ids.npy", np.asarray(eval_ids, dtype=np.int32))
    np.save(model_dir / "prompts.npy", np.asarray(prompts, dtype=np.int32))
    args = json.dumps({"model_dir": str(model_dir), "new_tokens": new_tokens, "runs": runs})
    try:
        done = subprocess.run([sys.executable, "-m", "core.measure.decoding", args], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S, cwd=str(Path(__file__).resolve().parents[2]))
    except subprocess.TimeoutExpired:
        raise StepFailedError(f"measuring {model_dir.name} took over {CHILD_TIMEOUT_S} s") from None
    finally:
        for name in ("eval_ids.npy", "prompts.npy"):
            (model_dir / name).unlink(missing_ok=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise StepFailedError(f"measuring {model_dir.name} failed: {tail}")
    return json.loads(lines[-1])


def greedy_agreement(tokens: list, reference: list) -> dict:
    """Position-wise agreement of greedy tokens with the reference (fp32) over every prompt, and where they part.

    Returns:
        ``{"agreement": share of generated positions equal to the reference's, "first_divergence": per prompt the
        first differing position (None if none), "mean_first_divergence": mean over prompts (a prompt that never
        diverges counts as its length), "diverged_prompts": how many diverged}``.
    """
    same = total = 0
    firsts = []
    for mine, ref in zip(tokens, reference):
        n = min(len(mine), len(ref))
        matches = [mine[i] == ref[i] for i in range(n)]
        same += sum(matches)
        total += n
        firsts.append(next((i for i, ok in enumerate(matches) if not ok), None))
    lengths = [min(len(m), len(r)) for m, r in zip(tokens, reference)]
    mean_first = float(np.mean([n if f is None else f for f, n in zip(firsts, lengths)])) if firsts else None
    return {"agreement": same / total if total else None, "first_divergence": firsts,
            "mean_first_divergence": mean_first, "diverged_prompts": sum(f is not None for f in firsts)}


# A position counts as decided when fp32's top-1 probability leads the runner-up by this much. The sample's corpus
# has many uniform choices (any of 12 nouns), where the arg-max is a near-tie any rounding can flip; agreement on
# decided positions separates "the model changed its mind" from "it broke a tie differently".
CONFIDENT_MARGIN = 0.2


def next_token_agreement(top1: list, reference_top1: list, reference_margin: list) -> dict:
    """Teacher-forced top-1 agreement with the reference over the held-out positions, all and decided ones.

    Returns:
        ``{"all": share, "confident": share where the reference's margin >= CONFIDENT_MARGIN, "confident_positions": n,
        "positions": n}``.
    """
    mine = np.concatenate([np.asarray(r) for r in top1])
    ref = np.concatenate([np.asarray(r) for r in reference_top1])
    margin = np.concatenate([np.asarray(r) for r in reference_margin])
    confident = margin >= CONFIDENT_MARGIN
    same = mine == ref
    return {"all": float(same.mean()) if len(same) else None,
            "confident": float(same[confident].mean()) if confident.any() else None,
            "confident_positions": int(confident.sum()), "positions": int(len(same))}


def _child(argv: list[str]) -> int:
    args = json.loads(argv[0])
    model_dir = Path(args["model_dir"])
    result = measure_in_process(model_dir, np.load(model_dir / "eval_ids.npy"), np.load(model_dir / "prompts.npy"),
                                new_tokens=args["new_tokens"], runs=args["runs"])
    print(json.dumps(result))
    return 0


__all__ = ["CONFIDENT_MARGIN", "NEW_TOKENS", "greedy_agreement", "measure_in_process", "measure_isolated",
           "next_token_agreement"]


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))

