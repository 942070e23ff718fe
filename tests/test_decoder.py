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
    """accuracy_level is "auto" by default and takes 0..4 otherwise (not a bool); a block size the builder refuses
    fails with the allowed list, before anything is measured."""
    from core.techniques.decoder import build_for_steps, checked_step

    assert QuantizeConfig(mode="int4").accuracy_level == "auto"
    assert QuantizeConfig(mode="int4", accuracy_level=4).accuracy_level == 4
    with pytest.raises(BadInputError, match="accuracy_level=5 is not supported; allowed: 'auto', 0, 1, 2, 3, 4"):
        QuantizeConfig(mode="int4", accuracy_level=5)
    with pytest.raises(BadInputError, match="accuracy_level=True"):
        QuantizeConfig(mode="int4", accuracy_level=True)
    with pytest.raises(BadInputError, match="block_size=512 is not supported for decoders; allowed: 16, 32"):
        checked_step([QuantizeConfig(mode="int4", block_size=512)])
    with pytest.raises(UnsupportedModelError, match="mode='static' is not offered for decoders"):
        build_for_steps([QuantizeConfig(mode="static")])
    assert build_for_steps([QuantizeConfig(mode="dynamic", accuracy_level=4)]).precision == "int8"
    recipe = Recipe.from_dict({"model": "sample:tiny-lm", "variants": [
        {"name": "int4", "steps": [{"technique": "quantize", "mode": "int4", "accuracy_level": 4}]},
        {"name": "int8", "steps": [{"technique": "quantize", "mode": "dynamic"}]}]})
    assert Recipe.from_text(recipe.to_yaml()) == recipe


