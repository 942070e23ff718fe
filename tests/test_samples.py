"""The bundled digits samples: shipped weights, their accuracy, and width scaling for students."""

import numpy as np
import pytest
import torch

from core.io.model import load_sample_module
from sample_models import SAMPLE_DATASETS, SAMPLE_MODELS, available


@pytest.mark.parametrize("name, minimum", [("digits-mlp", 0.95), ("digits-cnn", 0.97)])
def test_shipped_weights_reach_their_accuracy(name, minimum):
    """The safetensors weights in the repo load and classify the eval split as trained."""
    module = load_sample_module(name)
    x, y = SAMPLE_DATASETS["digits"].load()["eval"]
    with torch.no_grad():
        accuracy = float((module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    assert accuracy >= minimum


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_width_scales_parameters(name):
    """A quarter-width student has several times fewer parameters and the same interface."""
    full = SAMPLE_MODELS[name].build(1.0)
    small = SAMPLE_MODELS[name].build(0.25)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) / count(small) > 3.5
    x = torch.zeros((2, *SAMPLE_MODELS[name].input_shape))
    assert small(x).shape == full(x).shape == (2, 10)


def test_digits_split_is_deterministic():
    """Loading the digits sample twice gives identical arrays."""
    a = SAMPLE_DATASETS["digits"].load()
    b = SAMPLE_DATASETS["digits"].load()
    for split in ("train", "calib", "eval"):
        np.testing.assert_array_equal(a[split][0], b[split][0])
        np.testing.assert_array_equal(a[split][1], b[split][1])


def test_builtin_samples_are_available():
    """Samples without an extra are always available."""
    assert available(SAMPLE_MODELS["digits-cnn"]) == (True, None)


def test_readme_samples_table_lists_every_sample():
    """README's Samples table names every bundled sample model with its dataset (it listed 2 of the 4)."""
    from pathlib import Path

    from sample_models import SAMPLE_MODELS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Samples", 1)[1].split("\n## ", 1)[0]
    for sample in SAMPLE_MODELS.values():
        assert f"| `sample:{sample.name}` | `sample:{sample.dataset}` |" in table, sample.name
