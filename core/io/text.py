"""Held-out text for a decoder: a sample's own token split, the user's ``.txt`` / ``.jsonl`` tokenized with the
checkpoint's own tokenizer, or (an upload without text) the bundled everyday sentences; cut into windows, with a
summary that says which text, how many tokens, and the perplexity floor where one is known.

A text file is data: it is decoded as UTF-8 (a ``.jsonl`` line parsed as JSON) under a size cap, and the tokenizer
is the checkpoint's ``tokenizer.json``, parsed as data by the `tokenizers` library. Like `core.io.data`, this parses
in the calling process: the dashboard reaches it through a worker (`core.jobs.entries.check_data_isolated`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import BadInputError
from core.io.decoder import DecoderCheckpoint
from core.io.safety import LoadLimits, read_capped

TEXT_SUFFIXES = (".txt", ".jsonl")
# An evaluation text, not a training corpus: 16 MiB is ~4M tokens, far more than the windows a run scores.
MAX_TEXT_BYTES = 16 * 2**20
MAX_JSONL_LINE_BYTES = 2**20
PROMPTS = 8  # prompts for greedy generation and timing: the first PROMPT_TOKENS tokens of the first windows
PROMPT_TOKENS = 16
# Windows of the user's text: 128 tokens (or the model's context, if shorter), at most 24 of them. Every window is
# one forward pass per variant, so 24 x 128 = 3,072 scored positions keep a 0.5B model's quality pass to about a
# minute per variant on one core; perplexity over 3k tokens is stable to ~1% on natural text.
TEXT_WINDOW = 128
MAX_WINDOWS = 24
BUNDLED = "sample_models/data/sentences.json"


@dataclass(frozen=True)
class HeldoutText:
    """Token windows to score (int64, each row one window), prompts cut from them, and what the text is."""

    windows: np.ndarray
    prompts: np.ndarray
    summary: dict = field(default_factory=dict)


def is_text_spec(spec: str | None) -> bool:
    """Whether a data spec names a text file (by its suffix)."""
    return isinstance(spec, str) and Path(spec).suffix.lower() in TEXT_SUFFIXES


def parse_text(data: bytes, filename: str, *, max_bytes: int = MAX_TEXT_BYTES) -> tuple[str, int]:
    """The text of an uploaded ``.txt`` or ``.jsonl`` (one JSON object with a ``"text"`` string per line, or a JSON
    string per line); documents are joined by blank lines.

    Returns:
        (the text, how many documents).

    Raises:
        BadInputError: another suffix, empty, over the cap, not UTF-8, or a JSONL line that is not a text record.
    """
    name = Path(filename).name
    suffix = Path(filename).suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise BadInputError(f"{name}: unsupported text file type {suffix or '(none)'!r}; allowed: "
                            f"{', '.join(TEXT_SUFFIXES)}")
    if len(data) > max_bytes:
        raise BadInputError(f"{name} is {len(data) / 2**20:,.1f} MiB; the limit for held-out text is "
                            f"{max_bytes / 2**20:,.0f} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{name} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as "
                            "UTF-8") from None
    if suffix == ".txt":
        if not text.strip():
            raise BadInputError(f"{name} holds no text")
        return text, 1
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_JSONL_LINE_BYTES:
            raise BadInputError(f"{name}: line {number} is over {MAX_JSONL_LINE_BYTES // 1024} KiB")
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise BadInputError(f"{name}: line {number} is not JSON; each line holds {{\"text\": \"...\"}} or a "
                                "JSON string") from None
        value = record.get("text") if isinstance(record, dict) else record
        if not isinstance(value, str):
            keys = ", ".join(sorted(map(str, record))[:5]) if isinstance(record, dict) else type(record).__name__
            raise BadInputError(f"{name}: line {number} has no \"text\" string (found: {keys or 'nothing'}); each "
                                "line holds {\"text\": \"...\"} or a JSON string")
        if value.strip():
            documents.append(value)
    if not documents:
        raise BadInputError(f"{name} holds no text records")
    return "\n\n".join(documents), len(documents)


def tokenizer_of(checkpoint: DecoderCheckpoint):
    """The checkpoint's own tokenizer (tokenizer.json, parsed as data; nothing of the checkpoint runs)."""
    from tokenizers import Tokenizer  # a Rust parser of the JSON; imported here with the lm extra

    return Tokenizer.from_file(str(checkpoint.folder / "tokenizer.json"))


def _unknown_id(tokenizer) -> int | None:
    model = json.loads(tokenizer.to_str()).get("model") or {}
    token = model.get("unk_token")
    return tokenizer.token_to_id(token) if isinstance(token, str) else None


def windows_of(ids: list[int], checkpoint: DecoderCheckpoint, *, window: int = TEXT_WINDOW,
               limit: int = MAX_WINDOWS) -> np.ndarray:
    """Cut token ids into windows of `window` (at most the model's context), each starting with the model's
    ``<s>`` where it has one, at most `limit` of them.

    Raises:
        BadInputError: fewer tokens than one window.
    """
    bos = checkpoint.config.get("bos_token_id")
    bos = bos if isinstance(bos, int) else None
    window = min(window, int(checkpoint.config.get("max_position_embeddings") or window))
    step = window - (1 if bos is not None else 0)
    rows = [([bos] if bos is not None else []) + ids[i:i + step] for i in range(0, len(ids) - step + 1, step)]
    if not rows:
        raise BadInputError(f"the text is {len(ids)} tokens long with {checkpoint.source}'s tokenizer; one "
                            f"{window}-token window needs at least {step}")
    return np.asarray(rows[:limit], dtype=np.int64)


