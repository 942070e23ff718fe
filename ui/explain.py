"""The Learn page's views: each computed in a worker (the model and data are parsed there, never in this server
process) and cached on the source's key and the view's settings, in the server process (`ui.process_cache`: no
client's clear_cache empties it). The cache keeps the views (plain data, arrays and frames), not the model."""

from __future__ import annotations

import json
from typing import Any, Callable

import streamlit as st

from core.jobs.entries import explain_isolated
from ui.process_cache import process_cached

# Views slow enough to say what they are doing while they compute (the others take well under a second).
SPINNERS = {"facts": "Loading the model…", "onnxruntime_check": "Quantizing with onnxruntime…",
            "calibration": "Calibrating with onnxruntime…", "sweep": "Pruning and measuring at each sparsity…",
            "depthwise": "Equalizing the model's convolutions…"}


@process_cached(max_entries=256)
def _cached(key: str, view: str, params_json: str, _source) -> Any:
    """`_source` is not hashed: the source's key and the view's settings key the cache."""
    return explain_isolated(_source, view, json.loads(params_json))


def explain(source, view: str, **params) -> Any:
    """A Learn view of `source` (a `LearnSource`) with these settings, cached.

    Raises:
        FeatherweightError: the file is refused, the view fails, or the worker crashed or ran out of time/memory.
    """
    params_json = json.dumps(params, sort_keys=True)
    if view in SPINNERS:
        with st.spinner(SPINNERS[view]):
            return _cached(source.key, view, params_json, source)
    return _cached(source.key, view, params_json, source)


def explain_live(source, view: str, on_point: Callable[[dict], None], **params) -> Any:
    """A streamed view (the live distillation), not cached: `on_point` is called in this thread with each point
    as the worker sends it. Leaving the page stops the worker (the rerun's exception reaches the sandbox)."""
    return explain_isolated(source, view, params, on_point=on_point)
