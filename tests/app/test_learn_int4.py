"""The Learn page's int4 section (Streamlit AppTest): block size vs error vs bytes on sample:tiny-lm's weights."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from test_learn_page import _values

pytest.importorskip("onnxruntime_genai")

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "learn.py")


def test_int4_section_draws_block_sizes_from_the_sample_weights(tmp_path, monkeypatch):
    """The int4 section charts error rising and bits per weight falling with block size, and says why the small
    sample's speed-up says little about memory."""
    monkeypatch.setenv("FEATHERWEIGHT_HOME", str(tmp_path / "home"))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["learn_section"] = "int4 blocks (LM)"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    headings = [s.value for s in at.subheader]
    assert headings == ["int4: one scale per block of weights", "Why tiny-lm's int4 speed-up says little about memory"]
    chart = json.loads(next(e for e in at.get("plotly_chart") if e.key == "learn_int4_chart").proto.spec)
    errors, bits = (_values(trace["y"]) for trace in chart["data"])
    assert list(chart["data"][0]["x"]) == ["16", "32", "64", "128", "256"]
    assert errors == sorted(errors) and bits == sorted(bits, reverse=True)
    assert "memory-bound" in " ".join(m.value for m in at.markdown)


def test_every_section_works_with_a_decoder_as_the_current_model(tmp_path, monkeypatch):
    """With tiny-lm as the session's model, every Learn section renders without an exception (before: all but int4
    raised AttributeError): Quantization draws its weights' grid, the ONNX-only sections say they are not for
    decoders, and Decoding (LM) explains the KV cache and memory-bound decode on its own shapes."""
    from core.session import MODEL_KEY, ModelChoice, sample_card

    monkeypatch.setenv("FEATHERWEIGHT_HOME", str(tmp_path / "home"))
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state[MODEL_KEY] = ModelChoice("sample:tiny-lm", "tiny-lm", sample_card("tiny-lm"))
    at.session_state["learn_section"] = "Quantization"  # Learn opens on the lesson path, which loads no model
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="learn_model").value == "sample:tiny-lm"
    assert "Weights snap to a grid" in [s.value for s in at.subheader]
    for section in ("Pruning", "Distillation", "Size & speed", "Depthwise"):
        at.session_state["learn_section"] = section
        at.run()
        assert not at.exception and not at.error, section
        assert any("not offered for decoders" in i.value for i in at.info), section
    at.session_state["learn_section"] = "Decoding (LM)"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["KV cache per token"] == "3.07 kB" and "Layers × KV heads × head size" in metrics
    assert {e.key for e in at.get("plotly_chart")} >= {"learn_kv_chart", "learn_roofline_chart"}
