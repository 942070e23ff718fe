"""Bounded disk (issue 25, finding 1): a refused upload or a failed run leaves nothing behind, the decoder and
sample caches stay under their caps (least recently used first out), and each owner's runs under a quota."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from conftest import tiny_lm_files, zip_files
from core.errors import BadInputError, FeatherweightError
from core.io.disk import STAGING_PREFIX, tree_bytes

pytestmark = pytest.mark.timeout(240)

MIB = 2**20


def _disk(*roots: Path) -> int:
    return sum(tree_bytes(root) for root in roots)


def _staging(root: Path) -> list:
    return [p for p in root.rglob(f"{STAGING_PREFIX}*")] + [p for p in root.rglob("*.tmp")]


def test_twenty_refused_zips_leave_at_most_one_mib_on_disk(hostile_zips, tmp_path, monkeypatch):
    """Each of 20 hostile checkpoints (overlapping entries, a 190x ratio, a bad CRC, lying sizes, 300k tensors,
    remote code in either config, a missing tokenizer, ...) is refused in one line, and the cache grows by at most
    1 MiB in all (before: ~580 MiB, kept for good, plus a staging folder)."""
    from core.io.model import load_model_bytes

    cache = tmp_path / "cache"
    monkeypatch.setenv("FEATHERWEIGHT_CACHE", str(cache))
    cache.mkdir()
    before = _disk(cache)
    slowest, wrong = (0.0, ""), {}
    for name, (data, words) in hostile_zips.items():
        started = time.monotonic()
        try:
            load_model_bytes(data, name)
            wrong[name] = "accepted"
        except FeatherweightError as exc:
            message = str(exc)
            if "\n" in message or not all(word in message for word in words) or str(tmp_path) in message:
                wrong[name] = message
        slowest = max(slowest, (time.monotonic() - started, name))
    grown = _disk(cache) - before
    print(f"20 refused zips: disk growth {grown:,} bytes; slowest {slowest[1]} {slowest[0]:.2f} s")
    assert not wrong, wrong
    assert grown <= MIB, f"the cache grew by {grown / MIB:,.1f} MiB"
    assert not _staging(cache)


def test_refusals_through_the_upload_worker_leave_nothing_in_the_cache_or_tmp(hostile_zips, tmp_path, monkeypatch):
    """The dashboard's path (bytes -> a private temporary folder -> a worker): the overlapping, the bad-CRC and the
    tokenizer-less zips are refused and neither the cache nor the temporary directory keeps a byte of them."""
    from core.jobs.entries import inspect_isolated

    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    cache.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("FEATHERWEIGHT_CACHE", str(cache))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    before = _disk(cache, tmp)
    for name in ("overlap_62x8mib.zip", "bad_crc.zip", "no_tokenizer.zip"):
        data, words = hostile_zips[name]
        with pytest.raises(BadInputError) as excinfo:
            inspect_isolated(data, name)
        assert all(word in str(excinfo.value) for word in words), (name, str(excinfo.value))
    grown = _disk(cache, tmp) - before
    assert grown <= MIB, f"{grown / MIB:,.1f} MiB left behind"
    assert not _staging(cache) and not list(tmp.iterdir())


def test_a_worker_killed_while_extracting_leaves_no_staging_folder_for_long(tmp_path, monkeypatch):
    """A worker SIGKILLed mid-extraction cannot clean up its staging folder; the next extraction removes it (its
    process is gone), and leaves a live process's staging folder alone."""
    import signal
    import subprocess
    import sys

    from core.jobs.entries import inspect_isolated

    cache = tmp_path / "cache"
    decoders = cache / "decoders"
    decoders.mkdir(parents=True)
    script = ("import os, signal, sys; d = sys.argv[1] + '/.staging-%d-dead' % os.getpid(); os.mkdir(d); "
              "open(d + '/model.safetensors', 'wb').write(bytes(2**20)); os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", script, str(decoders)])
    assert killed.returncode == -signal.SIGKILL
    live = decoders / f"{STAGING_PREFIX}{os.getpid()}-live"
    live.mkdir()
    assert len(_staging(cache)) == 2
    monkeypatch.setenv("FEATHERWEIGHT_CACHE", str(cache))
    with pytest.raises(BadInputError, match="tokenizer.json"):
        inspect_isolated(zip_files({"config.json": tiny_lm_files()["config.json"],
                                    "model.safetensors": tiny_lm_files()["model.safetensors"]}), "other.zip")
    assert _staging(cache) == [live]


def test_the_decoder_cache_keeps_under_its_cap_least_recently_used_first_out(tmp_path, monkeypatch):
    """With a 25 MiB cap, three 9.6 MB checkpoints A, B, C extracted in turn (A used again after B): B, the least
    recently used, is evicted for C; A and C stay; the cache never passes the cap."""
    from core.jobs.entries import inspect_isolated

    cache = tmp_path / "cache"
    monkeypatch.setenv("FEATHERWEIGHT_CACHE", str(cache))
    monkeypatch.setenv("FEATHERWEIGHT_DECODER_CACHE_MB", "25")
    zips = {name: zip_files(tiny_lm_files(rope_theta=theta)) for name, theta in
            (("a.zip", 10000.0), ("b.zip", 20000.0), ("c.zip", 30000.0))}
    decoders = cache / "decoders"
    sizes = []
    for name in ("a.zip", "b.zip", "a.zip", "c.zip"):
        card = inspect_isolated(zips[name], name)
        assert card["architecture"] == "LlamaForCausalLM"
        sizes.append(tree_bytes(decoders))
        time.sleep(0.05)  # distinct use times
    assert max(sizes) <= 25 * MIB, sizes
    kept = sorted(p.name for p in decoders.iterdir() if not p.name.startswith("."))
    assert len(kept) == 2, kept
    # A's and C's rope_theta survive; B's does not
    thetas = sorted(float(__import__("json").loads((decoders / k / "config.json").read_text())["rope_theta"])
                    for k in kept)
    assert thetas == [10000.0, 30000.0]


