"""ONNX files from the wild: old opsets and IR versions, fixed batch axes, several and integer inputs,
non-logit outputs, graphs whose symbolic shape inference fails, and no data at all."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from core.io.data import load_data, synthetic_inputs
from core.errors import BadInputError
from core.io.runtime import make_session, run_batched
from core.measure.quality import retrieval_accuracy
from core.io.graph import Model, graph_inputs, onnx_opset, task_of
from core.io.model import ensure_opset, load_model_bytes
from core.measure.card import model_card
from core.io.graph import fixed_batch_size
from core.io.repair import make_batch_symbolic
from core.pipeline.run import run
from core.spec.recipe import BenchmarkConfig, QuantizeConfig, Recipe, Variant

TINY_BENCH = BenchmarkConfig(batch_sizes=(1,), warmup=0, runs=3)
RNG = np.random.default_rng(0)


def _weight(name, *shape):
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.3).astype(np.float32), name)


def _old_classifier(opset=9, ir=3, reshape_to=(1, 16)):
    """An old-exporter MLP: opset 9, IR 3 (every weight also listed as a graph input), batch fixed at 1 and a
    Reshape to a constant shape that spells the batch out."""
    inits = [_weight("w1", 16, 32), _weight("b1", 32), _weight("w2", 10, 32), _weight("b2", 10),
             numpy_helper.from_array(np.array(reshape_to, np.int64), "flat_shape")]
    nodes = [helper.make_node("Reshape", ["x", "flat_shape"], ["xf"], name="flatten"),
             helper.make_node("Gemm", ["xf", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"], name="fc2", transB=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])]
    inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
    graph = helper.make_graph(nodes, "old", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="oldtool",
                              producer_version="0.9")
    model.ir_version = ir
    return model


def _text_encoder(two_outputs=False):
    """Two int64 inputs (token ids and mask, symbolic batch and sequence), an embedding table reached through a
    Cast, and a mean-pooled embedding output; optionally a second, per-token feature output."""
    inits = [_weight("table", 50, 8), _weight("proj", 8, 6),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32, name="cast_ids"),
             helper.make_node("Gather", ["table", "ids32"], ["tokens"], name="embed"),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT, name="cast_mask"),
             helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"], name="unsqueeze"),
             helper.make_node("Mul", ["tokens", "mask3"], ["masked"], name="apply_mask"),
             helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0, name="sum"),
             helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0, name="count"),
             helper.make_node("Div", ["summed", "count"], ["pooled"], name="mean"),
             helper.make_node("MatMul", ["pooled", "proj"], ["sentence_embedding"], name="project")]
    outputs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", 6])]
    if two_outputs:
        outputs.append(helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "sequence", 8]))
    graph = helper.make_graph(nodes, "encoder",
                              [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
                               for n in ("input_ids", "attention_mask")], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _unmergeable_symbols():
    """Two float inputs whose symbolic axes ('n' and 'm') meet in an Add: onnxruntime's symbolic shape inference
    refuses to merge them, so quantization's pre-processing must fall back."""
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"], name="add"),
             helper.make_node("MatMul", ["ab", "w"], ["features"], name="mm"),
             helper.make_node("Relu", ["features"], ["feature_map"], name="relu")]
    graph = helper.make_graph(nodes, "symbols",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", "n", 8]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", "m", 8])],
                              [helper.make_tensor_value_info("feature_map", TensorProto.FLOAT, ["batch", "n", 16])],
                              [_weight("w", 8, 16)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _load(proto, name="wild.onnx"):
    return load_model_bytes(proto.SerializeToString(), name)


def _run(model, tmp_path, *modes, data=None, bench=TINY_BENCH):
    dataset = load_data(data, model, sequence_length=12)
    variants = tuple(Variant(mode, (QuantizeConfig(mode=mode, samples=32),)) for mode in modes)
    return run(model, dataset, Recipe(benchmark=bench, variants=variants), tmp_path)


@pytest.mark.parametrize("opset", [7, 9])
def test_old_opsets_and_ir3_are_upgraded_and_run(opset):
    """Opset 7/9 at IR 3 converts to opset 13 with a matching IR version and computes the same logits."""
    old = _old_classifier(opset=opset)
    new = ensure_opset(old)
    assert onnx_opset(new) == 13 and new.ir_version >= 7
    assert [s.name for s in graph_inputs(new)] == ["x"]
    x = RNG.random((1, 4, 4), dtype=np.float32)
    np.testing.assert_allclose(make_session(new.SerializeToString()).run(None, {"x": x})[0],
                               make_session(old.SerializeToString()).run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_fixed_batch_opset9_model_quantizes_and_is_timed_at_other_batch_sizes(tmp_path):
    """An opset-9, IR-3, batch-1 model: the pipeline frees the batch axis (rewriting the constant Reshape), then
    dynamic and static int8 both work, and batch 4 is timed."""
    model = _load(_old_classifier())
    assert fixed_batch_size(model.onnx_model) == 1
    bench = BenchmarkConfig(batch_sizes=(1, 4), warmup=0, runs=3)
    result = _run(model, tmp_path, "dynamic", "static", bench=bench)
    base, dynamic, static = result.variants
    assert [v.status for v in result.variants] == ["ok", "ok", "ok"], [v.error for v in result.variants]
    assert any("made it symbolic" in note for note in base.notes)
    assert set(base.latency_ms) == {"1", "4"} and set(static.latency_ms) == {"1", "4"}
    assert dynamic.agreement >= 0.85 and static.agreement >= 0.85
    assert dynamic.info["quantized_nodes"] and static.info["quantized_nodes"]
    artifact = onnx.load(str(tmp_path / static.artifact))
    assert [s.name for s in graph_inputs(artifact)] == ["x"]  # the weights listed as inputs are gone
    assert graph_inputs(artifact)[0].shape[0] == "batch"


def test_batch_that_cannot_be_freed_stays_fixed_and_says_so(tmp_path):
    """A graph that flattens the batch into one row cannot take other batch sizes: only batch 1 is timed, the
    note says why, and evaluation still runs sample by sample."""
    proto = _old_classifier(opset=13, ir=7, reshape_to=(1, -1))
    assert make_batch_symbolic(proto) is None
    model = _load(proto)
    result = _run(model, tmp_path, "dynamic", bench=BenchmarkConfig(batch_sizes=(1, 8), warmup=0, runs=3))
    base, dynamic = result.variants
    assert dynamic.status == "ok", dynamic.error
    assert set(base.latency_ms) == {"1"} and set(dynamic.latency_ms) == {"1"}
    assert any("fixes its batch axis at 1" in note for note in base.notes)
    assert any("batch axis is fixed at 1" in note for note in dynamic.notes)


def test_make_batch_symbolic_checks_outputs_row_by_row():
    """A freed graph gives, for a batch of two, exactly the outputs of two single runs."""
    proto = ensure_opset(_old_classifier())
    freed = make_batch_symbolic(proto)
    assert freed is not None and fixed_batch_size(freed) is None
    x = RNG.random((2, 4, 4), dtype=np.float32)
    together = make_session(freed.SerializeToString()).run(None, {"x": x})[0]
    single = make_session(proto.SerializeToString())
    apart = np.concatenate([single.run(None, {"x": x[i:i + 1]})[0] for i in range(2)])
    np.testing.assert_allclose(together, apart, rtol=1e-5, atol=1e-6)
    assert make_batch_symbolic(_text_encoder()) is None  # already symbolic: nothing to do


def test_int64_inputs_and_embedding_output_without_data(tmp_path):
    """Token ids and a mask, no data: synthetic ids stay inside the vocabulary (found through a Cast), the task is
    'embedding', and dynamic int8 is measured by cosine."""
    model = _load(_text_encoder())
    assert task_of(model) == "embedding"
    feed = synthetic_inputs(model, 64, sequence_length=12)
    assert feed["input_ids"].dtype == np.int64 and feed["input_ids"].shape == (64, 12)
    assert 0 <= feed["input_ids"].min() and feed["input_ids"].max() < 50 and len(np.unique(feed["input_ids"])) > 40
    assert (feed["attention_mask"] == 1).all()
    result = _run(model, tmp_path, "dynamic", "static")
    base, dynamic, static = result.variants
    assert result.dataset["synthetic"] and base.cosine_mean == 1.0 and base.agreement is None
    for variant in (dynamic, static):
        assert variant.status == "ok", variant.error
        assert variant.cosine_mean >= 0.98 and variant.accuracy is None


def test_several_outputs_get_cosine_and_relative_error_each(tmp_path):
    """A model with an embedding and a per-token feature map: fidelity is reported per output."""
    model = _load(_text_encoder(two_outputs=True))
    assert task_of(model) == "other"
    result = _run(model, tmp_path, "dynamic")
    dynamic = result.variants[1]
    assert dynamic.status == "ok", dynamic.error
    per_output = {row["name"]: row for row in dynamic.info["per_output"]}
    assert set(per_output) == {"sentence_embedding", "tokens"}
    for row in per_output.values():
        assert row["cosine_mean"] >= 0.98 and 0 <= row["relative_error"] < 0.1


def test_quantization_survives_failing_symbolic_shape_inference(tmp_path):
    """Pre-processing falls back to skipping symbolic shape inference, and both int8 modes still succeed."""
    model = _load(_unmergeable_symbols())
    result = _run(model, tmp_path, "dynamic", "static")
    for variant in result.variants[1:]:
        assert variant.status == "ok", variant.error
        assert variant.info["preprocess"] == "skip_symbolic_shape"
        assert variant.info["quantized_nodes"] and variant.cosine_mean >= 0.98


def test_synthetic_inputs_respect_dtype_and_range():
    """Images in [0, 1), bytes within uint8, boolean and float masks all ones; string inputs are refused."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [f"{n}_out"]) for n in ("image", "pixels", "key_mask", "flags")], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "h", "w"]),
         helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 4]),
         helper.make_tensor_value_info("key_mask", TensorProto.FLOAT, ["batch", "sequence"]),
         helper.make_tensor_value_info("flags", TensorProto.BOOL, ["batch", 2])],
        [helper.make_tensor_value_info(f"{n}_out", t, None) for n, t in
         (("image", TensorProto.FLOAT), ("pixels", TensorProto.UINT8), ("key_mask", TensorProto.FLOAT),
          ("flags", TensorProto.BOOL))])
    model = Model("m.onnx", helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    feed = synthetic_inputs(model, 5, sequence_length=7)
    assert feed["image"].shape == (5, 3, 7, 7) and 0 <= feed["image"].min() and feed["image"].max() < 1
    assert feed["pixels"].dtype == np.uint8 and feed["pixels"].max() > 100
    assert (feed["key_mask"] == 1).all() and feed["flags"].all()
    strings = helper.make_graph([helper.make_node("Identity", ["text"], ["out"])], "s",
                                [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
                                [helper.make_tensor_value_info("out", TensorProto.STRING, ["batch"])])
    with pytest.raises(BadInputError, match="'text'.*upload data"):
        synthetic_inputs(Model("s.onnx", helper.make_model(strings)), 2)


def test_model_card_of_an_old_fixed_batch_model():
    """The card shows opset, IR version, producer, shapes, and says the graph will be upgraded and the batch
    freed where possible."""
    card = model_card(_load(_old_classifier(), "old.onnx"))
    assert card["opset"] == 9 and card["ir_version"] == 3 and card["producer"] == "oldtool 0.9"
    assert card["inputs"] == [{"name": "x", "shape": [1, 4, 4], "dtype": "float32"}]
    assert card["outputs"] == [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]
    caps = card["capabilities"]
    assert "upgraded from opset 9 to 13" in caps["quantize"]
    assert caps["batch sizes"].startswith("the batch axis is fixed at 1")
    assert "floats in [0, 1)" in caps["synthetic data"]
    text = model_card(_load(_text_encoder(two_outputs=True)))["capabilities"]
    assert "token ids below the vocabulary size 50" in text["synthetic data"]
    assert "per output" in text["fidelity"] and text["batch sizes"].startswith("yes")


def test_retrieval_accuracy_counts_both_directions():
    """Each pair is asked both ways; a pair whose partner is closer to a third sentence counts as a miss."""
    embeddings = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.2, 1], [0, 0.9, 0.1]], dtype=np.float32)
    assert retrieval_accuracy(embeddings, np.array([[0, 1]])) == 1.0
    # 2 -> 4 is right, 4 -> 2 is right; 3 -> 4 is wrong (its partner 0 is far), 0 -> 3 is wrong (1 is nearer)
    assert retrieval_accuracy(embeddings, np.array([[2, 4], [0, 3]])) == 0.5


def test_eval_in_fixed_batches_pads_the_last_one():
    """run_batched feeds a batch-1 graph one row at a time and a batch-4 graph in padded fours."""
    proto = _old_classifier(opset=13, ir=7, reshape_to=(4, -1))
    for value in list(proto.graph.input[:1]) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    x = RNG.random((10, 4, 4), dtype=np.float32)
    out = run_batched(make_session(proto.SerializeToString()), {"x": x})[0]
    assert out.shape == (10, 10)
    again = run_batched(make_session(proto.SerializeToString()), {"x": x[:4]})[0]
    np.testing.assert_allclose(out[:4], again, rtol=1e-5, atol=1e-6)
