"""Featherweight's core: load, optimize and measure models. Never imports streamlit.

The public API, re-exported from the modules that define it.
"""

from core.data import Dataset, Split, load_data, load_data_bytes, synthetic_dataset
from core.errors import BadInputError, FeatherweightError, StepFailedError, UnsupportedModelError
from core.models import LoadLimits, Model, load_model, load_model_bytes, model_card
from core.pipeline import ProgressEvent, RunResult, VariantResult, load_results, run, run_recipe
from core.recipe import (BenchmarkConfig, DistillConfig, PruneConfig, QuantizeConfig, Recipe, Variant,
                         default_recipe, step_from_dict)
from core.results import results_frame

__all__ = [
    "BadInputError", "BenchmarkConfig", "Dataset", "DistillConfig", "FeatherweightError", "LoadLimits", "Model",
    "ProgressEvent", "PruneConfig", "QuantizeConfig", "Recipe", "RunResult", "Split", "StepFailedError",
    "UnsupportedModelError", "Variant", "VariantResult", "default_recipe", "load_data", "load_data_bytes",
    "load_model", "load_model_bytes", "load_results", "model_card", "results_frame", "run", "run_recipe",
    "step_from_dict", "synthetic_dataset",
]
