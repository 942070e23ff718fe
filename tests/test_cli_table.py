"""The end of `featherweight run` (issue 16): the table people want (size, accuracy or fidelity, speed-up per
variant), and `inspect` naming Featherweight's own version as the producer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.cli import main
from core.format import format_speedup

sys.path.insert(0, str(Path(__file__).parent / "app"))
from app_support import synthetic_results  # noqa: E402

RECIPE = """
model: sample:digits-mlp
data: sample:digits
benchmark: {batch_sizes: [1, 16], warmup: 1, runs: 5, max_seconds: 1}
variants:
  - name: int8-dynamic
    steps: [{technique: quantize, mode: dynamic}]
"""


def test_run_ends_with_size_quality_and_speedup_per_variant(tmp_path, capsys):
    """The run prints one row per variant with its size, × smaller, accuracy, drop and the speed-up with its interval
    per batch size, then how the speed-ups were timed."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.startswith("variant "))
    assert all(word in out[header] for word in ("size", "× smaller", "accuracy", "speed-up @1", "speed-up @16"))
    rows = {line.split()[0]: line for line in out[header + 1: header + 3]}
    assert set(rows) == {"baseline", "int8-dynamic"}
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    dynamic = next(v for v in results["variants"] if v["name"] == "int8-dynamic")
    assert f"{dynamic['accuracy'] * 100:.2f}%" in rows["int8-dynamic"]
    assert "1x (baseline)" in rows["baseline"] and " kB" in rows["baseline"]
    for batch in ("1", "16"):  # the interval as results.json has it: "2.10x (2.00–2.20)" or "no measurable ..."
        assert format_speedup(dynamic["speedup"][batch]) in rows["int8-dynamic"]
    assert any(line.startswith("Speed-ups: the baseline and every variant timed interleaved") for line in out)


def test_text_table_without_labels_shows_fidelity():
    """Without labels the quality column is the agreement with the baseline; failed rows show dashes."""
    from core.views.report import results_text_table

    results = synthetic_results()
    for v in results["variants"]:
        v["accuracy"] = None
    lines = results_text_table(results).splitlines()
    assert "agreement" in lines[0] and "accuracy" not in lines[0]
    broken = next(line for line in lines if line.startswith("broken"))
    assert "failed" in broken and "None" not in broken and "–" in broken


def test_inspect_names_featherweight_as_producer(capsys):
    """`inspect sample:digits-mlp` says producer "featherweight 0.1.0", not torch's version."""
    from core.io.model import featherweight_version

    assert main(["inspect", "sample:digits-mlp"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["producer"] == f"featherweight {featherweight_version()}"
    assert "2.13" not in card["producer"]
