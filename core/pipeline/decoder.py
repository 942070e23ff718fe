"""The decoder pipeline: for each variant, build an ONNX decoder with onnxruntime-genai's builder and measure it.

`core.pipeline.run.run_decoder` drives it: the baseline (fp32) first, so every ratio and every greedy agreement is
against an fp32 build measured in the same run. The held-out text is the sample's own eval split for
``sample:tiny-lm``, and the bundled everyday sentences (``sample_models/data/sentences.json``) tokenized with the
checkpoint's own ``tokenizer.json`` for an upload.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import BadInputError
from core.io.decoder import DecoderCheckpoint
from core.measure import decoding
from core.results import cost
from core.techniques import decoder as technique

PROMPTS = 8  # fixed prompts for greedy agreement and timing
PROMPT_TOKENS = 16
UPLOAD_WINDOW = 128  # tokens per held-out window for an uploaded checkpoint
UPLOAD_WINDOWS = 24


def heldout(checkpoint: DecoderCheckpoint, data_spec: str | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """The held-out windows, the prompts (the first PROMPT_TOKENS of the first PROMPTS windows) and a summary.

    Raises:
        BadInputError: a data spec that is not a token dataset, or text too short for one window.
    """
    # sample_models is imported here, as core.io.data does: the registry imports every sample module.
    from sample_models import SAMPLE_DATASETS

    if data_spec:
        name = data_spec.split(":", 1)[1] if data_spec.startswith("sample:") else None
        if name not in SAMPLE_DATASETS or SAMPLE_DATASETS[name].extra != "lm":
            lm_sets = [f"sample:{n}" for n, d in SAMPLE_DATASETS.items() if d.extra == "lm"]
            raise BadInputError(f"data={data_spec!r} is not held-out text for a decoder; allowed: "
                                f"{', '.join(lm_sets)} or none (the bundled sentences)")
        ids = np.asarray(SAMPLE_DATASETS[name].load()["eval"][0], dtype=np.int64)
        summary = {"source": data_spec, "split": "eval", "windows": int(len(ids)), "window_tokens": int(ids.shape[1])}
    else:
        ids = _sentence_windows(checkpoint)
        summary = {"source": "sample_models/data/sentences.json", "split": "eval", "windows": int(len(ids)),
                   "window_tokens": int(ids.shape[1]), "tokenizer": "the checkpoint's tokenizer.json"}
    prompts = ids[:PROMPTS, :PROMPT_TOKENS]
    summary.update({"prompts": int(len(prompts)), "prompt_tokens": PROMPT_TOKENS, "new_tokens": decoding.NEW_TOKENS})
    return ids, prompts, summary


def _sentence_windows(checkpoint: DecoderCheckpoint) -> np.ndarray:
    from sample_models import text as sentences_sample
    from tokenizers import Tokenizer  # parses tokenizer.json as data (Rust), runs nothing from the checkpoint

    bundled = sentences_sample.sentences()
    text = " ".join(bundled["sentences"] + [s for pair in bundled["pairs"] for s in pair])
    tokenizer = Tokenizer.from_file(str(checkpoint.folder / "tokenizer.json"))
    ids = tokenizer.encode(text).ids
    bos = checkpoint.config.get("bos_token_id")
    window = min(UPLOAD_WINDOW, int(checkpoint.config.get("max_position_embeddings") or UPLOAD_WINDOW))
    step = window - (1 if isinstance(bos, int) else 0)
    rows = [([bos] if isinstance(bos, int) else []) + ids[i:i + step] for i in range(0, len(ids) - step + 1, step)]
    if not rows:
        raise BadInputError(f"{checkpoint.source}: the bundled text is shorter than one {window}-token window")
    return np.asarray(rows[:UPLOAD_WINDOWS], dtype=np.int64)


def build_and_measure(checkpoint: DecoderCheckpoint, slug: str, steps, out_dir: Path, eval_ids: np.ndarray,
                      prompts: np.ndarray, *, threads: int, runs: int, baseline: dict | None,
                      report: Callable[[str, float], None] = lambda m, f: None) -> dict:
    """Build one variant and measure it; returns the results.json fields it sets.

    Args:
        baseline: the fp32 variant's fields (None while measuring the baseline itself): its greedy tokens give
            agreement.
    """
    build = technique.build_for_steps(steps)
    started = time.perf_counter()
    artifact_dir = Path("variants") / slug
    report(f"building {build.precision} with onnxruntime-genai's model builder", 0.05)
    technique.build_decoder(checkpoint, build, out_dir / artifact_dir, threads=threads)
    built_s = time.perf_counter() - started
    report(f"measuring perplexity on {len(eval_ids)} windows and generating from {len(prompts)} prompts", 0.5)
    measured = decoding.measure_isolated(out_dir / artifact_dir, eval_ids, prompts, runs=runs)
    size = technique.onnx_bytes(out_dir / artifact_dir)
    greedy = measured["greedy_tokens"]
    reference = baseline["info"]["greedy_tokens"] if baseline else greedy
    agreement = decoding.greedy_agreement(greedy, reference)
    ref_info = baseline["info"] if baseline else {"next_token_top1": measured["next_token_top1"],
                                                  "next_token_margin": measured["next_token_margin"]}
    next_token = decoding.next_token_agreement(measured["next_token_top1"], ref_info["next_token_top1"],
                                               ref_info["next_token_margin"])
    fields = {
        "size_bytes": size, "params": checkpoint.params, "artifact": (artifact_dir / "model.onnx").as_posix(),
        "tokens_per_s": measured["tokens_per_s"], "ttft_ms": measured["ttft_ms"],
        "peak_rss_mb": measured["peak_rss_mb"], "perplexity": measured["perplexity"],
        "greedy_agreement": agreement["agreement"],
        "greedy_divergence": {k: agreement[k] for k in ("first_divergence", "mean_first_divergence",
                                                        "diverged_prompts")},
        "latency_ms": {"1": {"p50": 1000.0 / measured["tokens_per_s"]["decode"]}}
        if measured["tokens_per_s"]["decode"] else {},
        "throughput": {"1": measured["tokens_per_s"]["decode"]},
        "build_s": round(built_s, 3),
        "info": {"build": build.to_dict(), "greedy_tokens": greedy, "nll_tokens": measured["nll_tokens"],
                 "timed_prompts": measured["timed_prompts"], "prompt_tokens": measured["prompt_tokens"],
                 "decode_ms_per_token": 1000.0 / measured["tokens_per_s"]["decode"]
                 if measured["tokens_per_s"]["decode"] else None,
                 "next_token_agreement": next_token["all"], "next_token_agreement_confident": next_token["confident"],
                 "confident_positions": next_token["confident_positions"]},
        "split": {"quality": "test", "n": int(len(eval_ids))},
        "notes": [],
    }
    if baseline is None:  # the reference every variant's teacher-forced agreement is measured against
        fields["info"].update(next_token_top1=measured["next_token_top1"],
                              next_token_margin=measured["next_token_margin"])
    fields["cost"] = cost.decoder_cost(fields, cost.CostAssumptions(), threads)
    if baseline is None:
        fields["notes"].append(f"fp32 decoder built by onnxruntime-genai's model builder from {checkpoint.source}; "
                               "latency_ms['1'] is milliseconds per decoded token (KV cache, batch 1)")
    return fields


__all__ = ["PROMPTS", "PROMPT_TOKENS", "build_and_measure", "heldout"]
