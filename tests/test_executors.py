"""The same sweep on the local executor and on a local Ray cluster gives the same results."""

import json

import pytest

from core.recipe import Recipe

SWEEP = """
model: sample:digits-mlp
data: sample:digits
benchmark: {batch_sizes: [1], warmup: 1, runs: 5, max_seconds: 1}
sweep: {name: grid, steps: [{technique: quantize, mode: [dynamic, static, fp16]}]}
"""


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_sweep_on_ray_matches_local(tmp_path, ray_cluster):
    """Variants built as Ray tasks have the same names, sizes and accuracy as locally, artifacts included."""
    from core.pipeline import run_recipe

    recipe = Recipe.from_text(SWEEP)
    local = run_recipe(recipe, tmp_path / "local")
    remote = run_recipe(recipe, tmp_path / "ray", executor="ray")
    assert [v.name for v in remote.variants] == [v.name for v in local.variants] == [
        "baseline", "grid[mode=dynamic]", "grid[mode=static]", "grid[mode=fp16]"]
    for a, b in zip(local.variants, remote.variants):
        assert b.status == "ok" and a.size_bytes == b.size_bytes and a.accuracy == b.accuracy
        assert (tmp_path / "ray" / b.artifact).read_bytes() == (tmp_path / "local" / a.artifact).read_bytes()
    data = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert data["environment"]["executor"] == "ray"
    assert json.loads((tmp_path / "local" / "results.json").read_text())["environment"]["executor"] == "local"
    assert all(v["info"].get("host") for v in data["variants"][1:])