def tokenized_text(text: str, checkpoint: DecoderCheckpoint, source: str, documents: int = 1) -> HeldoutText:
    """`text` tokenized with the checkpoint's tokenizer, cut into windows, with its summary."""
    tokenizer = tokenizer_of(checkpoint)
    ids = tokenizer.encode(text).ids
    windows = windows_of(ids, checkpoint)
    unknown = _unknown_id(tokenizer)
    used = windows[:, 1:] if checkpoint.config.get("bos_token_id") is not None else windows
    summary = {"source": source, "split": "eval", "documents": documents, "text_tokens": len(ids),
               "windows": int(len(windows)), "window_tokens": int(windows.shape[1]),
               "tokens": int(len(windows) * (windows.shape[1] - 1)), "tokenizer": "the checkpoint's tokenizer.json",
               "unknown_token_share": None if unknown is None else round(float((used == unknown).mean()), 4),
               "perplexity_floor": None}
    return HeldoutText(windows, windows[:PROMPTS, :PROMPT_TOKENS], summary)


def _sample_text(name: str) -> HeldoutText:
    from sample_models import SAMPLE_DATASETS  # the registry imports every sample module: imported when needed

    sample = SAMPLE_DATASETS[name]
    windows = np.asarray(sample.load()["eval"][0], dtype=np.int64)
    floor = sample.perplexity_floor() if sample.perplexity_floor else None
    summary = {"source": f"sample:{name}", "split": "eval", "windows": int(len(windows)),
               "window_tokens": int(windows.shape[1]), "tokens": int(len(windows) * (windows.shape[1] - 1)),
               "tokenizer": "the sample's own", "perplexity_floor": floor}
    return HeldoutText(windows, windows[:PROMPTS, :PROMPT_TOKENS], summary)


def text_datasets() -> list[str]:
    """The bundled datasets that are held-out text for a decoder (``sample:NAME``)."""
    from sample_models import SAMPLE_DATASETS

    return [f"sample:{n}" for n, d in SAMPLE_DATASETS.items() if d.extra == "lm"]


def default_text_of(checkpoint: DecoderCheckpoint) -> str | None:
    """A sample decoder's own text (``sample:<its dataset>``); None for an upload."""
    from sample_models import SAMPLE_MODELS

    if checkpoint.source.startswith("sample:"):
        sample = SAMPLE_MODELS.get(checkpoint.source.split(":", 1)[1])
        if sample is not None and f"sample:{sample.dataset}" in text_datasets():
            return f"sample:{sample.dataset}"
    return None


def heldout_text(checkpoint: DecoderCheckpoint, spec: str | None, *,
                 limits: LoadLimits | None = None) -> HeldoutText:
    """The held-out text a decoder run scores: `spec` (a text sample or a ``.txt`` / ``.jsonl`` path), else the
    sample's own text, else (an upload without text) the bundled everyday sentences.

    Raises:
        BadInputError: a spec that is not text, an unreadable or empty file, or text shorter than one window.
    """
    spec = spec or default_text_of(checkpoint)
    if spec and spec.startswith("sample:"):
        if spec not in text_datasets():
            raise BadInputError(f"data={spec!r} is not held-out text for a decoder; allowed: "
                                f"{', '.join(text_datasets())}, a .txt / .jsonl file, or none (the sample's own "
                                "text, or the bundled sentences for an upload)")
        return _sample_text(spec.split(":", 1)[1])
    if spec:
        if not is_text_spec(spec):
            raise BadInputError(f"data={Path(spec).name!r} is not held-out text for a decoder; allowed: "
                                f"{', '.join(text_datasets())}, a .txt / .jsonl file, or none")
        limits = limits or LoadLimits.from_env()
        capped = dataclasses.replace(limits, max_file_bytes=min(limits.max_file_bytes, MAX_TEXT_BYTES))
        data = read_capped(Path(spec), capped)
        text, documents = parse_text(data, spec)
        return tokenized_text(text, checkpoint, Path(spec).name, documents)
    from sample_models import text as sentences_sample

    bundled = sentences_sample.sentences()
    text = " ".join(bundled["sentences"] + [s for pair in bundled["pairs"] for s in pair])
    held = tokenized_text(text, checkpoint, BUNDLED)
    held.summary["note"] = ("no text given: the bundled everyday sentences; upload a .txt / .jsonl of your own "
                            "text to score the model on it")
    return held


def summary_text(summary: dict) -> str:
    """One line on the text a decoder is scored on: which, how many tokens, the floor where known."""
    if not summary:
        return "no held-out text"
    parts = [f"{summary.get('source')}: {summary.get('windows')} windows of {summary.get('window_tokens')} tokens "
             f"({summary.get('tokens', 0):,} scored tokens)"]
    if summary.get("text_tokens"):
        parts.append(f"from {summary['text_tokens']:,} tokens of text")
    if summary.get("unknown_token_share"):
        parts.append(f"{summary['unknown_token_share']:.0%} of them the tokenizer's unknown token")
    floor = summary.get("perplexity_floor")
    parts.append(f"perplexity floor {floor:.3f} (the generator's own)" if floor else "perplexity floor unknown")
    return ", ".join(parts)


__all__ = ["BUNDLED", "HeldoutText", "MAX_TEXT_BYTES", "MAX_WINDOWS", "PROMPTS", "PROMPT_TOKENS", "TEXT_SUFFIXES",
           "TEXT_WINDOW", "default_text_of", "heldout_text", "is_text_spec", "parse_text", "summary_text",
           "text_datasets", "tokenized_text", "tokenizer_of", "windows_of"]
