"""Node mapping between a baseline and its variants: every variant node traced to the baseline node it came from."""

import onnx
import pytest

from core.analysis.graph_map import float_for_no_reason, map_graphs, node_names, weight_bytes
from core.io.data import synthetic_dataset
from core.io.model import Model
from core.spec.recipe import PruneConfig, QuantizeConfig
from core.techniques import Candidate, StepContext, apply_step
from tests.onnx_graphs import conv_only_classifier

FC1 = "/classifier/classifier.1/Gemm"
FC2 = "/classifier/classifier.3/Gemm"  # kept in float helps on validation (the exclusion step keeps it)


def _variant(model, data, config):
    candidate = Candidate(onnx_model=model.onnx_model, torch_module=model.torch_module,
                          architecture=model.architecture)
    return apply_step(config, candidate, StepContext(dataset=data, baseline=model)).onnx_model


@pytest.fixture(scope="module")
def wild():
    proto = onnx.load_from_string(conv_only_classifier())
    model = Model("wild.onnx", proto)
    return model, synthetic_dataset(model)


def test_static_int8_maps_qdq_pairs_and_fused_relus(digits_cnn, digits_cnn_data):
    """Static QDQ: every Q/DQ serves a baseline node, Relus are fused into their Conv, the last Gemm kept in float
    is fp32 (and the Relu before it, whose output it reads in float, stays a node of its own)."""
    variant = _variant(digits_cnn, digits_cnn_data, QuantizeConfig(mode="static", exclude=(FC2,)))
    mapping = map_graphs(digits_cnn.onnx_model, variant)
    assert not mapping.added and not mapping.removed
    assert set(mapping.base_of) == set(node_names(variant.graph))
    assert mapping.fused == {"/features/features.1/Relu": "/features/features.0/Conv",
                             "/features/features.3/Relu": "/features/features.2/Conv",
                             "/features/features.6/Relu": "/features/features.5/Conv"}
    assert mapping.base_of["features.0.weight_DequantizeLinear"] == "/features/features.0/Conv"
    assert mapping.how["features.0.weight_DequantizeLinear"] == "helper"
    assert mapping.precision["/features/features.0/Conv"] == "int8"
    assert mapping.precision[FC1] == "int8"
    assert mapping.precision[FC2] == "fp32"
    assert set(mapping.base_precision.values()) == {"fp32"}
    assert float_for_no_reason(mapping, variant, [{"technique": "quantize", "mode": "static",
                                                   "exclude": [FC2]}]) == {}
    # Without the exclude list the float Gemm would be a node that stayed in float for no reason.
    flagged = float_for_no_reason(mapping, variant, [{"technique": "quantize", "mode": "static"}])
    assert list(flagged) == [FC2]


def test_dynamic_int8_maps_matmulinteger_and_its_scales(digits_cnn, digits_cnn_data):
    """Dynamic int8: the Gemm's MatMulInteger, scale Muls, Cast and Add all map back to that Gemm; Conv stays fp32."""
    variant = _variant(digits_cnn, digits_cnn_data, QuantizeConfig(mode="dynamic"))
    mapping = map_graphs(digits_cnn.onnx_model, variant)
    parts = mapping.variants_of(FC1)
    assert {n.split("/")[-1] for n in parts} >= {"MatMulAddFusion_MatMul_quant", "MatMulAddFusion_Add"}
    integer = [n for n in parts if mapping.precision[n] == "int8" and "quant" in n and "mul" not in n]
    assert integer, parts
    assert mapping.precision["/features/features.0/Conv"] == "fp32"
    assert not mapping.added and not mapping.removed and not mapping.fused
    # Dynamic int8 keeps Conv in float by design (quantize_conv off): not flagged.
    assert float_for_no_reason(mapping, variant, [{"technique": "quantize", "mode": "dynamic"}]) == {}


def test_int4_maps_matmulnbits(digits_cnn, digits_cnn_data):
    """int4: each Gemm becomes MatMulNBits + Add, both mapped to it, the MatMulNBits marked int4."""
    variant = _variant(digits_cnn, digits_cnn_data, QuantizeConfig(mode="int4"))
    mapping = map_graphs(digits_cnn.onnx_model, variant)
    assert sorted(mapping.variants_of(FC1)) == [FC1 + "_Q4", FC1 + "_bias"]
    assert mapping.precision[FC1 + "_Q4"] == "int4"
    assert mapping.how[FC1 + "_Q4"] == "prefix"
    size = weight_bytes(variant)
    assert size[FC1 + "_Q4"] < weight_bytes(digits_cnn.onnx_model)[FC1] / 4


