"""The server process never parses an uploaded or run-derived model or data file (issue 15): every page is driven
with an uploaded model and data and a finished run, while every parser is replaced by a spy in this (the
server's) process. The worker processes, which parse for real, are untouched by the spies and still answer."""

from __future__ import annotations

import importlib
import json

import pytest

from app_support import OWNER, add_real_run, errors_of

pytestmark = pytest.mark.timeout(600)

# Everything that reads model or data bytes: the libraries' loaders and Featherweight's own entry points.
PARSERS = [("onnx", "load"), ("onnx", "load_model"), ("onnx", "load_from_string"), ("onnx", "load_model_from_string"),
           ("onnxruntime", "InferenceSession"), ("torch", "load"), ("safetensors.torch", "load"),
           ("safetensors.torch", "load_file"), ("safetensors", "safe_open"), ("numpy", "load"), ("pandas", "read_csv"),
           ("core.io.model", "load_model"), ("core.io.model", "load_model_bytes"), ("core.io.model", "validate_onnx_bytes"),
           ("core.io.safety", "validate_onnx_bytes"),
           ("core.io.data", "load_data"), ("core.io.data", "load_data_bytes"), ("core.session", "load_choice_model")]


@pytest.fixture
def parser_spy(monkeypatch):
    """Replace every parser in this process by one that records the call and raises."""
    calls: list[str] = []
    for module_name, attr in PARSERS:
        module = importlib.import_module(module_name)
        original = getattr(module, attr)

        def spy(*args, _name=f"{module_name}.{attr}", _original=original, **kwargs):
            first = args[0] if args else None
            calls.append(f"{_name}({type(first).__name__}: {str(first)[:60]})")
            raise RuntimeError(f"{_name} called in the server process")

        monkeypatch.setattr(module, attr, spy)
    return calls


@pytest.fixture
def uploaded(fw_home, digits_mlp, digits_mlp_data):
    """An uploaded ONNX and NPZ as the session's current model and data, and a finished run made from the same
    upload (its inputs/ file and its variants' model files are run-derived), its compute profiles removed so the
    Cost page has to profile the artifacts."""
    import io

    import numpy as np

    from core.session import DATA_KEY, MODEL_KEY, DataChoice, ModelChoice
    from core.jobs.store import RunStore

    model_bytes = digits_mlp.onnx_bytes()
    buffer = io.BytesIO()
    np.savez(buffer, x=next(iter(digits_mlp_data.eval.x.values())), y=digits_mlp_data.eval.y)
    run_id = add_real_run(fw_home)
    store = RunStore(fw_home)
    run_dir = store.run_dir(run_id)
    (run_dir / "inputs").mkdir(exist_ok=True)
    (run_dir / "inputs" / "mlp.onnx").write_bytes(model_bytes)
    results = json.loads((run_dir / "results.json").read_text())
    results["model"] = "inputs/mlp.onnx"
    for variant in results["variants"]:
        variant["compute"] = {}
    (run_dir / "results.json").write_text(json.dumps(results))
    state = {MODEL_KEY: ModelChoice("inputs/mlp.onnx", "mlp.onnx", {}, filename="mlp.onnx", content=model_bytes,
                                    digest="feed"),
             DATA_KEY: DataChoice("inputs/data.npz", "data.npz", None, filename="data.npz",
                                  content=buffer.getvalue(), digest="beef")}
    return run_id, state


@pytest.mark.parametrize("page, sections", [
    ("pages/learn.py", ["Quantization", "Pruning", "Distillation", "Depthwise", "Size & speed"]),
    ("pages/cost.py", [None]), ("pages/compare.py", [None]), ("pages/model.py", [None]),
    ("pages/optimize.py", [None]), ("pages/insight.py", [None])])
def test_pages_parse_no_model_or_data_file_in_the_server(make_app, uploaded, parser_spy, page, sections):
    """With an uploaded model and data and a run made from them, each page renders its views with no parser
    called in this process; the Learn views and the Cost profiles come from workers."""
    run_id, state = uploaded
    at = make_app(**state).run()
    at.switch_page(page).run()
    for section in sections:
        if section is not None:
            at.session_state["learn_section"] = section
            at.run()
        assert not parser_spy, parser_spy
        assert not at.exception, [e.value for e in at.exception]
    assert not errors_of(at), errors_of(at)
    if page == "pages/learn.py":
        assert at.selectbox(key="learn_model").value == "upload:feed:beef"  # the upload, explained in a worker
        assert at.get("plotly_chart")
    if page == "pages/cost.py":
        frames = at.dataframe
        assert frames and any("fits" in " ".join(map(str, f.value.columns)) or len(f.value) for f in frames)
