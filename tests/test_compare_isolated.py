"""Side-by-side predictions run the run's models in a worker process, with the same answer as in-process."""

from __future__ import annotations

import pandas as pd
import pytest

from core.analysis.side_by_side import side_by_side, side_by_side_isolated
from core.errors import FeatherweightError
from core.pipeline.build import load_results
from core.pipeline.run import run_recipe
from core.spec.recipe import Recipe

RECIPE = """model: sample:digits-mlp
data: sample:digits
benchmark: {batch_sizes: [1], warmup: 1, runs: 3, max_seconds: 1}
variants:
- name: int8
  steps: [{technique: quantize, mode: dynamic}]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_recipe(Recipe.from_text(RECIPE), out)
    return out


def test_isolated_matches_in_process(run_dir):
    results = load_results(run_dir).to_dict()
    here = side_by_side(run_dir, results, "int8", 6)
    there = side_by_side_isolated(run_dir, "int8", 6)
    assert there.task == here.task == "classification"
    pd.testing.assert_frame_equal(there.table, here.table, check_dtype=False)
    assert there.images is not None and len(there.images) == len(here.images)
    assert all((a == b).all() for a, b in zip(there.images, here.images))


def test_a_corrupted_artifact_fails_in_the_worker_with_one_line(run_dir):
    artifact = run_dir / load_results(run_dir).to_dict()["variants"][1]["artifact"]
    original = artifact.read_bytes()
    try:
        artifact.write_bytes(b"\x08\x07" + b"\xff" * 4096)
        with pytest.raises(FeatherweightError) as info:
            side_by_side_isolated(run_dir, "int8", 4)
        assert "\n" not in str(info.value)
    finally:
        artifact.write_bytes(original)
