"""Techniques: one config dataclass (in core.spec.recipe) and one apply function each, dispatched by config type.

An apply function takes the step's config, the variant's `Candidate` (the model as it stands after the steps
before) and a `StepContext`, and returns the new `Candidate`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import FeatherweightError, StepFailedError
from core.spec.recipe import StepConfig

_APPLY: dict[type, Callable] = {}
_MODULES = {"quantize": "core.techniques.quantize", "prune": "core.techniques.prune",
            "distill": "core.techniques.distill"}
# Quantize schemes with a module of their own (the others are core.techniques.quantize's).
_SCHEME_MODULES = {"static": "core.techniques.static", "qat": "core.techniques.qat"}


@dataclass
class Candidate:
    """A variant's model between steps: the torch module (until export) and/or the ONNX graph."""

    onnx_model: Any = None  # onnx.ModelProto; None while a torch step changed the module and export is pending
    torch_module: Any = None
    architecture: str | None = None
    info: dict = field(default_factory=dict)  # facts a step reports (sparsity, excluded nodes, ...)
    notes: list = field(default_factory=list)  # plain-language caveats ("why no speedup?")


@dataclass
class StepContext:
    """What a step may use: the data, the baseline (teacher), the seed, progress reporting and cancellation."""

    dataset: Any  # core.io.data.Dataset
    baseline: Any  # core.io.graph.Model
    seed: int = 0
    sequence_length: int = 128
    report: Callable[[str, float], None] = lambda message, fraction: None
    should_stop: Callable[[], bool] = lambda: False
    # (name, Candidate, steps as dicts) a step adds as variants of their own (the distillation control)
    extra_variants: list = field(default_factory=list)
    variant_name: str = ""  # the variant being built (names the distillation control)

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled("cancelled")


class Cancelled(FeatherweightError):
    """The run was cancelled by the user."""


def register(config_type: type):
    """Decorator: make `fn` the apply function for `config_type`."""

    def decorate(fn: Callable) -> Callable:
        _APPLY[config_type] = fn
        return fn

    return decorate


def apply_step(config: StepConfig, candidate: Candidate, context: StepContext) -> Candidate:
    """Run one step; errors that are not already ours become StepFailedError naming the technique.

    A quantize step runs as its scheme's config (`QuantizeConfig.scheme()`: only the options its mode uses)."""
    scheme = getattr(config, "scheme", None)
    if callable(scheme):
        config = scheme()
    if type(config) not in _APPLY:
        importlib.import_module(_SCHEME_MODULES.get(getattr(config, "mode", ""), _MODULES[config.technique])
                                if config.technique == "quantize" else _MODULES[config.technique])
    fn = _APPLY[type(config)]
    try:
        return fn(config, candidate, context)
    except FeatherweightError:
        raise
    except MemoryError:
        raise StepFailedError(f"{config.technique}: ran out of memory") from None
    except Exception as exc:  # noqa: BLE001 - a library failure inside a step becomes a failed variant
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise StepFailedError(f"{config.technique} failed: {exc.__class__.__name__}: {first}") from exc
