"""Helpers for the technique tests: apply one step to a copy of a sample model, as the pipeline does."""

from __future__ import annotations

import copy

from core.io.graph import Model
from core.techniques import Candidate, StepContext, apply_step


def apply_to_copy(config, model, data, *, onnx_only=False, **context_args):
    """Apply `config` to a deep copy of `model` (its ONNX graph only with `onnx_only`); returns (result, context)."""
    baseline = Model(model.source, model.onnx_model) if onnx_only else model
    candidate = Candidate(onnx_model=copy.deepcopy(model.onnx_model),
                          torch_module=None if onnx_only else copy.deepcopy(model.torch_module),
                          architecture=None if onnx_only else model.architecture)
    context = StepContext(dataset=data, baseline=baseline, seed=0, **context_args)
    return apply_step(config, candidate, context), context
