"""Model loading, validation, export, opset upgrades and the model card."""

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from core.errors import BadInputError, UnsupportedModelError
from core.io.runtime import make_session
from core.io.safety import LoadLimits, validate_onnx_bytes
from core.io.model import ensure_opset, export_onnx, load_model, load_model_bytes
from core.measure.card import model_card
from core.io.graph import onnx_opset


def _tiny_onnx(opset=17, batch="batch"):
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_sample_loads_with_torch_module_and_matching_onnx(digits_cnn):
    """A sample comes with its torch module, and the exported ONNX computes the same logits."""
    assert digits_cnn.torch_module is not None and digits_cnn.architecture == "digits-cnn"
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = digits_cnn.torch_module(torch.from_numpy(x)).numpy()
    got = make_session(digits_cnn.onnx_bytes()).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_export_has_a_dynamic_batch_axis(digits_mlp):
    """The exported graph accepts any batch size."""
    assert digits_mlp.inputs[0].shape[0] == "batch"
    session = make_session(digits_mlp.onnx_bytes())
    for batch in (1, 7, 300):
        out = session.run(None, {"input": np.zeros((batch, 1, 8, 8), np.float32)})[0]
        assert out.shape == (batch, 10)


def test_model_card_facts(digits_cnn):
    """The card reports params, size, io, op counts and a per-layer table that adds up."""
    card = model_card(digits_cnn)
    assert card["params"] == sum(p.numel() for p in digits_cnn.torch_module.parameters())
    assert card["size_bytes"] == len(digits_cnn.onnx_bytes())
    assert card["inputs"] == [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert card["op_types"]["Conv"] == 3 and card["task"] == "classification"
    assert sum(row["params"] for row in card["layers"]) == card["params"]
    assert abs(sum(row["share"] for row in card["layers"]) - 1.0) < 1e-6
    assert card["opset"] == 17


def test_onnx_file_loads_from_path(tmp_path):
    """A valid ONNX file on disk loads as an ONNX-only model."""
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny_onnx(), path)
    model = load_model(str(path))
    assert model.torch_module is None and [s.name for s in model.inputs] == ["x"]
    assert model_card(model)["format"] == "onnx"


def test_old_opset_is_upgraded():
    """An opset-9 graph is converted up to what quantization needs."""
    proto = _tiny_onnx(opset=9)
    upgraded = ensure_opset(proto, 13)
    assert onnx_opset(upgraded) == 13
    assert ensure_opset(upgraded, 13) is upgraded


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"hello world, not a model", "not an ONNX model"),
    (bytes(range(256)) * 10, "not an ONNX model"),
])
def test_garbage_onnx_is_refused_with_one_line(data, words):
    """Bytes that are not a model give one clear line."""
    with pytest.raises(BadInputError) as info:
        validate_onnx_bytes(data)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_external_data_is_refused():
    """A tensor pointing outside the file is refused without reading that path."""
    proto = _tiny_onnx()
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    with pytest.raises(BadInputError, match="outside the file"):
        validate_onnx_bytes(proto.SerializeToString())


def test_oversized_file_and_huge_dims_are_refused():
    """Caps on the file size and on declared tensor sizes hold before allocation."""
    data = _tiny_onnx().SerializeToString()
    with pytest.raises(BadInputError, match="limit"):
        validate_onnx_bytes(data, LoadLimits(max_file_bytes=10))
    proto = _tiny_onnx()
    proto.graph.initializer[0].dims[:] = [2**20, 2**20]
    with pytest.raises(BadInputError, match="elements"):
        validate_onnx_bytes(proto.SerializeToString())


def test_unknown_sample_and_extension():
    """Unknown samples and file types name what is available."""
    with pytest.raises(BadInputError, match="digits-cnn"):
        load_model("sample:nope")
    with pytest.raises(BadInputError, match=".onnx"):
        load_model_bytes(b"abc", "model.h5")


def test_state_dict_of_a_sample_architecture_loads(digits_mlp):
    """A .pt state dict of a bundled architecture loads (weights_only) and is exported."""
    buffer = io.BytesIO()
    torch.save(digits_mlp.torch_module.state_dict(), buffer)
    model = load_model_bytes(buffer.getvalue(), "mine.pt")
    assert model.architecture == "digits-mlp" and model.torch_module is not None


def test_pickled_module_is_refused(digits_mlp):
    """A whole pickled module is code and is refused, with a hint how to export."""
    buffer = io.BytesIO()
    torch.save(digits_mlp.torch_module, buffer)
    with pytest.raises(BadInputError, match="state_dict|ONNX"):
        load_model_bytes(buffer.getvalue(), "whole.pt")


def test_export_failure_is_an_unsupported_model_error():
    """A module the exporter cannot handle gives UnsupportedModelError, not a traceback."""

    class Weird(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x @ x.T).real

    with pytest.raises(UnsupportedModelError, match="export failed"):
        export_onnx(Weird(), torch.zeros(1, 3))


@pytest.mark.slow
def test_the_export_command_in_the_hint_writes_one_file_we_accept(tmp_path, monkeypatch):
    """The command the pickle refusal suggests, run with torch 2.13, writes model.onnx alone (no model.onnx.data,
    which would be refused as external data), and that file loads (the old hint led to a second refusal)."""
    from core.io.safety import EXPORT_COMMAND, EXPORT_HINT

    class MyCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    assert EXPORT_COMMAND in EXPORT_HINT and "external_data=False" in EXPORT_COMMAND
    monkeypatch.chdir(tmp_path)
    model, example_input = MyCNN().eval(), torch.zeros(1, 3, 12, 12)
    eval(EXPORT_COMMAND, {"torch": torch, "model": model, "example_input": example_input})  # noqa: S307 - ours
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    loaded = load_model_bytes((tmp_path / "model.onnx").read_bytes(), "model.onnx")
    weights = sum(p.numel() for p in model.parameters())
    assert weights <= model_card(loaded)["params"] <= weights + 8  # + the exporter's small constants (axes)
