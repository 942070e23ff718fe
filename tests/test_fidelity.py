"""Fidelity that reads right: flips, agreement on clear-margin samples and top-k overlap, measured against the
baseline on the held-out test split, shown in the table, the report and Compare's side by side (flips first)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from core.measure.quality import CONFIDENT_MARGIN
from core.pipeline.run import run, run_recipe
from core.spec.recipe import BenchmarkConfig, PruneConfig, QuantizeConfig, Recipe, Variant

FAST = BenchmarkConfig(batch_sizes=(1,), threads=1, warmup=1, runs=3, max_seconds=0.5)


def _outputs(path, x) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_a_near_uniform_random_classifier_has_no_clear_samples_rather_than_reading_broken(tmp_path):
    """Random weights and a softmax over 1,000 classes: int8 reshuffles near-ties, so plain agreement is low, but
    no sample has a clear fp32 margin, which results.json says instead of a bare 'agreement 0'."""
    import torch

    from core.io.data import load_data
    from core.io.graph import Model
    from core.io.model import export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 1000), torch.nn.Softmax(dim=1)).eval()
    model = Model("random-1000", export_onnx(net, torch.zeros(1, 1, 8, 8)), None)
    data = load_data(None, model)  # synthetic inputs: fidelity only
    recipe = Recipe(benchmark=FAST, variants=(Variant("int8", (QuantizeConfig(mode="static"),)),))
    run(model, data, recipe, tmp_path)
    base, int8 = json.loads((tmp_path / "results.json").read_text())["variants"]

    n = len(data.eval)
    assert int8["split"] == base["split"] == {"quality": "test", "n": n, "resolution_pt": round(100 / n, 4)}
    assert int8["max_abs_error"] < 0.01  # the outputs barely moved...
    assert int8["agreement"] < 0.5  # ...yet top-1 changes on most samples (0.0 on an AVX-512 VNNI box)
    assert int8["flips"]["count"] == round(n * (1 - int8["agreement"]))
    assert int8["flips"]["rate"] == pytest.approx(1 - int8["agreement"])
    assert base["confident_samples"] == int8["confident_samples"] == 0  # every fp32 margin is < 0.1
    assert int8["agreement_confident"] is None and base["flips"] == {"count": 0, "rate": 0.0}
    assert int8["topk"] == 5 and 0.0 <= int8["topk_overlap"] <= 1.0 and base["topk_overlap"] == 1.0


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """digits-mlp with half its weights pruned and no fine-tuning: a variant with a few dozen flips."""
    out = tmp_path_factory.mktemp("fidelity")
    recipe = Recipe(model="sample:digits-mlp", data="sample:digits", benchmark=FAST,
                    variants=(Variant("pruned", (PruneConfig(method="unstructured", amount=0.85,
                                                             finetune_epochs=0),)),))
    run_recipe(recipe, out)
    return out, json.loads((out / "results.json").read_text())


def test_flips_confident_agreement_and_topk_match_a_direct_numpy_computation(digits_run, digits_mlp,
                                                                            digits_mlp_data):
    """On the digits test split, every new fidelity number equals one computed here from the two artifacts."""
    out, results = digits_run
    base, pruned = results["variants"]
    x = digits_mlp_data.eval.x["input"]
    b = _outputs(out / base["artifact"], x).astype(np.float64)
    v = _outputs(out / pruned["artifact"], x).astype(np.float64)

    flips = int((b.argmax(1) != v.argmax(1)).sum())
    probabilities = np.exp(b - b.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    ranked = np.sort(probabilities, axis=1)
    clear = ranked[:, -1] - ranked[:, -2] >= CONFIDENT_MARGIN
    overlap = np.mean([len(set(np.argsort(-vi)[:5]) & set(np.argsort(-bi)[:5])) / 5 for vi, bi in zip(v, b)])

    assert len(x) == 360 and pruned["split"] == {"quality": "test", "n": 360, "resolution_pt": 0.2778}
    assert 5 <= flips and pruned["flips"] == {"count": flips, "rate": pytest.approx(flips / 360)}
    assert pruned["confident_samples"] == base["confident_samples"] == int(clear.sum()) > 300
    assert pruned["agreement_confident"] == pytest.approx((b.argmax(1) == v.argmax(1))[clear].mean())
    assert pruned["agreement_confident"] > pruned["agreement"]  # the flips sit where the baseline was unsure
    assert pruned["topk"] == 5 and pruned["topk_overlap"] == pytest.approx(overlap)


def test_table_csv_and_report_carry_the_fidelity_columns_and_say_which_split(digits_run):
    from core.views.report import build_report
    from core.results.table import results_frame

    out, results = digits_run
    frame = results_frame(results)
    pruned = frame[frame["name"] == "pruned"].iloc[0]
    assert pruned["flips"] == results["variants"][1]["flips"]["count"]
    assert {"flip_rate", "agreement_confident", "confident_samples", "topk_overlap", "quality_split",
            "quality_n"} <= set(frame.columns)
    assert pruned["quality_split"] == "test" and pruned["quality_n"] == 360
    assert "flips" in (out / "results.csv").read_text().splitlines()[0].split(",")
    html = build_report(results)
    assert "held-out test split (360 samples; ±1 sample = 0.28 pt)" in html
    assert f"{int(pruned['flips'])} (" in html and "Top-5 overlap" in html and "Agreement, margin ≥ 0.1" in html
    assert "180 validation" in html and "360 held-out test samples" in html


def test_side_by_side_shows_the_flipped_samples_first(digits_run):
    """Compare's side by side searches the whole test split and puts the samples whose top-1 changed first."""
    from core.analysis.side_by_side import side_by_side

    out, results = digits_run
    flips = results["variants"][1]["flips"]["count"]
    result = side_by_side(out, results, "pruned", flips + 4)
    assert result.scanned == 360 and result.flips == flips
    agree = list(result.table["agree"])
    assert agree == [False] * flips + [True] * 4
    assert list(result.table["sample"][:flips]) == sorted(result.table["sample"][:flips])  # flips in sample order
    assert (result.table["baseline"] != result.table["pruned"]).tolist() == [not a for a in agree]
