"""Featherweight's core: load, optimize and measure models. Never imports streamlit.

The public API, re-exported from the modules that define it. The re-exports load on first use (PEP 562), so
that importing one light submodule (``core.session``, ``core.jobs.store``) does not pull in pandas and the whole
pipeline: the dashboard's first render and every worker start pay only for what they use.
"""

import importlib

_EXPORTS = {
    "core.io.data": ("Dataset", "Split", "load_data", "load_data_bytes", "synthetic_dataset"),
    "core.errors": ("BadInputError", "FeatherweightError", "StepFailedError", "UnsupportedModelError"),
    "core.io.graph": ("Model",),
    "core.io.model": ("load_model", "load_model_bytes"),
    "core.io.safety": ("LoadLimits",),
    "core.measure.card": ("model_card",),
    "core.pipeline.build": ("ProgressEvent", "RunResult", "VariantResult", "load_results"),
    "core.pipeline.run": ("run", "run_recipe"),
    "core.spec.recipe": ("BenchmarkConfig", "DistillConfig", "PruneConfig", "QuantizeConfig", "Recipe", "Variant",
                    "default_recipe", "step_from_dict"),
    "core.results.table": ("results_frame",),
}
_SOURCE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_SOURCE)


def __getattr__(name: str):
    if name in _SOURCE:
        value = getattr(importlib.import_module(_SOURCE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'core' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