def test_fp16_maps_casts_and_marks_fp16(digits_cnn, digits_cnn_data):
    """fp16: every node keeps its name and computes in fp16; the input / output Casts serve their neighbours."""
    variant = _variant(digits_cnn, digits_cnn_data, QuantizeConfig(mode="fp16"))
    mapping = map_graphs(digits_cnn.onnx_model, variant)
    casts = [n.name for n in variant.graph.node if n.op_type == "Cast"]
    assert casts and all(mapping.how[c] == "helper" for c in casts)
    assert all(mapping.precision[n] == "fp16" for n in node_names(digits_cnn.onnx_model.graph))
    assert sum(weight_bytes(variant).values()) * 2 == pytest.approx(sum(weight_bytes(digits_cnn.onnx_model).values()),
                                                                     rel=0.01)


def test_pruned_export_maps_by_name_and_renamed_convs_by_structure(digits_cnn, digits_cnn_data):
    """A structurally pruned re-export maps name for name; renamed, by its weights and by structure (op order)."""
    from core.pipeline.build import export_candidate

    model = digits_cnn.copy()
    candidate = Candidate(onnx_model=model.onnx_model, torch_module=model.torch_module,
                          architecture=model.architecture)
    pruned = apply_step(PruneConfig(method="structured", amount=0.5, finetune_epochs=0), candidate,
                        StepContext(dataset=digits_cnn_data, baseline=model))
    variant = export_candidate(pruned, digits_cnn, digits_cnn_data).onnx_model
    mapping = map_graphs(digits_cnn.onnx_model, variant)
    assert set(mapping.how.values()) == {"name"}
    assert weight_bytes(variant)["/features/features.2/Conv"] < weight_bytes(digits_cnn.onnx_model)[
        "/features/features.2/Conv"] / 3
    for index, node in enumerate(variant.graph.node):
        node.name = f"n{index}"
    renamed = map_graphs(digits_cnn.onnx_model, variant)
    # Convs and Gemms are found by the weights they read, the Relus and pools in between by structure.
    assert renamed.how["n0"] == "weight" and renamed.how["n1"] == "structure"
    assert not renamed.added and not renamed.removed
    assert renamed.base_of["n0"] == "/features/features.0/Conv" and renamed.base_of["n11"] == \
        "/classifier/classifier.3/Gemm"


def test_wild_onnx_static_int8_and_an_added_node(wild):
    """A hand-built ONNX file: static int8 maps every node; a node the variant adds on its own is 'added', and a
    node it drops (with the quantizers that served it) is 'removed', nothing else."""
    model, data = wild
    variant = _variant(model, data, QuantizeConfig(mode="static"))
    mapping = map_graphs(model.onnx_model, variant)
    assert mapping.precision["conv1"] == "int8" and mapping.precision["conv2"] == "int8"
    assert mapping.added == () and mapping.removed == () and mapping.fused == {"relu1": "conv1"}
    extra = onnx.helper.make_node("Identity", ["logits"], ["logits_copy"], name="extra_identity")
    variant.graph.node.append(extra)
    for name in ("flatten", "logits_QuantizeLinear", "logits_DequantizeLinear"):
        variant.graph.node.remove(next(n for n in variant.graph.node if n.name == name))
    mapping = map_graphs(model.onnx_model, variant)
    assert mapping.added == ("extra_identity",) and mapping.how["extra_identity"] == "added"
    assert mapping.removed == ("flatten",) and mapping.fused == {"relu1": "conv1"}
    assert "extra_identity" not in mapping.base_of


def test_unnamed_nodes_get_positional_names(wild):
    """Nodes without names are named <node_i> (as Model Explorer's adapter does) and still map."""
    model, _ = wild
    proto = onnx.load_from_string(model.onnx_model.SerializeToString())
    for node in proto.graph.node:
        node.name = ""
    mapping = map_graphs(model.onnx_model, proto)
    assert mapping.base_of["<node_0>"] == "conv1" and mapping.base_of["<node_4>"] == "flatten"


def _wild_mlp() -> Model:
    """A hand-built MLP as a wild exporter leaves it: MatMul + Add with stored weights, and no node names."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, shape).astype(np.float32), name)
             for name, shape in (("w1", (64, 128)), ("b1", (128,)), ("w2", (128, 10)))]
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["hr"]), helper.make_node("MatMul", ["hr", "w2"], ["logits"])]
    graph = helper.make_graph(nodes, "wild_mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    return Model("wild_mlp.onnx", model)


@pytest.mark.parametrize("mode, precision", [("dynamic", "int8"), ("int4", "int4"), ("fp16", "fp16"),
                                             ("static", "int8")])
def test_wild_unnamed_mlp_maps_in_every_mode(mode, precision):
    """The anonymous MatMuls of a wild MLP are traced through each quantize mode and get the mode's precision."""
    model = _wild_mlp()
    variant = _variant(model, synthetic_dataset(model), QuantizeConfig(mode=mode, block_size=32))
    mapping = map_graphs(model.onnx_model, variant)
    assert not mapping.added and not mapping.removed, (mapping.added, mapping.removed)
    assert set(mapping.base_of) == set(node_names(variant.graph))
    first = mapping.variants_of("<node_0>")
    assert first and any(mapping.precision[v] == precision for v in first), (first, mapping.precision)
    assert mapping.variants_of("<node_3>")
