"""Decoders: zipped Hugging Face checkpoints checked as data, recipe options, and an int4 build of sample:tiny-lm
measured against its fp32 build (onnxruntime-genai)."""

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_genai")

from core.errors import BadInputError, FeatherweightError, UnsupportedModelError  # noqa: E402
from core.io.decoder import DecoderCheckpoint, load_decoder_bytes  # noqa: E402
from core.io.model import load_model, load_model_bytes  # noqa: E402
from core.spec.recipe import QuantizeConfig, Recipe  # noqa: E402
from sample_models import tiny_lm  # noqa: E402


def _zip(files: dict, folder: str = "my-model") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}" if folder else name, data)
    return buffer.getvalue()


def _checkpoint_files(**config_changes) -> dict:
    folder = tiny_lm.CHECKPOINT_DIR
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    return {"config.json": json.dumps(config), "model.safetensors": (folder / "model.safetensors").read_bytes(),
            "tokenizer.json": (folder / "tokenizer.json").read_bytes(),
            "tokenizer_config.json": (folder / "tokenizer_config.json").read_bytes()}


def test_a_zipped_checkpoint_loads_through_the_upload_path(tmp_path, monkeypatch):
    """The upload path takes a .zip of a Llama folder by its suffix and returns a checked checkpoint."""
    monkeypatch.setenv("FEATHERWEIGHT_CACHE", str(tmp_path))
    checkpoint = load_model_bytes(_zip(_checkpoint_files()), "my-model.zip")
    assert isinstance(checkpoint, DecoderCheckpoint)
    assert checkpoint.architecture == "LlamaForCausalLM"
    assert checkpoint.params == sum(p.numel() for p in tiny_lm.build().parameters())
    assert (checkpoint.folder / "model.safetensors").stat().st_size == \
        (tiny_lm.CHECKPOINT_DIR / "model.safetensors").stat().st_size
    assert checkpoint.card()["task"] == "text-generation"