def test_the_sample_cache_and_graph_views_are_capped_least_recently_used_first_out(tmp_path, monkeypatch):
    """Old sample exports and graph views beyond their caps are removed, least recently used first; the newest
    stays whatever its size."""
    from core.io.disk import evict_least_recent

    folder = tmp_path / "cache"
    folder.mkdir()
    paths = []
    for i in range(6):
        path = folder / f"sample-{i}.onnx"
        path.write_bytes(b"\0" * MIB)
        os.utime(path, (1000 + i, 1000 + i))
        paths.append(path)
    os.utime(paths[0], (5000, 5000))  # used most recently
    removed = evict_least_recent(paths, 3 * MIB + 10)
    assert sorted(p.name for p in removed) == ["sample-1.onnx", "sample-2.onnx", "sample-3.onnx"]
    assert sorted(p.name for p in folder.iterdir()) == ["sample-0.onnx", "sample-4.onnx", "sample-5.onnx"]


def test_an_owner_over_the_disk_quota_is_refused_in_one_line_and_others_are_not(tmp_path, monkeypatch):
    """An owner whose runs hold more than FEATHERWEIGHT_OWNER_DISK_MB cannot queue another (one line naming the
    figures and what to do); another owner can; deleting a run frees the place."""
    from core.jobs.queue import JobRunner
    from core.jobs.store import RunStore

    monkeypatch.setenv("FEATHERWEIGHT_OWNER_DISK_MB", "2")
    store = RunStore(tmp_path / "home")
    old = store.create("hoarder", "variants: []\n")
    (store.run_dir(old.id) / "inputs" / "big.onnx").write_bytes(b"\0" * (3 * MIB))
    store.set_status(old.id, "completed")
    runner = JobRunner(store, poll_s=0.1)
    try:
        with pytest.raises(BadInputError) as excinfo:
            runner.submit("hoarder", "variants: []\n", "sample:digits-mlp", None)
        message = str(excinfo.value)
        assert "\n" not in message and "3.0 MiB" in message and "2 MiB" in message and "delete" in message
        other = runner.submit("someone-else", "variants: []\n", "sample:digits-mlp", None)
        runner.cancel(other)
        store.delete(old.id, "hoarder")
        runner.cancel(runner.submit("hoarder", "variants: []\n", "sample:digits-mlp", None))
    finally:
        runner.shutdown()


def test_a_run_that_writes_its_owner_past_the_quota_is_stopped_while_it_runs(tmp_path, monkeypatch):
    """The quota holds while a run writes, not only when it is submitted: an owner at 1.9 of 2 MiB may queue a run
    (under the quota then), and the run, once its files take the owner past 2 MiB, is stopped within seconds and
    fails with one line; what it wrote is removed, the owner's earlier run is untouched (before: the run went on
    writing, and only the next submit was refused)."""
    from core.jobs.queue import DISK_CHECK_S, JobRunner
    from core.jobs.store import RunStore

    monkeypatch.setenv("FEATHERWEIGHT_OWNER_DISK_MB", "2")
    store = RunStore(tmp_path / "home")
    old = store.create("writer", "variants: []\n")
    (store.run_dir(old.id) / "inputs" / "big.onnx").write_bytes(b"\0" * (19 * MIB // 10))
    store.set_status(old.id, "completed")
    runner = JobRunner(store, poll_s=0.1)
    # The baseline alone, warmed up 100,000 times at batch 256 (about 15 minutes): its exported model (0.6 MB) is
    # written to the run before the warm-up starts.
    endless = "model: sample:digits-cnn\nbenchmark: {batch_sizes: [256], threads: 1, warmup: 100000}\n"
    try:
        run_id = runner.submit("writer", endless, "sample:digits-cnn", None)
        started = time.monotonic()
        status = runner.wait(run_id, 180)
        took = time.monotonic() - started
    finally:
        runner.shutdown()
    assert status.state == "failed" and "over the disk quota" in status.error and "\n" not in status.error, status
    assert took < 120, took  # it never ends by itself: the quota stopped it
    assert tree_bytes(store.run_dir(run_id)) < 64 * 1024
    assert tree_bytes(store.run_dir(old.id) / "inputs" / "big.onnx") == 19 * MIB // 10
    assert DISK_CHECK_S <= 5


def test_a_failed_run_keeps_its_records_and_nothing_else(hostile_zips, tmp_path, monkeypatch):
    """A job whose uploaded checkpoint is refused in its worker fails with one line; the upload (8.5 MiB) is removed,
    and what is left of the run (recipe, manifest, outcome) is under 64 KiB."""
    from core.jobs.queue import JobRunner
    from core.jobs.store import RunStore

    monkeypatch.setenv("FEATHERWEIGHT_CACHE", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "home")
    runner = JobRunner(store, poll_s=0.1)
    data, words = hostile_zips["no_tokenizer.zip"]
    try:
        run_id = runner.submit("visitor", "variants: []\n", "inputs/evil.zip", None, inputs={"evil.zip": data})
        status = runner.wait(run_id, 120)
    finally:
        runner.shutdown()
    assert status.state == "failed" and "tokenizer.json" in status.error, status
    left = tree_bytes(store.run_dir(run_id))
    assert left < 64 * 1024, f"{left:,} bytes left in the failed run"
    assert store.manifest(run_id)["status"] == "failed"
    assert not (store.run_dir(run_id) / "inputs" / "evil.zip").exists()
    assert _disk(tmp_path / "cache") <= MIB
