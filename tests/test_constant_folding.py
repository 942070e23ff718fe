"""Constant folding at load (issue 16): a graph that builds its weights at run time (ConstantOfShape / Add) is
folded when it is loaded, so the card counts its real weights, pruning finds them and int8 makes it smaller; the
fold changes no output and never widens stored weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from core.io.data import load_data
from core.io.model import load_model_bytes
from core.measure.card import model_card
from core.io.repair import fold_constants
from core.spec.recipe import PruneConfig, QuantizeConfig
from onnx_graphs import runtime_weights_classifier
from step_support import apply_to_copy


def _outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def runtime_weights():
    data, weights = runtime_weights_classifier()
    return data, weights, load_model_bytes(data, "zoo.onnx")


def test_card_counts_the_weights_built_at_run_time(runtime_weights):
    """The card counts the 18,944 weights the graph computes with (it counted the ~650 stored numbers), and the
    folded graph gives the same outputs."""
    data, weights, model = runtime_weights
    card = model_card(model)
    assert card["params"] == weights
    assert "ConstantOfShape" not in card["op_types"] and card["op_types"] == {"MatMul": 2, "Relu": 1}
    assert {layer["type"] for layer in card["layers"]} == {"MatMul"}
    assert any("folded at load" in note for note in model.notes)
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    np.testing.assert_allclose(_outputs(model.onnx_bytes(), x), _outputs(data, x), rtol=1e-6, atol=1e-6)


def test_static_int8_of_a_folded_graph_is_smaller(runtime_weights):
    """Static int8 writes a smaller file than the (folded) baseline, not one many times larger than the upload."""
    _, _, model = runtime_weights
    data = load_data(None, model)
    result, _ = apply_to_copy(QuantizeConfig(mode="static"), model, data, onnx_only=True)
    quantized = len(result.onnx_model.SerializeToString())
    assert quantized < 0.5 * len(model.onnx_bytes())


def test_unstructured_pruning_finds_the_folded_weights(runtime_weights):
    """Unstructured pruning on the ONNX graph reaches the weights (it found none when they were computed)."""
    _, weights, model = runtime_weights
    data = load_data(None, model)
    result, _ = apply_to_copy(PruneConfig(method="unstructured", amount=0.5, finetune_epochs=0), model, data,
                              onnx_only=True)
    zeros = sum(int((numpy_helper.to_array(t) == 0).sum()) for t in result.onnx_model.graph.initializer)
    assert zeros >= 0.45 * weights


def _fp16_weights_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3), np.float16), "w16")
    nodes = [helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("MatMul", ["input", "w"], ["out"], name="mm")]
    graph = helper.make_graph(nodes, "fp16", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _qdq_weights_model() -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.ones((4, 3), np.int8), "wq"),
             numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
             numpy_helper.from_array(np.array(0, np.int8), "zero")]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "scale", "zero"], ["w"], name="dq"),
             helper.make_node("MatMul", ["input", "w"], ["out"], name="mm")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("build", [_fp16_weights_model, _qdq_weights_model])
def test_fold_never_widens_stored_weights(build):
    """fp16 weights behind a Cast and int8 weights behind DequantizeLinear stay as stored: folding them would
    make the file 2-4x larger."""
    proto = build()
    before = proto.SerializeToString()
    assert fold_constants(proto) == 0
    assert proto.SerializeToString() == before