def test_a_config_asking_for_remote_code_is_refused_in_one_line(tmp_path):
    """config.json with auto_map is refused before any weight is written, with one line naming the reason."""
    files = _checkpoint_files(auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    with pytest.raises(BadInputError) as excinfo:
        load_decoder_bytes(_zip(files), "evil.zip", tmp_path, max_bytes=2**30)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "remote code" in message and "auto_map" in message and "trust_remote_code" in message
    assert not any(tmp_path.iterdir())  # nothing extracted


def test_modeling_code_in_the_zip_is_refused(tmp_path):
    """A .py file riding along in the checkpoint is refused by name."""
    files = {**_checkpoint_files(), "modeling_llama.py": "import os; os.system('echo owned')"}
    with pytest.raises(BadInputError, match="modeling_llama.py, which is code"):
        load_decoder_bytes(_zip(files), "code.zip", tmp_path, max_bytes=2**30)


def test_a_pickle_only_checkpoint_is_refused(tmp_path):
    """pytorch_model.bin (a pickle) is refused, pointing at safetensors."""
    files = _checkpoint_files()
    files.pop("model.safetensors")
    files["pytorch_model.bin"] = b"\x80\x04\x95" + b"\x00" * 64
    with pytest.raises(BadInputError, match="pytorch_model.bin, a pickle; only safetensors"):
        load_decoder_bytes(_zip(files), "pickled.zip", tmp_path, max_bytes=2**30)


def test_missing_weights_unknown_architecture_and_bad_headers_are_refused(tmp_path):
    """No safetensors, an architecture outside the supported list, and a lying header each give one clear error."""
    files = _checkpoint_files()
    files.pop("model.safetensors")
    with pytest.raises(BadInputError, match="no \\*.safetensors"):
        load_decoder_bytes(_zip(files), "empty.zip", tmp_path / "a", max_bytes=2**30)
    with pytest.raises(UnsupportedModelError, match="'BertForMaskedLM' is not supported; supported: LlamaForCausalLM"):
        load_decoder_bytes(_zip(_checkpoint_files(architectures=["BertForMaskedLM"])), "bert.zip", tmp_path / "b",
                           max_bytes=2**30)
    files = _checkpoint_files()
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    files["model.safetensors"] = len(header).to_bytes(8, "little") + header + b"\x00" * 16
    with pytest.raises(BadInputError, match="does not match its bytes"):
        load_decoder_bytes(_zip(files), "liar.zip", tmp_path / "c", max_bytes=2**30)


def test_nested_paths_and_zip_bombs_are_refused(tmp_path):
    """Entries outside one flat folder, and a size beyond the upload cap, are refused before extraction."""
    files = {**_checkpoint_files(), "../escape.json": "{}"}
    with pytest.raises(BadInputError, match="not a file at the checkpoint folder's top level"):
        load_decoder_bytes(_zip(files, folder=""), "escape.zip", tmp_path, max_bytes=2**30)
    with pytest.raises(BadInputError, match="expands to"):
        load_decoder_bytes(_zip(_checkpoint_files()), "big.zip", tmp_path, max_bytes=1000)
    with pytest.raises(BadInputError, match="not a zip archive"):
        load_decoder_bytes(b"PK\x03\x04 not really", "broken.zip", tmp_path, max_bytes=2**30)


def test_recipe_validates_decoder_options():
    """accuracy_level takes 0..4 only (not a bool); a block size the builder refuses fails with the allowed list."""
    from core.techniques.decoder import build_for_steps

    assert QuantizeConfig(mode="int4", accuracy_level=4).accuracy_level == 4
    with pytest.raises(BadInputError, match="accuracy_level=5 is not supported; allowed: 0, 1, 2, 3, 4"):
        QuantizeConfig(mode="int4", accuracy_level=5)
    with pytest.raises(BadInputError, match="accuracy_level=True"):
        QuantizeConfig(mode="int4", accuracy_level=True)
    with pytest.raises(BadInputError, match="block_size=512 is not supported for decoders; allowed: 16, 32"):
        build_for_steps([QuantizeConfig(mode="int4", block_size=512)])
    with pytest.raises(UnsupportedModelError, match="mode='static' is not offered for decoders"):
        build_for_steps([QuantizeConfig(mode="static")])
    assert build_for_steps([QuantizeConfig(mode="dynamic")]).precision == "int8"
    recipe = Recipe.from_dict({"model": "sample:tiny-lm", "variants": [
        {"name": "int4", "steps": [{"technique": "quantize", "mode": "int4", "accuracy_level": 4}]}]})
    assert Recipe.from_text(recipe.to_yaml()) == recipe


def test_sample_corpus_floor_is_exact_and_the_split_deterministic():
    """The held-out split is the same every time, and its floor is the generator's own perplexity (above 1)."""
    a, nll_a = tiny_lm.split.__wrapped__("eval")
    b, nll_b = tiny_lm.split.__wrapped__("eval")
    np.testing.assert_array_equal(a, b)
    assert (a[:, 0] == tiny_lm.BOS_ID).all()
    assert 2.0 < tiny_lm.heldout_floor() < 4.0
    assert math.isclose(tiny_lm.heldout_floor(), math.exp(nll_a[:, 1:].mean()))


def test_int4_block_error_falls_with_block_size_and_bytes_rise():
    """On tiny-lm's real weights, smaller blocks give less error and more bits per weight."""
    from core.teach.int4 import sample_block_table

    rows = [r for r in sample_block_table() if r.block_size]
    errors = [r.relative_rms_error for r in rows]
    bits = [r.bits_per_weight for r in rows]
    assert errors == sorted(errors) and errors[0] < errors[-1]
    assert bits == sorted(bits, reverse=True) and 4.0 < bits[-1] < bits[0] <= 6.0


@pytest.mark.slow
def test_int4_build_of_the_sample_is_smaller_and_close_to_fp32(tmp_path):
    """int4 (block 32) on sample:tiny-lm: >= 3.5x smaller than the same-run fp32 build, perplexity within 5%,
    near the corpus floor, greedy agreement and divergence reported, tokens/s and RSS measured."""
    from core.pipeline.run import run_recipe
    from core.results.table import results_frame

    recipe = Recipe.from_dict({"model": "sample:tiny-lm", "data": "sample:tiny-lm-text",
                               "benchmark": {"threads": 1, "runs": 1},
                               "variants": [{"name": "int4", "steps": [
                                   {"technique": "quantize", "mode": "int4", "block_size": 32,
                                    "accuracy_level": 4}]}]})
    result = run_recipe(recipe, tmp_path)
    base, int4 = result.variants
    assert result.task == "text-generation" and base.status == int4.status == "ok", int4.error
    assert base.size_bytes / int4.size_bytes >= 3.5
    assert int4.perplexity <= base.perplexity * 1.05
    assert tiny_lm.heldout_floor() < base.perplexity < tiny_lm.heldout_floor() * 1.5
    assert base.greedy_agreement == 1.0 and 0.0 <= int4.greedy_agreement <= 1.0
    assert len(int4.greedy_divergence["first_divergence"]) == 8
    for variant in (base, int4):
        assert variant.tokens_per_s["prefill"] > 0 and variant.tokens_per_s["decode"] > 0
        assert variant.ttft_ms > 0 and variant.peak_rss_mb > 10
        assert (tmp_path / variant.artifact).exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {"tokens_per_s", "ttft_ms", "peak_rss_mb", "perplexity", "greedy_agreement"} <= set(saved["variants"][1])
    frame = results_frame(saved)
    assert frame.loc[1, "decode_tok_s"] > 0 and frame.loc[1, "usd_per_million_tokens"] > 0
    assert abs(frame.loc[1, "perplexity_increase_pct"]) <= 5.0
    assert "decode_tok_s" in (Path(tmp_path) / "results.csv").read_text().splitlines()[0]


def test_sample_loads_as_a_checkpoint_and_is_listed():
    """sample:tiny-lm loads as a checked decoder checkpoint, and `featherweight samples` lists it."""
    from sample_models import SAMPLE_DATASETS, SAMPLE_MODELS, available

    checkpoint = load_model("sample:tiny-lm")
    assert isinstance(checkpoint, DecoderCheckpoint) and checkpoint.params > 2_000_000
    assert available(SAMPLE_MODELS["tiny-lm"]) == (True, None)
    assert "tiny-lm-text" in SAMPLE_DATASETS


def test_a_classifier_dataset_is_refused_for_a_decoder():
    """Giving a decoder run an image dataset fails with one line naming the allowed held-out text."""
    from core.pipeline.decoder import heldout

    with pytest.raises(FeatherweightError, match="not held-out text for a decoder; allowed: sample:tiny-lm-text"):
        heldout(load_model("sample:tiny-lm"), "sample:digits")


def test_the_dashboard_upload_inspects_a_zip_in_a_worker_and_refuses_remote_code(tmp_path, monkeypatch):
    """A zipped checkpoint uploaded through the session is inspected in a worker: a good one becomes the model
    (a text-generation card), one asking for remote code leaves the session as it was with one error line."""
    from core import session

    monkeypatch.setenv("FEATHERWEIGHT_CACHE", str(tmp_path))
    state = {}
    outcome = session.apply_model_upload(state, "llama.zip", _zip(_checkpoint_files()))
    assert outcome.error is None, outcome.error
    assert state[session.MODEL_KEY].card["task"] == "text-generation"
    evil = _zip(_checkpoint_files(auto_map={"AutoModelForCausalLM": "modeling_evil.Evil"}))
    outcome = session.apply_model_upload(state, "evil.zip", evil)
    assert outcome.error and "\n" not in outcome.error and "remote code" in outcome.error
    assert state[session.MODEL_KEY].label == "llama.zip"


def test_a_decoder_card_has_a_layer_table_from_the_safetensors_headers():
    """The model card lists every weight tensor of the checkpoint (read from the headers, no weights loaded):
    the rows add up to the checkpoint's parameters and bytes, and tiny-lm's projections read as linear layers."""
    checkpoint = load_model("sample:tiny-lm")
    layers = checkpoint.card()["layers"]
    assert sum(row["params"] for row in layers) == checkpoint.params
    assert abs(sum(row["share"] for row in layers) - 1.0) < 1e-9
    assert sum(row["bytes"] for row in layers) <= checkpoint.card()["size_bytes"]
    kinds = {row["name"]: row["type"] for row in layers}
    assert any(name.endswith("q_proj.weight") and kind == "linear" for name, kind in kinds.items())
    assert any("embed" in name and kind == "embedding" for name, kind in kinds.items())
    assert any(kind == "norm / bias" for kind in kinds.values())


def test_a_checkpoint_with_fp8_weights_is_refused_in_one_line(tmp_path):
    """The one header check knows F8 (a weight upload may carry it); the decoder builder does not read it."""
    files = _checkpoint_files()
    header = json.dumps({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}).encode()
    files["model.safetensors"] = len(header).to_bytes(8, "little") + header + b"\x00" * 4
    with pytest.raises(BadInputError, match="F8_E4M3, which the model builder does not read"):
        load_decoder_bytes(_zip(files), "fp8.zip", tmp_path / "a", max_bytes=2**30)
