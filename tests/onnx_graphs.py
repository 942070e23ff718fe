"""Small ONNX graphs built with onnx.helper for tests (no downloads): a Conv-only classifier, and one whose
weights are computed at run time from ConstantOfShape / Add, as some model-zoo exports do."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_only_classifier(channels: int = 8, classes: int = 4, seed: int = 0) -> bytes:
    """Input (N, 3, 16, 16) -> Conv -> Relu -> Conv 1x1 to `classes` -> GlobalAveragePool -> Flatten: logits."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (channels, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(channels, np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (classes, channels, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["logits"], name="flatten")]
    graph = helper.make_graph(nodes, "conv_only",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                              [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def runtime_weights_classifier(features: int = 64, hidden: int = 256, classes: int = 10) -> tuple[bytes, int]:
    """An MLP whose two weight matrices are built at run time: ConstantOfShape(shape) filled with a small value,
    plus a stored pattern of a single row (broadcast), so the file stores almost nothing yet the graph computes
    with features*hidden + hidden*classes weights.

    Returns:
        The model bytes and the number of weights it really computes with.
    """
    def runtime_weight(name: str, shape: tuple[int, int], fill: float, seed: int) -> tuple[list, list]:
        rng = np.random.default_rng(seed)
        row = numpy_helper.from_array(rng.normal(0, 0.1, (1, shape[1])).astype(np.float32), f"{name}_row")
        column = numpy_helper.from_array(rng.normal(0, 0.1, (shape[0], 1)).astype(np.float32), f"{name}_col")
        nodes = [
            helper.make_node("Constant", [], [f"{name}_shape"], name=f"{name}_shape",
                             value=numpy_helper.from_array(np.array(shape, np.int64))),
            helper.make_node("ConstantOfShape", [f"{name}_shape"], [f"{name}_fill"], name=f"{name}_fill",
                             value=numpy_helper.from_array(np.array([fill], np.float32))),
            helper.make_node("Add", [f"{name}_fill", f"{name}_row"], [f"{name}_rows"], name=f"{name}_add_row"),
            helper.make_node("Add", [f"{name}_rows", f"{name}_col"], [name], name=f"{name}_add_col"),
        ]
        return nodes, [row, column]

    n1, i1 = runtime_weight("w1", (features, hidden), 0.01, 1)
    n2, i2 = runtime_weight("w2", (hidden, classes), -0.01, 2)
    nodes = n1 + n2 + [helper.make_node("MatMul", ["input", "w1"], ["h"], name="fc1"),
                       helper.make_node("Relu", ["h"], ["hr"], name="relu"),
                       helper.make_node("MatMul", ["hr", "w2"], ["logits"], name="fc2")]
    graph = helper.make_graph(nodes, "runtime_weights",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], i1 + i2)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(), features * hidden + hidden * classes
