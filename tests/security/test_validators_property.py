"""Property tests of the validators: any bytes give either a result or our own FeatherweightError, never another
exception (deterministic: derandomized, bounded example counts, no database)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import FeatherweightError

pytestmark = pytest.mark.timeout(300)

PROPERTY = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def prop(examples: int):
    """The shared settings with a bounded example count."""
    return settings(PROPERTY, max_examples=examples)


def _result_or_our_error(call):
    """Run `call`; a FeatherweightError is a fine answer, any other exception fails the property."""
    try:
        return call()
    except FeatherweightError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        return None


@st.composite
def mutated(draw, original: bytes):
    """The original bytes with a few edits: byte flips, a truncation, an insertion, a deletion, a splice."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at:at + len(chunk)] = chunk
    return bytes(data)


# ---- ONNX


@prop(150)
@given(data=st.binary(max_size=4096))
def test_validate_onnx_random_bytes(data):
    """Random bytes: a model or our error."""
    from core.io.safety import validate_onnx_bytes

    _result_or_our_error(lambda: validate_onnx_bytes(data))


@prop(200)
@given(data=st.data())
def test_validate_onnx_mutated_model(valid_files, data):
    """A valid model with random edits: a model or our error."""
    from core.io.safety import validate_onnx_bytes

    blob = data.draw(mutated(valid_files[".onnx"]))
    _result_or_our_error(lambda: validate_onnx_bytes(blob))


@prop(120)
@given(dims=st.lists(st.integers(-2, 2**40), max_size=4), data_type=st.integers(0, 30),
       external=st.booleans(), location=st.sampled_from(["w.bin", "../w.bin", "/etc/passwd", "a/../../b", ""]),
       op=st.sampled_from(["ConstantOfShape", "Expand", "Tile", "Range", "Reshape", "Identity"]),
       shape=st.lists(st.integers(-5, 2**33), min_size=1, max_size=4),
       raw=st.binary(max_size=64))
def test_validate_onnx_crafted_values(valid_files, dims, data_type, external, location, op, shape, raw):
    """Well-formed protobufs carrying hostile declared sizes, types, external data and shape arguments."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from core.io.safety import validate_onnx_bytes

    model = onnx.load_from_string(valid_files[".onnx"])
    weight = model.graph.initializer[0]
    weight.dims[:] = dims
    weight.data_type = data_type
    weight.raw_data = raw
    weight.ClearField("float_data")
    if external:
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", location
    model.graph.initializer.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), "s"))
    inputs = {"ConstantOfShape": ["s"], "Expand": ["x", "s"], "Tile": ["x", "s"], "Range": ["s", "s", "s"],
              "Reshape": ["x", "s"], "Identity": ["s"]}[op]
    model.graph.node.append(helper.make_node(op, inputs, ["z"]))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    _result_or_our_error(lambda: validate_onnx_bytes(model.SerializeToString()))


# ---- load_model_bytes, per suffix


@pytest.fixture(scope="module")
def small_torch_files():
    """Small torch-format files (a state dict that fits no sample, so valid ones fail fast, without an export)."""
    import torch
    from safetensors.torch import save as save_safetensors

    state = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "bias": torch.zeros(2)}
    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    return {".pt": zipped.getvalue(), ".pth": legacy.getvalue(), ".safetensors": save_safetensors(state)}


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_load_model_bytes_mutated_torch_files(small_torch_files, suffix):
    """Torch weights (zip and legacy) and safetensors with random edits: a model or our error."""
    from core.io.model import load_model_bytes

    @prop(60)
    @given(data=st.data())
    def check(data):
        blob = data.draw(mutated(small_torch_files[suffix]))
        _result_or_our_error(lambda: load_model_bytes(blob, f"m{suffix}"))

    check()


@pytest.mark.parametrize("suffix", [".onnx", ".pt", ".pth", ".safetensors", ".bin", ".exe", ""])
def test_load_model_bytes_random_bytes(suffix):
    """Random bytes under every suffix (accepted or not): a model or our error."""
    from core.io.model import load_model_bytes

    @prop(40)
    @given(blob=st.binary(max_size=2048))
    def check(blob):
        _result_or_our_error(lambda: load_model_bytes(blob, f"m{suffix}"))

    check()


# ---- load_data_bytes


@prop(120)
@given(data=st.data())
def test_load_data_bytes_npz(valid_files, tiny_model, data):
    """NPZ: random bytes or a valid archive with edits: a dataset or our error."""
    from core.io.data import load_data_bytes

    blob = data.draw(st.one_of(st.binary(max_size=1024), mutated(valid_files[".npz"])))
    _result_or_our_error(lambda: load_data_bytes(blob, "d.npz", tiny_model))


@prop(60)
@given(arrays=st.dictionaries(st.sampled_from(["x", "y", "x_train", "y_train", "x_eval", "y_eval", "other"]),
                              st.tuples(st.sampled_from(["<f4", "<f8", "<i8", "|b1", "<c8", "<U3", "<M8[s]", "|V4"]),
                                        st.lists(st.integers(0, 6), max_size=3)), max_size=4))
def test_load_data_bytes_npz_shapes_and_dtypes(tiny_model, arrays):
    """Well-formed NPZ archives with odd names, dtypes and shapes (0-d, empty, strings, dates): data or our error."""
    from core.io.data import load_data_bytes

    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.zeros(shape, dtype=dtype) for name, (dtype, shape) in arrays.items()})
    _result_or_our_error(lambda: load_data_bytes(buffer.getvalue(), "d.npz", tiny_model))


CSV_ALPHABET = st.sampled_from(list("0123456789.,-+eE\n\r \"'abcnaNIfinlLl\t;") + ["label", "nan", "inf", ","])


@prop(120)
@given(data=st.data())
def test_load_data_bytes_csv(valid_files, tiny_model, data):
    """CSV: random text, CSV-ish token soup, or a valid file with edits: a dataset or our error."""
    from core.io.data import load_data_bytes

    blob = data.draw(st.one_of(st.binary(max_size=512), st.lists(CSV_ALPHABET, max_size=200).map(
        lambda parts: "".join(parts).encode()), mutated(valid_files[".csv"])))
    _result_or_our_error(lambda: load_data_bytes(blob, "d.csv", tiny_model))
