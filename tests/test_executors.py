"""The same sweep on the local executor and on a local Ray cluster gives the same results."""

import json

import pytest

from core.spec.recipe import Recipe

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


def test_sweep_on_ray_matches_local(tmp_path, ray_cluster, monkeypatch):
    """Variants built as Ray tasks have the same names, sizes and accuracy as locally, artifacts included; the driver
    times every variant with the baseline afterwards (the same rounds, one process), wherever they were built."""
    import core.pipeline.ray
    from core.pipeline.run import run_recipe

    recipe = Recipe.from_text(SWEEP)
    local = run_recipe(recipe, tmp_path / "local")
    monkeypatch.setattr(core.pipeline.ray.platform, "node", lambda: "driver-host")  # the tasks run elsewhere
    remote = run_recipe(recipe, tmp_path / "ray", executor="ray")
    monkeypatch.undo()
    assert [v.name for v in remote.variants] == [v.name for v in local.variants] == [
        "baseline", "grid[mode=dynamic]", "grid[mode=static]", "grid[mode=fp16]"]
    for a, b in zip(local.variants, remote.variants):
        assert b.status == "ok" and a.size_bytes == b.size_bytes and a.accuracy == b.accuracy
        assert (tmp_path / "ray" / b.artifact).read_bytes() == (tmp_path / "local" / a.artifact).read_bytes()
    data = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert data["environment"]["executor"] == "ray"
    assert json.loads((tmp_path / "local" / "results.json").read_text())["environment"]["executor"] == "local"
    assert all(v["info"].get("host") for v in data["variants"][1:])
    rounds = data["timing"]["batches"]["1"]["rounds"]
    assert rounds >= 2 and all(v["speedup"]["1"]["rounds"] == (rounds + 1) // 2 for v in data["variants"][1:])
    assert not any("compares two machines" in n for v in data["variants"] for n in v["notes"])


def test_dashboard_jobs_on_a_ray_cluster(tmp_path, ray_cluster):
    """FEATHERWEIGHT_JOB_EXECUTOR=ray: a queued job's worker drives its variants as tasks on the given cluster."""
    from core.jobs.queue import JobRunner
    from core.jobs.store import RunStore

    address = ray_cluster.get_runtime_context().gcs_address
    runner = JobRunner(RunStore(tmp_path / "home"), executor="ray", ray_address=address)
    try:
        run_id = runner.submit("someone", SWEEP, "sample:digits-mlp", "sample:digits")
        status = runner.wait(run_id, timeout=300)
        assert status.state == "completed", status.error
        data = runner.store.results(run_id)
        worker_pid = runner.store.get(run_id).pid
    finally:
        runner.shutdown()
    assert data["environment"]["executor"] == "ray"
    assert [v["status"] for v in data["variants"]] == ["ok"] * 4
    assert all(v["info"].get("host") and v["info"].get("pid") not in (None, worker_pid) for v in data["variants"][1:])


def test_ray_job_executor_needs_an_address(tmp_path, monkeypatch):
    from core.errors import BadInputError
    from core.jobs.queue import JobRunner
    from core.jobs.store import RunStore

    monkeypatch.delenv("FEATHERWEIGHT_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("FEATHERWEIGHT_JOB_EXECUTOR", "ray")
    with pytest.raises(BadInputError, match="FEATHERWEIGHT_RAY_ADDRESS"):
        JobRunner(RunStore(tmp_path))
    monkeypatch.setenv("FEATHERWEIGHT_JOB_EXECUTOR", "spark")
    with pytest.raises(BadInputError, match="allowed: local, ray"):
        JobRunner(RunStore(tmp_path))
