"""Worker entries that check an upload: a model's card and data bound to a model. This module imports only the
loaders and the card (0.2 s), not the pipeline and the explainers (`core.jobs.entries`, 2-3 s with torch), so a
refused upload costs its worker a fraction of a second and the shared pool's slot is free again at once."""

from __future__ import annotations

from pathlib import Path

from core.io.data import load_data
from core.io.decoder import DecoderCheckpoint
from core.io.model import load_model
from core.io.sandbox import phase
from core.io.text import heldout_text
from core.measure.card import model_card


def inspect_entry(spec: str, display: str | None = None) -> dict:
    """Inside a worker: load a model spec (a file or a sample) and return its card."""
    name = display or spec
    phase(f"reading {name}")
    model = load_model(spec)
    phase(f"describing {name}")
    card = model_card(model)
    if display:
        card["source"] = display
    return card


def check_data_entry(model_spec: str, data_spec: str | None, seed: int = 0) -> dict:
    """Inside a worker: load the model and the data against it; the dataset summary."""
    phase(f"reading {Path(model_spec).name if not model_spec.startswith('sample:') else model_spec}")
    model = load_model(model_spec)
    phase(f"reading {Path(data_spec).name if data_spec and not data_spec.startswith('sample:') else data_spec}")
    if isinstance(model, DecoderCheckpoint):  # held-out text, tokenized with the checkpoint's own tokenizer
        return heldout_text(model, data_spec).summary
    # An ONNX-only model never trains: its data is shown split as a run will use it (no train split).
    return load_data(data_spec, model, seed=seed, train_needed=model.torch_module is not None).summary()


__all__ = ["check_data_entry", "inspect_entry"]
