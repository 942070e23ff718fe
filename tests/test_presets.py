"""Presets fitted to the model (issue 16): no doomed variant, every variant left out is named with why, and the
benchmark made lighter where the default would take minutes."""

from __future__ import annotations

import pytest

from core.spec.presets import PRESETS, benchmark_seconds, fitted_benchmark, preset_recipe, slow_batch_sizes
from core.spec.recipe import BenchmarkConfig

CONV_ONLY_ONNX = {"format": "onnx", "task": "classification", "architecture": None,
                  "op_types": {"Conv": 3, "Relu": 3, "GlobalAveragePool": 1, "Flatten": 1}, "macs": 2_000_000}
MLP_ONNX = {"format": "onnx", "task": "classification", "architecture": None,
            "op_types": {"Gemm": 2, "Relu": 1}, "macs": 20_000}
# About ResNet-50: 4.1 GMAC per 224x224 image.
BIG_CONV = {**CONV_ONLY_ONNX, "macs": 4_100_000_000}


def test_quick_quantization_on_conv_only_has_no_dynamic_int8():
    """Dynamic int8 fails on a Conv-only graph ("Conv-only"): the preset leaves it out and says so."""
    recipe, left_out = preset_recipe("Quick quantization", CONV_ONLY_ONNX)
    assert [v.name for v in recipe.variants] == ["int8-static", "fp16"]
    assert any(note.startswith("int8-dynamic (no MatMul/Gemm") for note in left_out)
    recipe, left_out = preset_recipe("Quick quantization", MLP_ONNX)
    assert [v.name for v in recipe.variants] == ["int8-dynamic", "int8-static", "fp16"] and not left_out


def test_compare_everything_on_onnx_keeps_unstructured_pruning_and_names_the_rest():
    """On an ONNX upload unstructured pruning (which works on ONNX weights) stays, without fine-tuning; the
    structured and distilled variants are listed as left out, with the reason."""
    recipe, left_out = preset_recipe("Compare everything", CONV_ONLY_ONNX)
    names = [v.name for v in recipe.variants]
    assert "sparse80" in names
    sparse = next(v for v in recipe.variants if v.name == "sparse80").steps[0]
    assert sparse.method == "unstructured" and sparse.finetune_epochs == 0
    out = {note.split(" (")[0] for note in left_out}
    assert {"int8-dynamic", "int4", "pruned50", "pruned50-int8", "student"} <= out
    assert all("(" in note for note in left_out)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_says_what_it_left_out_on_onnx(name):
    """What a preset builds on a torch model but not on an ONNX one appears in its left-out list."""
    torch_card = {**MLP_ONNX, "format": "torch+onnx", "architecture": "digits-mlp", "op_types": {"Gemm": 2}}
    full, _ = preset_recipe(name, torch_card)
    onnx, left_out = preset_recipe(name, {**torch_card, "format": "onnx", "architecture": None})
    missing = {v.name for v in full.variants} - {v.name for v in onnx.variants}
    assert missing <= {note.split(" (")[0] for note in left_out}


def test_big_model_gets_lighter_batch_sizes_and_a_note():
    """ResNet-50-sized inputs at the default batch 256 take minutes per run: the preset lowers the large batch
    size and says so; a small model keeps the default, and a user's own choice is never changed."""
    recipe, notes = preset_recipe("Quick quantization", BIG_CONV)
    assert max(recipe.benchmark.batch_sizes) < 256 and 1 in recipe.benchmark.batch_sizes
    assert any("instead of 1, 256" in n for n in notes)
    small, notes = preset_recipe("Quick quantization", CONV_ONLY_ONNX)
    assert small.benchmark.batch_sizes == (1, 256) and not any("batch sizes" in n for n in notes)
    chosen = BenchmarkConfig(batch_sizes=(1, 512))
    assert fitted_benchmark(BIG_CONV, chosen) == (chosen, None)


def test_benchmark_estimate_flags_minutes():
    """The estimate the page warns with: minutes for batch 256 of a ResNet-50, seconds for the digits models."""
    bench = BenchmarkConfig()
    assert benchmark_seconds(BIG_CONV, bench, variants=3) > 600
    assert slow_batch_sizes(BIG_CONV, bench) == [256]
    assert benchmark_seconds(CONV_ONLY_ONNX, bench, variants=3) < 60
    assert slow_batch_sizes(CONV_ONLY_ONNX, bench) == []
    assert benchmark_seconds({"format": "onnx"}, bench, variants=1) is None
