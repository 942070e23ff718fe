"""Quantization through onnxruntime: each mode shrinks the model and stays close to fp32."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from core.errors import UnsupportedModelError
from core.measure import logical_params, make_session, run_batched
from core.models import Model
from core.recipe import QuantizeConfig
from core.techniques import Candidate, StepContext, apply_step
from core.techniques.quantize import gemm_to_matmul


def _quantize(model, data, **options):
    candidate = Candidate(onnx_model=model.onnx_model, architecture=model.architecture)
    return apply_step(QuantizeConfig(**options), candidate, StepContext(dataset=data, baseline=model))


def _agreement(a, b, data):
    x = data.eval.x
    out_a = run_batched(make_session(a.SerializeToString()), x)[0]
    out_b = run_batched(make_session(b.SerializeToString()), x)[0]
    return float((out_a.argmax(1) == out_b.argmax(1)).mean()), out_a, out_b


def test_static_int8_shrinks_the_cnn_and_keeps_accuracy(digits_cnn, digits_cnn_data):
    """Static QDQ int8 is >3x smaller, quantizes every Conv, and agrees with fp32 on >= 99% of samples."""
    result = _quantize(digits_cnn, digits_cnn_data, mode="static")
    ops = [n.op_type for n in result.onnx_model.graph.node]
    assert ops.count("DequantizeLinear") >= 5 and "Conv" in ops
    size_ratio = digits_cnn.onnx_model.ByteSize() / result.onnx_model.ByteSize()
    assert size_ratio > 3.3
    agreement, *_ = _agreement(digits_cnn.onnx_model, result.onnx_model, digits_cnn_data)
    assert agreement >= 0.99
    assert logical_params(result.onnx_model) == logical_params(digits_cnn.onnx_model)
    assert result.info["calibration_samples"] == 128


@pytest.mark.parametrize("calibration", ["entropy", "percentile"])
def test_other_calibrations_work(digits_mlp, digits_mlp_data, calibration):
    """Entropy and percentile calibration produce a close int8 model."""
    result = _quantize(digits_mlp, digits_mlp_data, mode="static", calibration=calibration, samples=64)
    agreement, *_ = _agreement(digits_mlp.onnx_model, result.onnx_model, digits_mlp_data)
    assert agreement >= 0.95


def test_dynamic_int8_quantizes_linear_layers_and_flags_conv(digits_cnn, digits_cnn_data):
    """Dynamic mode quantizes the Linear (Gemm) layers as MatMulInteger, leaves Conv in float and says why."""
    result = _quantize(digits_cnn, digits_cnn_data, mode="dynamic")
    ops = {n.op_type for n in result.onnx_model.graph.node}
    assert "MatMulInteger" in ops and "ConvInteger" not in ops and "Conv" in ops
    assert any("ConvInteger" in note for note in result.notes)
    conv = _quantize(digits_cnn, digits_cnn_data, mode="dynamic", quantize_conv=True)
    assert "ConvInteger" in {n.op_type for n in conv.onnx_model.graph.node}
    assert any("slower" in note for note in conv.notes)


def test_fp16_halves_size_and_keeps_float32_io(digits_mlp, digits_mlp_data):
    """fp16 halves the weights, keeps float32 inputs, and stays within fp16 rounding."""
    result = _quantize(digits_mlp, digits_mlp_data, mode="fp16")
    ratio = digits_mlp.onnx_model.ByteSize() / result.onnx_model.ByteSize()
    assert 1.8 < ratio < 2.1
    assert result.onnx_model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    _, a, b = _agreement(digits_mlp.onnx_model, result.onnx_model, digits_mlp_data)
    assert np.max(np.abs(a - b)) < 0.05


def test_int4_packs_matmul_weights(digits_mlp, digits_mlp_data):
    """int4 turns the MLP's Linear layers into MatMulNBits and shrinks it >4x."""
    result = _quantize(digits_mlp, digits_mlp_data, mode="int4")
    assert sum(n.op_type == "MatMulNBits" for n in result.onnx_model.graph.node) >= 2
    assert digits_mlp.onnx_model.ByteSize() / result.onnx_model.ByteSize() > 4
    agreement, *_ = _agreement(digits_mlp.onnx_model, result.onnx_model, digits_mlp_data)
    assert agreement >= 0.9


def test_int4_without_matmul_says_so(digits_mlp_data):
    """A Conv-only model gets a clear message for int4."""
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["y"], name="c")], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 6, 6])], [w])
    model = Model("conv.onnx", helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(UnsupportedModelError, match="MatMul"):
        _quantize(model, digits_mlp_data, mode="int4")


def test_exclude_keeps_nodes_in_float(digits_cnn, digits_cnn_data):
    """Excluded nodes get no quantize/dequantize around their weights."""
    first_conv = next(n.name for n in digits_cnn.onnx_model.graph.node if n.op_type == "Conv")
    result = _quantize(digits_cnn, digits_cnn_data, mode="static", exclude=[first_conv])
    conv = next(n for n in result.onnx_model.graph.node if n.name == first_conv)
    producers = {o: n.op_type for n in result.onnx_model.graph.node for o in n.output}
    assert producers.get(conv.input[1]) != "DequantizeLinear"
    assert result.info["excluded_nodes"] == [first_conv]


def test_gemm_to_matmul_is_exact(digits_mlp, digits_mlp_data):
    """Rewriting Gemm as MatMul + Add computes the same outputs."""
    rewritten = gemm_to_matmul(onnx.ModelProto.FromString(digits_mlp.onnx_bytes()))
    assert not any(n.op_type == "Gemm" for n in rewritten.graph.node)
    _, a, b = _agreement(digits_mlp.onnx_model, rewritten, digits_mlp_data)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_excluded_node_really_runs_in_float(digits_cnn, digits_cnn_data):
    """An excluded Conv reads the float tensor, so onnxruntime cannot fuse it back into an int8 kernel."""
    import json
    import tempfile

    import onnxruntime as ort

    names = [n.name for n in digits_cnn.onnx_model.graph.node if n.op_type == "Conv"]
    result = _quantize(digits_cnn, digits_cnn_data, mode="static", exclude=[names[1]])
    assert result.info["float_inputs_restored"] >= 1
    producers = {o: n.op_type for n in result.onnx_model.graph.node for o in n.output}
    conv = next(n for n in result.onnx_model.graph.node if n.name == names[1])
    assert producers.get(conv.input[0]) != "DequantizeLinear"
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = f"{tmp}/p"
        session = ort.InferenceSession(result.onnx_model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        session.run(None, {"input": digits_cnn_data.eval.first[:4]})
        events = json.load(open(session.end_profiling()))
    kernels = {e["args"]["op_name"] for e in events if e.get("cat") == "Node"}
    assert "Conv" in kernels or "FusedConv" in kernels  # the excluded layer ran as a float kernel
    assert "QLinearConv" in kernels  # the others stayed int8
