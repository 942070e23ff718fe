"""A user's own language model in a real browser: upload a zipped checkpoint and a .txt of their own text, run the
decoder preset, read tokens/s and perplexity on Compare, open the variant in Graph and Learn, and generate 8 tokens
with onnxruntime-genai from the downloaded export zip."""

from __future__ import annotations

import io
import re
import time
import zipfile

import pytest
from playwright.sync_api import expect

from test_studio import PARETO, button, nav, point_labels, wait_idle

from tests.genai_support import greedy

pytest.importorskip("onnxruntime_genai")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# The user's text: sentences in the checkpoint's vocabulary (tiny-lm's grammar), about 2,000 tokens.
USER_TEXT = ("the old fox helps the dogs . three plus four is seven . grace gave ivan a bird and ivan thanked grace . "
             "count from two : three four five . ") * 50


def _checkpoint_zip(path) -> None:
    """sample:tiny-lm's Hugging Face folder, zipped the way a user zips theirs (one top folder)."""
    from sample_models import tiny_lm

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(tiny_lm.CHECKPOINT_DIR.iterdir()):
            archive.write(file, f"my-lm/{file.name}")
    path.write_bytes(buffer.getvalue())


def _metric(page, label: str) -> str:
    """The value of the st.metric labelled `label` (the first one)."""
    box = page.get_by_test_id("stMetric").filter(has_text=label).first
    box.wait_for(timeout=60_000)
    return box.get_by_test_id("stMetricValue").inner_text()


def test_own_checkpoint_and_text_end_to_end(server, page, tmp_path):
    """Upload my-lm.zip and mine.txt, run the default (decoder) preset, read tokens/s and perplexity on Compare,
    open the variant in Graph and Learn, download its zip and generate 8 tokens from it."""
    checkpoint, text = tmp_path / "my-lm.zip", tmp_path / "mine.txt"
    _checkpoint_zip(checkpoint)
    text.write_text(USER_TEXT, encoding="utf-8")

    page.goto(server.url)
    wait_idle(page)
    page.get_by_role("radio", name="Upload").or_(page.get_by_role("button", name="Upload", exact=True)).first.click()
    wait_idle(page)
    page.locator("input[type=file]").first.set_input_files(str(checkpoint))
    page.get_by_text("Model card · my-lm.zip").wait_for(timeout=120_000)
    wait_idle(page)
    page.get_by_role("button", name="Upload .txt / .jsonl").or_(
        page.get_by_role("radio", name="Upload .txt / .jsonl")).first.click()
    # The text uploader itself, once it is drawn (under load, "the last file input" could still be the model's)
    text_input = page.get_by_test_id("stFileUploader").filter(has_text="Upload text").locator("input[type=file]")
    text_input.wait_for(state="attached", timeout=60_000)
    wait_idle(page)
    text_input.set_input_files(str(text))
    page.get_by_text(re.compile(r"mine\.txt: \d+ windows of 128 tokens")).wait_for(timeout=120_000)
    wait_idle(page)

    nav(page, "Optimize")
    expect(page.get_by_text("int4 and int8 weight-only").first).to_be_visible()
    button(page, "Run 2 variants").click()
    clicked = time.perf_counter()
    page.get_by_text("Run completed").wait_for(timeout=420_000)
    print(f"\nmy-lm int4 + int8 run finished {time.perf_counter() - clicked:.1f} s after Run")

    nav(page, "Compare")
    labels = point_labels(page, timeout_s=60)
    assert {"baseline", "int4", "int8"} <= set(labels), labels
    chart = page.locator(PARETO).first
    assert any("Decode tokens/s" in t for t in chart.locator("text").all_text_contents())  # the y axis title
    assert page.get_by_text(re.compile(r"held-out text: mine\.txt: \d+ windows")).first.is_visible()
    if page.get_by_role("combobox", name="Variant").input_value() != "int4":  # the detail opens on the best pick
        page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Variant", exact=True)).click()
        page.get_by_role("option", name="int4", exact=True).click()
        wait_idle(page)
    expect(page.get_by_role("combobox", name="Variant")).to_have_value("int4")
    tokens_per_s = float(_metric(page, "Decode tokens/s").replace(",", ""))
    perplexity = float(_metric(page, "Perplexity"))
    assert tokens_per_s > 0 and 1.0 < perplexity < 100.0, (tokens_per_s, perplexity)

    with page.expect_download(timeout=120_000) as info:
        button(page, "Model · int4.zip").click()
    archive = tmp_path / "int4.zip"
    info.value.save_as(archive)
    zipfile.ZipFile(archive).extractall(tmp_path / "export")
    tokens = _generate(tmp_path / "export" / "int4", 8)
    assert len(tokens) == 8

    page.get_by_role("link", name="Open in graph").click()
    wait_idle(page, timeout=180_000)
    page.get_by_test_id("stMetric").filter(has_text="Quantized nodes").first.wait_for(timeout=180_000)
    assert int(_metric(page, "Quantized nodes")) > 0
    assert float(_metric(page, "Kernel time, one decoded token").split()[0]) > 0  # a decode step, profiled
    assert not page.get_by_test_id("stAlertContentError").count()

    nav(page, "Learn")  # it opens on the lesson path; the explainers explain the current model
    page.get_by_role("button", name="Decoding (LM)").or_(page.get_by_role("radio", name="Decoding (LM)")).first.click()
    wait_idle(page, timeout=120_000)
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile("my-lm.zip"))
    _metric(page, "KV cache per token")
    assert not page.get_by_test_id("stAlertContentError").count()
    assert not page.get_by_test_id("stException").count()


def _generate(folder, count: int) -> list[int]:
    """`count` greedy tokens from the exported folder with onnxruntime-genai."""
    from tokenizers import Tokenizer

    prompt = [1] + Tokenizer.from_file(str(folder / "tokenizer.json")).encode("count from two : three").ids
    return greedy(folder, prompt, count)[0]
