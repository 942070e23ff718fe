"""Views without values (issue 25, finding 5): a graph view (a shareable capability link) names tensors, shapes
and attributes but carries no tensor value of any size, small initializers and quantization scales included."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(240)

RECIPE = """
model: sample:digits-mlp
data: sample:digits
seed: 0
benchmark: {batch_sizes: [1], threads: 1, warmup: 1, runs: 3, max_seconds: 0.5}
variants:
  - name: int8-static
    steps: [{technique: quantize, mode: static, samples: 32}]
"""

# What Model Explorer's metadata items may say about a tensor: its name, type and shape, the operator's parameter
# name, whether it is unused, and the model's own metadata properties.
METADATA_KEYS = {"__tensor_tag", "tensor_shape", "param_name", "unused"}


def _tensor_values(path) -> list[tuple[str, np.ndarray]]:
    """Every initializer and every Constant's tensor of an ONNX file, with its name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    found = [(t.name, numpy_helper.to_array(t)) for t in model.graph.initializer]
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                found.append((f"{node.name}.{attr.name}", numpy_helper.to_array(attr.t)))
    return found


def _spellings(value) -> set[str]:
    """How a float can appear in text: numpy's shortest repr (what an array's repr prints) and JSON's double."""
    value = np.float32(value)
    return {str(value), json.dumps(float(value))}


def _walk(node, path=""):
    """(path, key, value) of every mapping entry and list item of a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield path, i, value
            yield from _walk(value, f"{path}/{i}")


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    from core.jobs.graph import build_graph_view
    from core.pipeline.run import run_recipe
    from core.spec.recipe import Recipe

    run_dir = tmp_path_factory.mktemp("run")
    run_recipe(Recipe.from_text(RECIPE), run_dir)
    out = tmp_path_factory.mktemp("view")
    build_graph_view(run_dir, "int8-static", out, runs=2)
    return run_dir, out


def test_a_whole_json_scan_of_the_view_finds_no_tensor_value(view):
    """Every file of the view, walked whole: no ``__value`` or ``value`` attribute, no array repr, metadata items
    only say names, types and shapes, and none of the two models' initializer or Constant values (digits-mlp's
    10-element last bias and the int8 variant's scales included) appears in any spelling (before: the bias and the
    scales were in ``outputsMetadata``)."""
    run_dir, out = view
    documents = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    assert any(name.startswith("graph_") for name in documents)
    text = "\n".join(p.read_text() for p in sorted(out.glob("*.json")))
    problems = []
    for name, document in documents.items():
        for path, key, value in _walk(document):
            if isinstance(value, dict) and value.get("key") in ("__value", "value"):
                problems.append(f"{name}{path}: attribute {value['key']!r}")
            if isinstance(value, str) and "array(" in value:
                problems.append(f"{name}{path}/{key}: {value[:80]}")
            if key in ("inputsMetadata", "outputsMetadata"):
                for item in value:
                    for attr in item.get("attrs", []):
                        if attr["key"] not in METADATA_KEYS and not attr["key"].startswith("[metadata] "):
                            problems.append(f"{name}{path}: metadata {attr['key']!r}")
    values = 0
    for artifact in ("variants/baseline/model.onnx", "variants/int8-static/model.onnx"):
        for tensor, array in _tensor_values(run_dir / artifact):
            for number in array.astype(np.float64).ravel()[:4096]:
                if not np.isfinite(number) or abs(number) < 1e-3 or float(number).is_integer():
                    continue
                spellings = {s for s in _spellings(number) if len(s.strip("-0.")) >= 5}
                values += 1
                if any(s in text for s in spellings):
                    problems.append(f"{tensor}: {number!r}")
                    break
    assert values > 1000  # the scan looked at the weights, biases and scales
    assert not problems, problems[:10]