def test_auto_accuracy_level_is_measured_once_per_cpu_and_cached(tmp_path):
    """"auto" measures level 0 against level 4 once per CPU and library version, writes the choice atomically into
    the cache, and reads it back after that; the choice is level 4 exactly when its whole interval is above 1."""
    from core.measure import nbits

    calls = []

    def fake(bits):
        calls.append(bits)
        return {"bits": bits, "level": 4, "speedup": {"ratio": 3.0, "low": 2.9, "high": 3.1, "rounds": 16}}

    first = nbits.level_choice(4, measure=fake, directory=tmp_path)
    second = nbits.level_choice(4, measure=fake, directory=tmp_path)
    assert calls == [4] and first["cached"] is False and second["cached"] is True and second["level"] == 4
    saved = json.loads((tmp_path / nbits.CACHE_FILE).read_text())
    assert list(saved) == [nbits.cache_key()] and saved[nbits.cache_key()]["4"]["level"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    nbits.level_choice(8, measure=fake, directory=tmp_path)
    assert calls == [4, 8] and set(json.loads((tmp_path / nbits.CACHE_FILE).read_text())[nbits.cache_key()]) == \
        {"4", "8"}
    measured = nbits.measure_levels(4, max_seconds=0.5)  # the real kernels, on whatever CPU runs the tests
    assert measured["level"] == (4 if measured["speedup"]["low"] > 1.0 else 0)
    assert measured["speedup"]["rounds"] >= 2 and set(measured["us_per_call"]) == {"0", "4"}
    assert "accuracy_level auto -> " in nbits.choice_text(measured)


def test_a_sample_decoder_is_scored_on_its_own_text_by_default():
    """Without data, sample:tiny-lm is scored on its own held-out text (whose perplexity floor is known), not on
    the bundled sentences (before: 22 windows of MiniLM sentences, perplexity 172,432)."""
    from core.pipeline.decoder import heldout

    windows, prompts, summary = heldout(load_model("sample:tiny-lm"), None)
    assert summary["source"] == "sample:tiny-lm-text" and summary["perplexity_floor"] == tiny_lm.heldout_floor()
    assert summary["tokens"] == windows.shape[0] * (windows.shape[1] - 1) and prompts.shape == (8, 16)
    assert len(summary["prompt_text"]) == 8 and all(isinstance(t, str) and t for t in summary["prompt_text"])


def test_the_users_text_is_parsed_capped_and_tokenized_with_the_checkpoints_tokenizer(tmp_path):
    """A .txt and a .jsonl become windows of the checkpoint's own tokens, starting with its <s>; the summary says
    which text, how many tokens, the unknown-token share; bad files give one line each."""
    from core.io.text import MAX_TEXT_BYTES, heldout_text, parse_text, summary_text

    checkpoint = load_model("sample:tiny-lm")
    sentence = "the red cat sees the dog . one plus two is three . "
    (tmp_path / "mine.txt").write_text(sentence * 80, encoding="utf-8")
    text = heldout_text(checkpoint, str(tmp_path / "mine.txt"))
    assert text.windows.shape[1] == 128 and (text.windows[:, 0] == tiny_lm.BOS_ID).all()
    assert text.summary["source"] == "mine.txt" and text.summary["unknown_token_share"] == 0.0
    assert text.summary["text_tokens"] == 13 * 80 and text.summary["perplexity_floor"] is None
    assert "mine.txt: 8 windows of 128 tokens" in summary_text(text.summary)
    lines = "\n".join(json.dumps({"text": sentence * 10, "id": i}) for i in range(9))
    (tmp_path / "mine.jsonl").write_text(lines, encoding="utf-8")
    assert heldout_text(checkpoint, str(tmp_path / "mine.jsonl")).summary["documents"] == 9
    bad = {"latin1.txt": ("caf\u00e9".encode("latin-1"), "not UTF-8 text"),
           "empty.txt": (b"  \n", "holds no text"),
           "records.jsonl": (b'{"prompt": "hi"}\n', 'line 1 has no "text" string (found: prompt)'),
           "broken.jsonl": (b"{not json\n", "line 1 is not JSON"),
           "big.txt": (b"a" * (MAX_TEXT_BYTES + 1), "the limit for held-out text is 16 MiB")}
    for name, (data, message) in bad.items():
        with pytest.raises(BadInputError) as excinfo:
            parse_text(data, name)
        assert message in str(excinfo.value) and "\n" not in str(excinfo.value), name
    with pytest.raises(BadInputError, match="one 128-token window needs at least 127"):
        heldout_text(checkpoint, str(_write(tmp_path / "short.txt", "the red cat .")))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_greedy_prefix_match_counts_tokens_before_the_first_difference():
    """The prefix match is how far a variant's greedy text follows fp32's; what comes after is not compared."""
    from core.measure.decoding import prefix_match

    got = prefix_match([[1, 2, 3, 9, 9], [4, 5, 6, 7, 8]], [[1, 2, 3, 4, 5], [4, 5, 6, 7, 8]])
    assert got == {"first_divergence": [3, None], "mean_prefix_tokens": 4.0, "diverged_prompts": 1,
                   "new_tokens": 5}


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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """sample:tiny-lm with the default options (int4 and int8 weight-only, accuracy_level auto), measured together;
    no data: the sample's own text."""
    from core.pipeline.run import run_recipe

    out = tmp_path_factory.mktemp("tiny-lm-run")
    # 400 MB in this process while the workers start: a peak carried across fork (ru_maxrss) would show it
    ballast = np.ones(BALLAST_MB * 2**20 // 8)
    recipe = Recipe.from_dict({"model": "sample:tiny-lm", "benchmark": {"threads": 1, "max_seconds": 2},
                               "variants": [{"name": "int4", "steps": [{"technique": "quantize", "mode": "int4"}]},
                                            {"name": "int8", "steps": [{"technique": "quantize", "mode": "dynamic"}]}]})
    result = run_recipe(recipe, out)
    del ballast
    return result, out


BALLAST_MB = 400


@pytest.mark.slow
def test_default_options_on_the_sample_are_measured_honestly(tiny_run):
    """int4 and int8 at the default options: smaller, perplexity within +1% of the same-run fp32, KL and
    teacher-forced agreement reported, decode speed-ups with a 95% interval from interleaved rounds, and each
    variant's peak RSS its own worker's (before: the parent's ru_maxrss carried across fork, 518-581 MB growing in
    run order for a 9.6 MB model)."""
    result, out = tiny_run
    base, int4, int8 = result.variants
    assert result.task == "text-generation" and all(v.status == "ok" for v in result.variants), result.variants
    assert result.dataset["source"] == "sample:tiny-lm-text"
    assert tiny_lm.heldout_floor() < base.perplexity < tiny_lm.heldout_floor() * 1.05
    assert base.size_bytes / int4.size_bytes >= 3.5 and base.size_bytes / int8.size_bytes >= 3.0
    for variant in (int4, int8):
        assert variant.perplexity <= base.perplexity * 1.01
        assert 0.0 <= variant.kl_per_token < 0.01 and 0.5 < variant.next_token_agreement <= 1.0
        interval = variant.speedup["1"]
        assert interval["low"] <= interval["ratio"] <= interval["high"] and interval["rounds"] >= 2
        assert variant.info["build"]["accuracy_level"] in (0, 4) and "accuracy_level_auto" in variant.info["build"]
    assert base.kl_per_token == 0.0 and base.next_token_agreement == 1.0 and not base.speedup
    assert base.greedy_divergence["mean_first_divergence"] == 32
    assert len(int4.greedy_divergence["first_divergence"]) == 8
    for variant in result.variants:
        assert variant.tokens_per_s["prefill"] > 0 and variant.tokens_per_s["decode"] > 0 and variant.ttft_ms > 0
        assert 10 < variant.peak_rss_mb < BALLAST_MB / 2, (variant.name, variant.peak_rss_mb)  # ~70-80 MB here
        assert (out / variant.artifact).exists() and variant.cpu_ms_per_sample["1"] > 0
    timing = result.timing
    assert timing["batches"]["1"]["rounds"] >= 4 and "interleaved rounds" in timing["method"]
    assert "contended" in timing and "contention" in timing["batches"]["1"]
    for variant in (int4, int8):  # what a pick reads: the validation windows and the held-out rounds
        chosen = variant.selection
        assert chosen["split"] == "validation" and chosen["n"] == base.selection["n"] > 0
        assert chosen["perplexity"] > 0 and chosen["speedup"]["1"]["rounds"] >= 2 and chosen["latency_ms"]["1"]
    assert int4.split == {"quality": "test", "n": 32 * 63, "windows": 32, "selection": "validation",
                          "selection_n": 32 * 63}
    saved = json.loads((out / "results.json").read_text())
    assert {"tokens_per_s", "ttft_ms", "peak_rss_mb", "perplexity", "kl_per_token", "next_token_agreement",
            "speedup"} <= set(saved["variants"][1])
    assert "greedy_agreement" not in saved["variants"][1]  # position-by-position after divergence: retired
    header = (out / "results.csv").read_text().splitlines()[0]
    assert "decode_tok_s" in header and "kl_per_token" in header and "decode_speedup_low" in header


@pytest.mark.slow
def test_the_export_zip_generates_with_onnxruntime_genai(tiny_run, tmp_path):
    """A variant's export is one zip (model.onnx, its data, genai_config.json, the tokenizer) that
    onnxruntime-genai loads as unzipped and generates 8 tokens from (before: a 47 KB model.onnx alone)."""
    from tokenizers import Tokenizer

    from tests.genai_support import greedy

    from core.io.decoder import export_zip

    result, out = tiny_run
    archive = export_zip((out / result.variants[1].artifact).parent)
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"int4/model.onnx", "int4/model.onnx.data", "int4/genai_config.json", "int4/tokenizer.json"} <= names
    zipfile.ZipFile(archive).extractall(tmp_path)
    # onnxruntime-genai's own tokenizer reads BPE / SentencePiece files, not tiny-lm's word-level one: the zip's
    # tokenizer.json is read with the tokenizers library here, as a user of the sample would.
    tokenizer = Tokenizer.from_file(str(tmp_path / "int4" / "tokenizer.json"))
    prompt = [tiny_lm.BOS_ID] + tokenizer.encode("count from three : four").ids
    tokens, _ = greedy(tmp_path / "int4", prompt, 8)
    assert len(tokens) == 8
    assert [tokenizer.id_to_token(t) for t in tokens[:3]] == ["five", "six", "."]  # the counting sentence, continued
    assert export_zip((out / result.variants[1].artifact).parent) == archive  # written once, then reused


@pytest.mark.slow
def test_a_decoder_run_reads_right_everywhere(tiny_run, tmp_path):
    """The CLI table shows perplexity and tokens/s; Compare's budget and best pick work on perplexity; the Graph
    worker draws and profiles a decoder variant (before: it looked for model.onnx.data in the wrong folder)."""
    from core.jobs.graph import build_graph_view
    from core.results.compare import (DECODER_DROP_LABEL, Budget, best_variant, chart_caption, generations_table,
                                      quality_drop_pt)
    from core.results.table import results_frame
    from core.views.report import build_report, results_text_table

    result, out = tiny_run
    results = result.to_dict()
    table = results_text_table(results)
    assert "perplexity" in table and "decode tok/s" in table and "quality" not in table
    assert f"{result.variants[1].perplexity:.4f}" in table
    frame = results_frame(results)
    drop, label = quality_drop_pt(frame)
    assert label == DECODER_DROP_LABEL and drop.iloc[0] == 0.0
    assert best_variant(frame, Budget(max_drop_pt=1.0), 1, "smallest") == "int4"
    assert "tokens/s" in chart_caption(results) and "Lower-left" not in chart_caption(results)
    generations = generations_table(results, "int4")
    assert len(generations) == 8 and generations["fp32"].str.len().min() > 0
    assert "KL / token" in build_report(results)
    # Cost's device fit: a per-token roofline from each variant's recorded profile (before: empty for decoders).
    from core.results.cost import cost_frame, device_fit_frame

    assert all(v.compute["per"] == "decoded token" and v.compute["weight_bytes"] == v.size_bytes
               for v in result.variants)
    fit = cost_frame(results).set_index("name")
    pi = "est. ms: Raspberry Pi 4 class"
    assert fit["fits: Raspberry Pi 4 class"].all() and fit.loc["int4", pi] < fit.loc["baseline", pi]
    assert set(device_fit_frame(results)["bound"]) >= {"memory"}
    # Insight's diagnostics profile one decode step of the genai graphs, opened by path with their weights beside
    # them (before: read as bytes, onnxruntime refused the external data); scaling over batch sizes says no.
    from core.analysis.diagnose import diagnose_run
    from core.analysis.scaling import run_scaling

    diag = diagnose_run(out, results, ["int4"], runs=8, max_seconds=0.5)
    assert diag["batch_size"] == 1 and diag["decode_step_past_tokens"] == results["dataset"]["prompt_tokens"] + 8
    ops = {row["op"]: row for row in diag["variants"]["int4"]["comparison"]}
    assert ops["MatMulNBits"]["after_ms"] > 0 and ops["MatMulNBits"]["before_ms"] == 0 and ops["MatMul"]["before_ms"] > 0
    assert diag["variants"]["int4"]["speedup"] == results["variants"][1]["speedup"]["1"]
    with pytest.raises(BadInputError, match="per token"):
        run_scaling(out, results, ["int4"])
    view = build_graph_view(out, "int4", tmp_path / "graph", runs=2)
    assert view["counts"]["precision"]["int4"] > 0 and view["profile"]["after_total_ms"] > 0
    assert view["profile"]["decode_step_past_tokens"] == results["dataset"]["prompt_tokens"] + 8  # one decode step


def test_sample_loads_as_a_checkpoint_and_is_listed():
    """sample:tiny-lm loads as a checked decoder checkpoint, and `featherweight samples` lists it."""
    from sample_models import SAMPLE_DATASETS, SAMPLE_MODELS, available

    checkpoint = load_model("sample:tiny-lm")
    assert isinstance(checkpoint, DecoderCheckpoint) and checkpoint.params > 2_000_000
    assert available(SAMPLE_MODELS["tiny-lm"]) == (True, None)
    assert "tiny-lm-text" in SAMPLE_DATASETS


def test_a_classifier_dataset_is_refused_for_a_decoder():
    """Giving a decoder run an image dataset, or an NPZ, fails with one line naming the allowed held-out text."""
    from core.pipeline.decoder import heldout

    with pytest.raises(FeatherweightError, match="not held-out text for a decoder; allowed: sample:tiny-lm-text"):
        heldout(load_model("sample:tiny-lm"), "sample:digits")
    with pytest.raises(FeatherweightError, match="'data.npz' is not held-out text .* a .txt / .jsonl file"):
        heldout(load_model("sample:tiny-lm"), "/tmp/data.npz")


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


def _decoder_results(**variants) -> dict:
    """A decoder run's results.json with round numbers: name -> (decode tok/s, perplexity, build, speed-up)."""
    rows = []
    for name, (rate, ppl, build, interval) in variants.items():
        rows.append({"name": name, "status": "ok", "steps": [], "size_bytes": 9_660_000 if name == "baseline"
                     else 1_650_000, "tokens_per_s": {"prefill": 10_000.0, "decode": rate}, "perplexity": ppl,
                     "latency_ms": {"1": {"p50": 1000.0 / rate}}, "throughput": {"1": rate},
                     "speedup": {"1": interval} if interval else {}, "info": {"build": build}, "notes": []})
    return {"task": "text-generation", "variants": rows, "dataset": {"source": "sample:tiny-lm-text"},
            "environment": {"cpu_flags": ["avx2", "avx512_vnni"], "last_level_cache_bytes": 2**30},
            "timing": {"contended": False}}


def test_a_slower_decoder_variant_says_why():
    """A decoder variant not faster than fp32 gets a note naming the cause: float compute at accuracy_level 0,
    no int8 dot-product instructions at level 4, or weights that fit in cache; a faster one gets none."""
    from core.results.explain import why_no_speedup

    level0 = {"precision": "int8", "accuracy_level": 0}
    level4 = {"precision": "int4", "accuracy_level": 4}
    slow = {"ratio": 0.2, "low": 0.19, "high": 0.21, "rounds": 20}
    same = {"ratio": 1.02, "low": 0.97, "high": 1.06, "rounds": 20}
    fast = {"ratio": 2.1, "low": 2.0, "high": 2.2, "rounds": 20}
    results = _decoder_results(baseline=(4000.0, 2.71, {"precision": "fp32"}, None), int8=(800.0, 2.71, level0, slow),
                               int4=(4100.0, 2.72, level4, same), fast=(8400.0, 2.72, level4, fast))
    notes = " ".join(why_no_speedup(results, "int8"))
    assert "accuracy_level 0" in notes and "8-bit" in notes and "accuracy_level auto" in notes
    assert "fit in this CPU's" in " ".join(why_no_speedup(results, "int4"))  # 9.66 MB fp32 < 1 GiB of cache
    assert why_no_speedup(results, "fast") == []
    results["environment"]["cpu_flags"] = ["avx2"]
    assert "No VNNI / AMX" in " ".join(why_no_speedup(results, "int4"))


def test_best_within_budget_judges_decoders_on_perplexity_and_never_takes_missing_for_zero():
    """Budgets on a decoder run are perplexity increases in percent; a variant whose perplexity is missing is
    never the "most accurate" (before: the missing drop counted as 0 and int4 was called most accurate)."""
    from core.results.compare import DECODER_DROP_LABEL, Budget, best_variant, quality_drop_pt
    from core.results.table import results_frame

    level4 = {"precision": "int4", "accuracy_level": 4}
    results = _decoder_results(baseline=(4000.0, 2.700, {"precision": "fp32"}, None),
                               int8=(6000.0, 2.7027, level4, None), int4=(7000.0, None, level4, None))
    frame = results_frame(results)
    drop, label = quality_drop_pt(frame)
    assert label == DECODER_DROP_LABEL and round(drop.iloc[1], 3) == 0.1 and np.isnan(drop.iloc[2])
    assert best_variant(frame, Budget(), 1, "most accurate") == "baseline"
    assert best_variant(frame[frame["name"] != "baseline"], Budget(), 1, "most accurate") == "int8"
    assert best_variant(frame, Budget(max_drop_pt=0.5), 1, "fastest") == "int8"  # int4's quality is unmeasured


def test_every_decoder_preset_runs_and_the_others_are_not_offered():
    """Every preset offered for a decoder builds variants the builder takes (int4 / int8 weight-only, accuracy level
    auto, batch 1); presets of static int8, pruning and distillation are not offered for it."""
    from core.spec.presets import PRESETS, preset_recipe, presets_for
    from core.techniques.decoder import refusal

    card = load_model("sample:tiny-lm").card()
    offered = presets_for(card)
    assert offered == ["Quick quantization", "Smallest", "Compare everything"] and len(PRESETS) > len(offered)
    for name in offered:
        recipe, left_out = preset_recipe(name, card)
        assert recipe.variants and not left_out and recipe.benchmark.batch_sizes == (1,)
        assert all(refusal(v.steps) is None for v in recipe.variants), name
    quick, _ = preset_recipe("Quick quantization", card)
    assert [(s.mode, s.accuracy_level) for v in quick.variants for s in v.steps] == [("int4", "auto"),
                                                                                     ("dynamic", "auto")]
    with pytest.raises(KeyError, match="does not apply to a language model"):
        preset_recipe("Recover accuracy", card)


def test_learn_explains_a_decoder():
    """With a decoder as the model, Learn's facts, weight grid, int4 blocks and decoding views work on its own weights
    and shapes (before: every section but int4 raised AttributeError); ONNX-only views are refused in one line."""
    from core.teach import explainers as learn

    source = learn.sample_source("sample:tiny-lm")
    assert "sample:tiny-lm" in learn.learnable_samples()
    facts = learn.explain(source, "facts", {})
    assert facts["decoder"] and facts["task"] == "text-generation" and len(facts["weights"]) == 43
    weight = next(w for w in facts["weights"] if w.name.endswith("q_proj.weight"))
    view = learn.explain(source, "quantization", {"tensor": weight.name, "bits": 4, "symmetric": True})
    assert view["channels"] == weight.shape[0] and view["mse_per_channel"] <= view["mse"]
    decoding = learn.explain(source, "decoding", {})
    assert decoding["kv_bytes_per_token"] == 2 * 6 * 2 * 32 * 4  # key + value, 6 layers, 2 KV heads, head size 32
    assert decoding["weight_bytes"]["int4"] < decoding["weight_bytes"]["int8"] < decoding["weight_bytes"]["fp32"]
    rates = decoding["roofline"]["int4"]
    assert decoding["bandwidth_gb_s"] > 0 and rates[0] >= rates[-1]  # per-sequence rate falls with batch size
    table = learn.explain(source, "int4_blocks", {"weights": 8})
    assert list(table["block_size"]) == [0, 16, 32, 64, 128, 256]
    learn.decode_view(learn.encode_view(decoding))
    with pytest.raises(BadInputError, match="is a decoder"):
        learn.explain(source, "pruning", {"tensor": weight.name, "sparsity": 0.5})


def test_choosing_another_model_drops_the_recipe_made_for_the_previous_one():
    """The recipe (with its excluded node names) belongs to the model it was made for: choosing another model drops
    it and records which model it was for; choosing the same model again keeps it."""
    from core import session

    state = {}
    assert session.choose_sample_model(state, "digits-mlp").error is None
    recipe = Recipe.from_dict({"variants": [{"name": "int8", "steps": [{"technique": "quantize", "mode": "static",
                                                                        "exclude": ["fc1"]}]}]})
    state[session.RECIPE_KEY] = recipe
    assert session.choose_sample_model(state, "digits-mlp").error is None
    assert state[session.RECIPE_KEY] == recipe and session.RECIPE_RESET_KEY not in state
    assert session.choose_sample_model(state, "tiny-lm").error is None
    assert session.RECIPE_KEY not in state and state[session.RECIPE_RESET_KEY] == "digits-mlp"
    assert state[session.DATA_KEY].spec == "sample:tiny-lm-text"


@pytest.mark.slow
def test_a_variant_whose_worker_fails_is_failed_and_the_others_measured(tiny_run, tmp_path):
    """A built variant its worker cannot load fails alone (one line, the worker's last output) while the others
    are measured; a baseline that cannot be measured fails the measurement, since nothing compares with it."""
    import shutil

    from core.errors import StepFailedError
    from core.measure.decoding import measure_decoders

    result, out = tiny_run
    dirs = {name: (out / v.artifact).parent for name, v in zip(("baseline", "int4"), result.variants)}
    broken = tmp_path / "broken"
    shutil.copytree(dirs["int4"], broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    windows = tiny_lm.split("eval")[0][:2]
    measured = measure_decoders({**dirs, "broken": broken}, windows, windows[:2, :16], max_seconds=0.3)
    assert set(measured.fields) == {"baseline", "int4"} and set(measured.failed) == {"broken"}
    assert "loading failed" in measured.failed["broken"] and "\n" not in measured.failed["broken"]
    assert measured.fields["int4"]["speedup"]["1"]["rounds"] >= 2
    with pytest.raises(StepFailedError, match="the fp32 baseline could not be measured"):
        measure_decoders({"baseline": broken, "int4": dirs["int4"]}, windows, windows[:2, :16], max_seconds=0.3)


def test_a_decoder_run_stopped_before_it_starts_is_cancelled_and_written(tmp_path):
    """Cancelling a decoder run before its first build leaves every variant cancelled (with its steps) and the run
    cancelled, written like any other run."""
    from core.pipeline.run import run_recipe

    recipe = Recipe.from_dict({"model": "sample:tiny-lm", "variants": [
        {"name": "int4", "steps": [{"technique": "quantize", "mode": "int4"}]}]})
    result = run_recipe(recipe, tmp_path, should_stop=lambda: True)
    assert result.status == "cancelled" and [v.status for v in result.variants] == ["cancelled", "cancelled"]
    assert result.variants[1].steps[0]["mode"] == "int4"
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "cancelled"
