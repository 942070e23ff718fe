"""Models: safe loading per format, ONNX export of torch modules, opset upgrades, and the model card.

Loading policy (see SECURITY.md): an ONNX file is parsed as data and checked against size caps before any
tensor is materialised; tensors stored outside the file are refused. Torch weights are read only as plain
tensors into a bundled sample architecture: a .pt / .pth pickle is first scanned statically (every global it
would import must be one a state dict needs), then read with ``torch.load(weights_only=True)``; a safetensors
header is checked before it is parsed. Pickled modules, TorchScript and ``torch.export`` archives are programs
and are refused. These functions parse in the calling process: user files go through `core.jobs.queue`, which runs
them in a worker with resource limits.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import os
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.results import cost
from core.errors import BadInputError, FeatherweightError, UnsupportedModelError
from core.io.decoder import DECODER_SUFFIX, DecoderCheckpoint, load_decoder_bytes

# Opset our exports target; quantization needs >= 13 for per-channel QDQ, int4 MatMulNBits needs >= 21 only in
# the contrib domain (so 17 is fine for every technique here).
EXPORT_OPSET = 17
MIN_OPSET = 13


# Environment variables that override LoadLimits' defaults (documented in SECURITY.md): name -> (field, unit).
LIMIT_ENV = {
    "FEATHERWEIGHT_MAX_UPLOAD_MB": ("max_file_bytes", 2**20),
    "FEATHERWEIGHT_MAX_NODES": ("max_nodes", 1),
    "FEATHERWEIGHT_MAX_WEIGHTS_MB": ("max_initializer_bytes", 2**20),
    "FEATHERWEIGHT_MAX_TENSOR_ELEMENTS": ("max_tensor_elements", 1),
}


@dataclass(frozen=True)
class LoadLimits:
    """Caps checked before anything large is allocated; generous for real models, fatal for bombs."""

    max_file_bytes: int = 512 * 2**20
    max_nodes: int = 100_000
    max_initializer_bytes: int = 1 * 2**30
    max_tensor_elements: int = 2**28  # 1 GiB of float32 in one tensor
    max_dim: int = 2**31 - 1
    max_graph_depth: int = 16  # nesting of subgraphs (If/Loop/Scan)

    @classmethod
    def from_env(cls) -> "LoadLimits":
        """Defaults, overridden by FEATHERWEIGHT_MAX_UPLOAD_MB, _MAX_NODES, _MAX_WEIGHTS_MB, _MAX_TENSOR_ELEMENTS.

        Raises:
            BadInputError: a variable is set to something other than a positive integer.
        """
        changes = {}
        for var, (name, unit) in LIMIT_ENV.items():
            raw = os.environ.get(var, "").strip()
            if not raw:
                continue
            if not raw.isdigit() or int(raw) <= 0:
                raise BadInputError(f"{var}={raw!r} must be a positive integer")
            changes[name] = int(raw) * unit
        return dataclasses.replace(cls(), **changes) if changes else cls()


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings for symbolic axes) and numpy dtype name of a model input or output."""

    name: str
    shape: tuple
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class Model:
    """A model ready for the pipeline: always an ONNX graph, plus the torch module where we have one."""

    source: str
    onnx_model: Any  # onnx.ModelProto
    torch_module: Any = None  # torch.nn.Module in eval mode, or None for ONNX-only models
    architecture: str | None = None  # sample architecture name, for width-scaled students
    notes: list = field(default_factory=list)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return graph_inputs(self.onnx_model)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return graph_outputs(self.onnx_model)

    def onnx_bytes(self) -> bytes:
        return self.onnx_model.SerializeToString()

    def copy(self) -> "Model":
        """A deep copy, so a step can change it without touching the original."""
        return Model(self.source, copy.deepcopy(self.onnx_model), copy.deepcopy(self.torch_module),
                     self.architecture, list(self.notes))


# --------------------------------------------------------------------------------------------------------------
# ONNX: validation before materialisation


_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
                17: 1, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1}


def _tensor_elements(dims, what: str, limits: LoadLimits) -> int:
    count = 1
    for d in dims:
        if d < 0 or d > limits.max_dim:
            raise BadInputError(f"{what} declares an impossible dimension {d}")
        count *= d
        if count > limits.max_tensor_elements:
            raise BadInputError(f"{what} declares {count:,}+ elements; the limit is {limits.max_tensor_elements:,}")
    return count


def _check_tensor(t, what: str, limits: LoadLimits) -> int:
    """Refuse external data and absurd sizes; return the tensor's declared byte size."""
    import onnx

    name = f"{what} {t.name!r}" if t.name else what
    if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
        location = next((e.value for e in t.external_data if e.key == "location"), "?")
        raise BadInputError(f"{name} stores its data outside the file ({location[:200]!r}); "
                            "external data is refused: save the model as one self-contained .onnx file "
                            "(onnx.save(model, path, save_as_external_data=False); from torch: "
                            "torch.onnx.export(..., dynamo=True, external_data=False))")
    elements = _tensor_elements(t.dims, name, limits)
    return elements * _DTYPE_BYTES.get(t.data_type, 8)


def _check_sparse(sparse, what: str, limits: LoadLimits) -> int:
    size = _check_tensor(sparse.values, what, limits)
    _check_tensor(sparse.indices, f"{what} indices", limits)
    _tensor_elements(sparse.dims, what, limits)
    return size


def _small_constant(tensor, limits: LoadLimits):
    """The values of a constant shape-like tensor (<= 16 elements), or None when it is not small."""
    from onnx import numpy_helper

    if _tensor_elements(tensor.dims, "shape", limits) > 16:
        return None
    return numpy_helper.to_array(tensor).reshape(-1)


def _check_output_size(node, constants: dict, limits: LoadLimits) -> None:
    """Refuse a shape-producing op whose constant arguments ask for a tensor over the caps, before onnxruntime
    (which folds constants when it builds a session) ever allocates it: a ConstantOfShape asking for terabytes."""
    what = f"node {node.name or node.op_type} output"

    def const(index):
        if len(node.input) <= index or node.input[index] not in constants:
            return None
        return _small_constant(constants[node.input[index]], limits)

    if node.op_type in ("ConstantOfShape", "Expand", "Tile"):
        values = const(0 if node.op_type == "ConstantOfShape" else 1)
        if values is not None:
            _tensor_elements([int(v) for v in values], what, limits)
    elif node.op_type == "Range":
        start, limit, delta = const(0), const(1), const(2)
        if start is not None and limit is not None and delta is not None and len(start) and len(limit) \
                and len(delta) and float(delta[0]) != 0:
            span = (float(limit[0]) - float(start[0])) / float(delta[0])
            if not np.isfinite(span):
                raise BadInputError(f"{what}: Range with non-finite bounds")
            _tensor_elements([max(0, int(np.ceil(span)))], what, limits)


def _check_node(node, constants: dict, limits: LoadLimits, depth: int, counts: dict, where: str) -> None:
    """Check one node's tensors and subgraphs (of a graph or a function body)."""
    import onnx

    counts["nodes"] += 1
    if counts["nodes"] > limits.max_nodes:
        raise BadInputError(f"the model has more than {limits.max_nodes:,} nodes")
    label = f"{where}node {node.name or node.op_type} attribute"
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR or attr.HasField("t"):
            counts["bytes"] += _check_tensor(attr.t, label, limits)
            if node.op_type == "Constant":
                for out in node.output:
                    constants[out] = attr.t
        for t in attr.tensors:
            counts["bytes"] += _check_tensor(t, label, limits)
        if attr.HasField("sparse_tensor"):
            counts["bytes"] += _check_sparse(attr.sparse_tensor, f"{label} (sparse)", limits)
        for sparse in attr.sparse_tensors:
            counts["bytes"] += _check_sparse(sparse, f"{label} (sparse)", limits)
        if attr.HasField("g"):
            _walk_graph(attr.g, limits, depth + 1, counts)
        for g in attr.graphs:
            _walk_graph(g, limits, depth + 1, counts)
    _check_output_size(node, constants, limits)
    if counts["bytes"] > limits.max_initializer_bytes:
        raise BadInputError(f"the model's weights exceed {limits.max_initializer_bytes / 2**20:,.0f} MiB")


def _walk_graph(graph, limits: LoadLimits, depth: int, counts: dict) -> None:
    """Check every tensor and node of a graph and its subgraphs, without loading any external file."""
    if depth > limits.max_graph_depth:
        raise BadInputError(f"subgraphs nest deeper than {limits.max_graph_depth} levels")
    constants: dict[str, Any] = {}
    for init in graph.initializer:
        counts["bytes"] += _check_tensor(init, "initializer", limits)
        constants[init.name] = init
    for sparse in graph.sparse_initializer:
        counts["bytes"] += _check_sparse(sparse, "sparse initializer", limits)
    if counts["bytes"] > limits.max_initializer_bytes:
        raise BadInputError(f"the model's weights exceed {limits.max_initializer_bytes / 2**20:,.0f} MiB")
    for node in graph.node:
        _check_node(node, constants, limits, depth, counts, "")


# ---- a look at the protobuf wire format before parsing: count nodes and nesting without allocating them

# field numbers (onnx.proto): the messages that hold nodes, and where subgraphs hang off them
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_GRAPH_NODE, _NODE_ATTRIBUTE, _ATTR_G, _ATTR_GRAPHS, _FUNCTION_NODE = 1, 5, 6, 11, 7
_TRAINING_GRAPHS = (1, 2)


class _WireError(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError(f"bad varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, start, end) of every length-delimited field of one message; other fields are skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field_number, wire = key >> 3, key & 7
        if field_number == 0:
            raise _WireError(f"field number 0 at byte {pos}")
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _WireError(f"a field at byte {pos} runs past the end of its message")
            yield field_number, pos, pos + length
            pos += length
        else:
            raise _WireError(f"unsupported wire type {wire} at byte {pos}")
        if pos > end:
            raise _WireError("truncated message")


def _prescan_onnx(data: bytes, what: str, limits: LoadLimits) -> None:
    """Count nodes (main graph, subgraphs, functions, training graphs) and subgraph depth on the wire format,
    so that a file of millions of tiny nodes is refused before protobuf materialises them."""
    buf = memoryview(data)
    counts = {"nodes": 0}

    def graph(start, end, depth):
        if depth > limits.max_graph_depth:
            raise BadInputError(f"subgraphs nest deeper than {limits.max_graph_depth} levels")
        for field_number, s, e in _fields(buf, start, end):
            if field_number == _GRAPH_NODE:
                node(s, e, depth)

    def node(start, end, depth):
        counts["nodes"] += 1
        if counts["nodes"] > limits.max_nodes:
            raise BadInputError(f"the model has more than {limits.max_nodes:,} nodes")
        for field_number, s, e in _fields(buf, start, end):
            if field_number == _NODE_ATTRIBUTE:
                for attr_field, gs, ge in _fields(buf, s, e):
                    if attr_field in (_ATTR_G, _ATTR_GRAPHS):
                        graph(gs, ge, depth + 1)

    try:
        for field_number, s, e in _fields(buf, 0, len(buf)):
            if field_number == _MODEL_GRAPH:
                graph(s, e, 0)
            elif field_number == _MODEL_FUNCTIONS:
                for function_field, fs, fe in _fields(buf, s, e):
                    if function_field == _FUNCTION_NODE:
                        node(fs, fe, 0)
            elif field_number == _MODEL_TRAINING:
                for training_field, ts, te in _fields(buf, s, e):
                    if training_field in _TRAINING_GRAPHS:
                        graph(ts, te, 0)
    except _WireError as exc:
        raise BadInputError(f"{what} is not an ONNX model, or is truncated or damaged ({exc})") from None


def validate_onnx_bytes(data: bytes, limits: LoadLimits | None = None, *, what: str = "file"):
    """Parse and check an ONNX model held in memory, without following external data.

    The checks run in this order, each before anything it guards is allocated: the file size; a scan of the
    protobuf wire format for the node count and subgraph depth; then, after parsing, every tensor in the main
    graph, subgraphs, functions and training graphs (external data refused, declared sizes capped), constant
    shape arguments of ConstantOfShape / Expand / Tile / Range, the graph inputs' dimensions, and the ONNX
    checker.

    Args:
        data: the serialized model.
        limits: caps on size, nodes and tensor sizes.
        what: how to name the input in errors.

    Returns:
        The validated ``onnx.ModelProto``.

    Raises:
        BadInputError: unreadable, unsafe or over a cap; the message says which, in one line.
    """
    limits = limits or LoadLimits.from_env()
    try:
        return _validate_onnx(data, limits, what)
    except FeatherweightError:
        raise
    except MemoryError:
        raise BadInputError(f"{what} needs more memory to check than this process may use") from None
    except RecursionError:
        raise BadInputError(f"{what} nests too deeply to check") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes must give our error, never a traceback
        raise BadInputError(f"{what} is not a valid ONNX model ({exc.__class__.__name__}: "
                            f"{_first_line(exc)})") from None


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, without terminal escapes, cut to `limit`."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), exc.__class__.__name__)
    return line[:limit]


def _validate_onnx(data: bytes, limits: LoadLimits, what: str):
    if len(data) == 0:
        raise BadInputError(f"{what} is empty")
    if len(data) > limits.max_file_bytes:
        raise BadInputError(f"{what} is {len(data) / 2**20:,.1f} MiB; the limit is "
                            f"{limits.max_file_bytes / 2**20:,.0f} MiB")
    _prescan_onnx(data, what, limits)
    import onnx
    from google.protobuf.message import DecodeError

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise BadInputError(f"{what} is not an ONNX model (protobuf parse failed: {_first_line(exc)})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise BadInputError(f"{what} is not an ONNX model (no graph with nodes)")
    if proto.ir_version <= 0 or not proto.opset_import:
        raise BadInputError(f"{what} is not an ONNX model (no IR version or opset)")
    counts = {"nodes": 0, "bytes": 0}
    _walk_graph(proto.graph, limits, 0, counts)
    for function in proto.functions:
        constants: dict[str, Any] = {}
        for node in function.node:
            _check_node(node, constants, limits, 0, counts, f"function {function.name} ")
    for training in proto.training_info:
        _walk_graph(training.initialization, limits, 0, counts)
        _walk_graph(training.algorithm, limits, 0, counts)
    for value in list(proto.graph.input) + list(proto.graph.output):
        if value.type.HasField("tensor_type"):
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim if d.HasField("dim_value")]
            _tensor_elements(dims, f"graph input/output {value.name!r}", limits)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise BadInputError(f"{what} failed the ONNX checker: {_first_line(exc, 300)}") from None
    return proto


def read_capped(path: Path, limits: LoadLimits) -> bytes:
    """Read a regular file, refusing directories, devices, FIFOs and files over the cap.

    The type and size are checked on the opened descriptor (no window between the check and the read), and
    the read itself stops one byte past the cap.
    """
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError(f"{path} is not a regular file")
        if st.st_size > limits.max_file_bytes:
            raise BadInputError(f"{path.name} is {st.st_size / 2**20:,.1f} MiB; the limit is "
                                f"{limits.max_file_bytes / 2**20:,.0f} MiB")
        try:
            data = fh.read(limits.max_file_bytes + 1)
        except OSError as exc:
            raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limits.max_file_bytes:
        raise BadInputError(f"{path.name} grew past the {limits.max_file_bytes / 2**20:,.0f} MiB limit while "
                            "being read")
    return data


# --------------------------------------------------------------------------------------------------------------
# ONNX graph facts


def _np_dtype_name(elem_type: int) -> str:
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # noqa: BLE001 - unknown or exotic element types
        return f"onnx:{elem_type}"


def _value_spec(value) -> TensorSpec:
    tt = value.type.tensor_type
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return TensorSpec(value.name, tuple(dims), _np_dtype_name(tt.elem_type))


def graph_inputs(proto) -> tuple[TensorSpec, ...]:
    """The real inputs (initializers listed as inputs by old exporters are left out)."""
    inits = {i.name for i in proto.graph.initializer}
    return tuple(_value_spec(v) for v in proto.graph.input if v.name not in inits)


def graph_outputs(proto) -> tuple[TensorSpec, ...]:
    return tuple(_value_spec(v) for v in proto.graph.output)


def onnx_params(proto) -> int:
    """Number of weight elements stored in the graph (initializers and Constant tensors)."""
    import onnx

    total = sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    total += int(np.prod(attr.t.dims)) if len(attr.t.dims) else 1
    return total


def onnx_opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def ensure_opset(proto, minimum: int = MIN_OPSET):
    """Return the model converted to at least `minimum` opset (a copy), or the model itself if it already is.

    Raises:
        UnsupportedModelError: the version converter cannot upgrade this graph.
    """
    import onnx
    from onnx import version_converter

    current = onnx_opset(proto)
    if current >= minimum:
        return proto
    try:
        converted = version_converter.convert_version(proto, minimum)
        from core.io.repair import raise_ir_version

        raise_ir_version(converted)  # the converter keeps an IR 3 header, which newer tools read as "old"
        onnx.checker.check_model(converted)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        raise UnsupportedModelError(f"cannot upgrade the model from opset {current} to {minimum}: "
                                    f"{str(exc).splitlines()[0][:200]}") from None
    return converted


# --------------------------------------------------------------------------------------------------------------
# torch -> ONNX


def export_onnx(module, example_input, *, input_name: str = "input", output_name: str = "logits",
                opset: int = EXPORT_OPSET):
    """Export a torch module to ONNX with a dynamic batch axis.

    Args:
        module: the torch module (put in eval mode for the export).
        example_input: a tensor with the per-sample shape and a batch axis first.
        input_name / output_name: graph names.
        opset: target opset.

    Returns:
        The ``onnx.ModelProto``.

    Raises:
        UnsupportedModelError: the exporter rejected the module.
    """
    import onnx
    import torch

    module = module.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter takes ~0.2 s on the samples against ~4 s for the dynamo exporter.
            torch.onnx.export(module, (example_input,), buffer, dynamo=False, input_names=[input_name],
                              output_names=[output_name], opset_version=opset,
                              dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise UnsupportedModelError(f"ONNX export failed: {str(exc).splitlines()[0][:300]}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    return stamp_producer(proto)


def featherweight_version() -> str:
    """This package's version (pyproject.toml), or "dev" when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("featherweight")
    except metadata.PackageNotFoundError:
        return "dev"


def stamp_producer(proto):
    """Name Featherweight as the graph's producer, with its own version (the exporter leaves torch's version
    there, and `inspect` said "featherweight 2.13.0"). Returns the proto."""
    proto.producer_name = "featherweight"
    proto.producer_version = featherweight_version()
    return proto


# --------------------------------------------------------------------------------------------------------------
# Loading


def cache_dir() -> Path:
    """Where exported sample ONNX files are cached (FEATHERWEIGHT_CACHE, else ~/.cache/featherweight)."""
    path = Path(os.environ.get("FEATHERWEIGHT_CACHE") or Path.home() / ".cache" / "featherweight")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sample(name: str):
    from sample_models import SAMPLE_MODELS

    if name not in SAMPLE_MODELS:
        raise BadInputError(f"unknown sample model {name!r}; available: {', '.join(sorted(SAMPLE_MODELS))}")
    return SAMPLE_MODELS[name]


def load_sample_module(name: str, width: float = 1.0):
    """Build a sample architecture; at width 1.0 with its shipped trained weights."""
    import torch

    sample = _sample(name)
    torch.manual_seed(0)
    module = sample.build(width)
    if width == 1.0:
        if not sample.weights_path.exists():
            raise BadInputError(f"sample {name!r} has no trained weights at {sample.weights_path}; "
                                f"run: python -m sample_models.train {name}")
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(sample.weights_path)))
    return module.eval()


def _load_sample(name: str) -> Model:
    import onnx

    sample = _sample(name)
    if getattr(sample, "load_model", None) is not None:  # samples with their own loader (text models)
        model = sample.load_model()
        if not isinstance(model, DecoderCheckpoint):  # a decoder sample is a checkpoint folder, not ONNX
            stamp_producer(model.onnx_model)
        return model
    import torch  # after the branch above: a cached text sample loads in ~0.3 s without torch
    module = load_sample_module(name)
    digest = hashlib.sha256(sample.weights_path.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"{name}-{digest}-torch{torch.__version__}-op{EXPORT_OPSET}.onnx"
    if cached.exists():
        proto = stamp_producer(onnx.load_from_string(cached.read_bytes()))  # a cache written before the stamp
    else:
        proto = export_onnx(module, torch.zeros((1, *sample.input_shape)))
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(proto.SerializeToString())
        os.replace(tmp, cached)
    return Model(f"sample:{name}", proto, module, architecture=name)


def _state_dict_into_sample(state: dict, source: str) -> Model:
    """Match a plain state dict to a bundled architecture by its keys and shapes."""
    import torch

    from sample_models import SAMPLE_MODELS

    if not isinstance(state, dict) or not state or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise BadInputError(f"{source} does not hold a plain state dict of tensors; save model.state_dict(), "
                            "or export the model to ONNX")
    for name, sample in SAMPLE_MODELS.items():
        if sample.extra:
            continue
        reference = sample.build(1.0).state_dict()
        if set(reference) == set(state) and all(reference[k].shape == state[k].shape for k in state):
            module = sample.build(1.0)
            try:
                module.load_state_dict(state)
            except Exception as exc:  # noqa: BLE001 - dtype mismatches and the like
                raise BadInputError(f"{source}: the weights do not load into {name}: {_first_line(exc)}") from None
            module.eval()
            proto = export_onnx(module, torch.zeros((1, *sample.input_shape)))
            return Model(source, proto, module, architecture=name)
    raise UnsupportedModelError(f"{source}: the weights match no bundled architecture "
                                f"({', '.join(SAMPLE_MODELS)}); for any other model upload an ONNX export")


# ---- pickles: a static look at every global a torch file would import, before torch ever unpickles it

# external_data=False: torch 2.13's exporter otherwise writes the weights to a second file, model.onnx.data, and an
# upload with external data is refused (tests/test_models.py runs this exact command and checks it writes one file).
EXPORT_COMMAND = ("torch.onnx.export(model, (example_input,), 'model.onnx', dynamo=True, external_data=False)")
EXPORT_HINT = (f"export the model to ONNX instead: {EXPORT_COMMAND}, which writes one self-contained file; or "
               "save model.state_dict() of a bundled architecture")

# The globals a plain state dict needs (what torch.save writes for tensors, parameters and OrderedDicts).
_PICKLE_ALLOWED = {
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"), ("torch", "device"), ("_codecs", "encode"), ("builtins", "set"), ("builtins", "frozenset"),
}
_TORCH_DTYPES = {"float", "float16", "half", "bfloat16", "float32", "float64", "double", "int8", "uint8", "int16",
                 "int32", "int64", "long", "int", "short", "bool", "complex64", "complex128"}
_PICKLE_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                   "BINUNICODE8"}


def _pickle_global_allowed(module: str, name: str) -> bool:
    if (module, name) in _PICKLE_ALLOWED:
        return True
    return module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPES)


def _refuse_global(module: str, name: str, what: str) -> BadInputError:
    dotted = f"{module}.{name}"[:120]
    if module.startswith("torch.nn") or name[:1].isupper():
        return BadInputError(f"{what} is a whole pickled model or object ({dotted}), which runs code when it is "
                             f"loaded; it is refused: {EXPORT_HINT}")
    return BadInputError(f"{what} holds pickled code (it would call {dotted} when loaded); it is refused: "
                         f"{EXPORT_HINT}")


def _scan_pickle(stream, what: str) -> None:
    """Walk one pickle's opcodes without executing it, simulating only enough of the stack to resolve every
    global it would import, and refuse any global a plain state dict does not need.

    Raises:
        BadInputError: a disallowed or unresolvable global, an extension code, or a malformed pickle.
    """
    import pickletools

    mark = object()
    stack: list = []
    memo: dict = {}

    def pop():
        if not stack:
            raise BadInputError(f"{what} is not a readable torch weights file (malformed pickle)")
        return stack.pop()

    try:
        for op, arg, _ in pickletools.genops(stream):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if not _pickle_global_allowed(module, attr):
                    raise _refuse_global(module, attr, what)
            elif name == "STACK_GLOBAL":
                attr, module = pop(), pop()
                if isinstance(module, bytes):
                    module = module.decode("latin-1")
                if isinstance(attr, bytes):
                    attr = attr.decode("latin-1")
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise BadInputError(f"{what} holds pickled code (a global that cannot be resolved without "
                                        f"running it); it is refused: {EXPORT_HINT}")
                if not _pickle_global_allowed(module, attr):
                    raise _refuse_global(module, attr, what)
                stack.append(None)
                continue
            elif name.startswith("EXT"):
                raise BadInputError(f"{what} holds pickled code (an extension-registry global); it is refused: "
                                    f"{EXPORT_HINT}")
            if name in _PICKLE_STRINGS:
                stack.append(arg)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1] if stack else None
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(arg))
            elif name == "DUP":
                stack.append(stack[-1] if stack else None)
            else:
                before = op.stack_before
                if pickletools.markobject in before:
                    if not any(item is mark for item in stack):
                        raise BadInputError(f"{what} is not a readable torch weights file (malformed pickle)")
                    while stack.pop() is not mark:
                        pass
                    for _ in range(before.index(pickletools.markobject)):
                        pop()
                else:
                    for _ in before:
                        pop()
                stack.extend(mark if item is pickletools.markobject else None for item in op.stack_after)
    except FeatherweightError:
        raise
    except Exception as exc:  # noqa: BLE001 - genops raises ValueError and friends on garbage
        raise BadInputError(f"{what} is not a readable torch weights file (bad pickle: {_first_line(exc, 120)})") \
            from None


def _scan_torch_file(data: bytes, what: str, limits: LoadLimits) -> None:
    """Refuse TorchScript / torch.export archives, zip bombs and any pickle with a global beyond a state dict."""
    if data[:4] == b"PK\x03\x04" or data[:2] == b"PK":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            infos = archive.infolist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise BadInputError(f"{what} is a damaged zip archive ({_first_line(exc, 120)})") from None
        names = [i.filename for i in infos]
        if any("/code/" in n or n.startswith("code/") or n.endswith("constants.pkl") for n in names):
            raise BadInputError(f"{what} is a TorchScript archive, which is a program and is refused: "
                                f"{EXPORT_HINT}")
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n or n.startswith("models/")
               or n.endswith("archive_format") for n in names):
            raise BadInputError(f"{what} is a torch.export program, which is refused: {EXPORT_HINT}")
        total = sum(i.file_size for i in infos)
        if total > limits.max_initializer_bytes:
            raise BadInputError(f"{what} unpacks to {total / 2**20:,.0f} MiB; the limit is "
                                f"{limits.max_initializer_bytes / 2**20:,.0f} MiB")
        pickles = [i for i in infos if i.filename.endswith(".pkl")]
        if not pickles:
            raise BadInputError(f"{what} is a zip archive without a data.pkl; not a torch weights file")
        for info in pickles:
            try:
                payload = archive.read(info)
            except Exception as exc:  # noqa: BLE001 - CRC errors, bad compression, ...
                raise BadInputError(f"{what} is a damaged zip archive ({_first_line(exc, 120)})") from None
            _scan_pickle(io.BytesIO(payload), what)
        return
    # The legacy format: five pickles (magic number, protocol, system info, the object, storage keys), then
    # raw tensor bytes.
    stream = io.BytesIO(data)
    for _ in range(5):
        _scan_pickle(stream, what)


def _load_torch_weights(data: bytes, path: Path, limits: LoadLimits | None = None, *, prescan: bool = True) \
        -> Model:
    """A .pt / .pth holding a plain state dict: statically scanned, then ``torch.load(weights_only=True)``.

    Args:
        prescan: run the static pickle scan first (turned off only by tests of the second layer).
    """
    limits = limits or LoadLimits.from_env()
    what = path.name
    if prescan:
        _scan_torch_file(data, what, limits)
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except FeatherweightError:
        raise
    except Exception as exc:  # noqa: BLE001 - the unpickler raises many types
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text or "TorchScript" in text:
            raise BadInputError(f"{what} holds pickled Python objects, not just tensors; it is refused: "
                                f"{EXPORT_HINT}") from None
        raise BadInputError(f"{what} is not a readable torch weights file: {_first_line(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return _state_dict_into_sample(state, what)


_SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                       "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
SAFETENSORS_MAX_HEADER = 100 * 2**20  # the format's own cap on the JSON header


def _check_safetensors(data: bytes, what: str, limits: LoadLimits) -> None:
    """Check the header (8-byte length, JSON table of dtype / shape / offsets) before torch is imported: every
    tensor's bytes must lie inside the file and match its declared shape."""
    if len(data) < 8:
        raise BadInputError(f"{what} is not a valid safetensors file (shorter than its 8-byte header length)")
    length = int.from_bytes(data[:8], "little")
    if length > min(SAFETENSORS_MAX_HEADER, len(data) - 8):
        raise BadInputError(f"{what} is not a valid safetensors file (header length {length:,} does not fit)")
    try:
        header = json.loads(data[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInputError(f"{what} is not a valid safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise BadInputError(f"{what} is not a valid safetensors file (its header is not a table)")
    body = len(data) - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in _SAFETENSORS_DTYPES \
                or not isinstance(entry.get("shape"), list) or not isinstance(entry.get("data_offsets"), list) \
                or len(entry["data_offsets"]) != 2 \
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry["shape"]
                           + entry["data_offsets"]):
            raise BadInputError(f"{what} is not a valid safetensors file (bad entry for {str(name)[:60]!r})")
        elements = _tensor_elements(entry["shape"], f"{what} tensor {str(name)[:60]!r}", limits)
        begin, end = entry["data_offsets"]
        if not 0 <= begin <= end <= body or end - begin != elements * _SAFETENSORS_DTYPES[entry["dtype"]]:
            raise BadInputError(f"{what} is not a valid safetensors file (tensor {str(name)[:60]!r} does not "
                                "match its bytes)")


def _load_safetensors(data: bytes, path: Path, limits: LoadLimits | None = None) -> Model:
    _check_safetensors(data, path.name, limits or LoadLimits.from_env())
    from safetensors.torch import load as load_safetensors

    try:
        state = load_safetensors(data)
    except Exception as exc:  # noqa: BLE001 - the parser raises its own error types
        raise BadInputError(f"{path.name} is not a valid safetensors file: {_first_line(exc)}") from None
    return _state_dict_into_sample(state, path.name)


MODEL_SUFFIXES = (".onnx", ".safetensors", ".pt", ".pth", DECODER_SUFFIX)  # .zip: a decoder checkpoint folder

# Formats that are programs, refused with a pointer to what to upload instead.
CODE_SUFFIXES = {
    ".pt2": "a torch.export program",
    ".ptl": "a TorchScript (lite) program",
    ".torchscript": "a TorchScript program",
    ".jit": "a TorchScript program",
    ".pkl": "a Python pickle",
    ".pickle": "a Python pickle",
    ".joblib": "a joblib pickle",
    ".bin": "a raw or pickled checkpoint",
    ".ckpt": "a pickled checkpoint",
    ".keras": "a Keras model",
    ".h5": "a Keras/HDF5 model",
    ".pb": "a TensorFlow graph",
    ".tflite": "a TensorFlow Lite model",
}


def _check_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in MODEL_SUFFIXES:
        return suffix
    allowed = ", ".join(MODEL_SUFFIXES)
    if suffix in CODE_SUFFIXES:
        raise BadInputError(f"{Path(name).name} looks like {CODE_SUFFIXES[suffix]}, which Featherweight does not "
                            f"load; allowed: {allowed} (for a torch model, {EXPORT_HINT})")
    raise BadInputError(f"{Path(name).name}: unsupported model file type {suffix or '(none)'!r}; allowed: {allowed}")


def load_model(spec: str, limits: LoadLimits | None = None) -> Model:
    """Load a model from ``sample:NAME`` or a file path (.onnx, .safetensors, .pt, .pth).

    This parses the file in the calling process: for files from users, use ``core.jobs.queue.inspect_isolated`` or a
    job, which run it in a worker with resource limits.

    Raises:
        BadInputError: missing, unreadable or unsafe file, or an unknown sample.
        UnsupportedModelError: a valid file Featherweight cannot use.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise BadInputError("no model given: pass a path or sample:NAME")
    if spec.startswith("sample:"):
        return _load_sample(spec.split(":", 1)[1])
    limits = limits or LoadLimits.from_env()
    path = Path(spec)
    _check_suffix(path.name)
    data = read_capped(path, limits)
    return load_model_bytes(data, path.name, limits)


def load_model_bytes(data: bytes, filename: str, limits: LoadLimits | None = None) -> Model:
    """Load a model from bytes, choosing the parser by the file name's extension (uploads).

    Any bytes give either a Model or a FeatherweightError with one line saying why, never another exception.

    Raises:
        BadInputError: unreadable, unsafe, over a cap, or a refused format.
        UnsupportedModelError: a valid file Featherweight cannot use.
    """
    limits = limits or LoadLimits.from_env()
    path = Path(filename)
    suffix = _check_suffix(path.name)
    if suffix == ".onnx":
        proto = validate_onnx_bytes(data, limits, what=path.name)
        from core.io.repair import fold_constants  # onnx_fixes reads graph facts from this module

        notes = []
        folded = fold_constants(proto, max_bytes=limits.max_file_bytes)
        if folded:
            notes.append(f"{folded} node{'s' if folded != 1 else ''} computing weights from constants "
                         "(ConstantOfShape and the like) folded at load, so their weights are counted, pruned "
                         "and quantized as stored weights")
        return Model(filename, proto, notes=notes)
    if len(data) == 0:
        raise BadInputError(f"{path.name} is empty")
    if len(data) > limits.max_file_bytes:
        raise BadInputError(f"{path.name} is {len(data) / 2**20:,.1f} MiB; the limit is "
                            f"{limits.max_file_bytes / 2**20:,.0f} MiB")
    try:
        if suffix == DECODER_SUFFIX:  # a zipped Hugging Face decoder folder (core.io.decoder)
            return load_decoder_bytes(data, path.name, cache_dir() / "decoders", max_bytes=limits.max_file_bytes,
                                      max_elements=limits.max_tensor_elements)
        if suffix == ".safetensors":
            return _load_safetensors(data, path, limits)
        return _load_torch_weights(data, path, limits)
    except FeatherweightError:
        raise
    except MemoryError:
        raise BadInputError(f"{path.name} needs more memory to load than this process may use") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes must give our error, never a traceback
        raise BadInputError(f"{path.name} could not be loaded ({exc.__class__.__name__}: {_first_line(exc)})") \
            from None


# --------------------------------------------------------------------------------------------------------------
# The model card


def task_of(model: Model) -> str:
    """'classification' for a single 2-D float output (logits), 'embedding'/'other' otherwise."""
    outs = model.outputs
    if len(outs) == 1 and len(outs[0].shape) == 2 and outs[0].dtype.startswith("float"):
        name = outs[0].name.lower()
        if any(word in name for word in ("embed", "pool", "sentence", "feature")):
            return "embedding"
        return "classification"
    return "other"


def layer_table(proto) -> list[dict]:
    """One row per node that owns weights: name, op type, params and share of weight bytes."""
    inits = {i.name: i for i in proto.graph.initializer}
    rows = []
    total_bytes = sum(_DTYPE_BYTES.get(t.data_type, 4) * int(np.prod(t.dims) if len(t.dims) else 1)
                      for t in inits.values()) or 1
    for node in proto.graph.node:
        params = 0
        nbytes = 0
        for name in node.input:
            if name in inits:
                t = inits[name]
                n = int(np.prod(t.dims)) if len(t.dims) else 1
                params += n
                nbytes += n * _DTYPE_BYTES.get(t.data_type, 4)
        if params:
            rows.append({"name": node.name or node.output[0], "type": node.op_type, "params": params,
                         "bytes": nbytes, "share": nbytes / total_bytes})
    return rows


def model_card(model: Model) -> dict:
    """Facts about a model for the dashboard and ``featherweight inspect``."""
    if isinstance(model, DecoderCheckpoint):
        return model.card()
    proto = model.onnx_model
    ops = Counter(n.op_type for n in proto.graph.node)
    size = len(model.onnx_bytes())
    card = {
        "source": model.source,
        "format": "torch+onnx" if model.torch_module is not None else "onnx",
        "architecture": model.architecture,
        "task": task_of(model),
        "ir_version": int(proto.ir_version),
        "opset": onnx_opset(proto),
        "producer": " ".join(p for p in (proto.producer_name, proto.producer_version) if p) or None,
        "params": onnx_params(proto),
        "size_bytes": size,
        "inputs": [s.to_dict() for s in model.inputs],
        "outputs": [s.to_dict() for s in model.outputs],
        "nodes": len(proto.graph.node),
        "op_types": dict(ops.most_common()),
        "layers": layer_table(proto),
        "capabilities": capabilities(model),
        "macs": _macs(proto),
    }
    return card


def _macs(proto) -> int | None:
    """Multiply-accumulates of one sample (batch 1), for the dashboard's "this benchmark takes minutes" warning;
    None when the graph's shapes cannot be inferred."""
    try:
        macs = cost.model_compute_profile(proto).get("macs")
    except Exception:  # noqa: BLE001 - a wild graph loses only the estimate
        return None
    return int(macs) if isinstance(macs, (int, float)) and macs > 0 else None


def capabilities(model: Model) -> dict:
    """Which techniques apply to this model, each with a short reason, and how a stranger's model will be fed,
    timed and compared (batch axis, synthetic inputs, fidelity)."""
    from core.io.repair import fixed_batch_size

    ops = {n.op_type for n in model.onnx_model.graph.node}
    has_torch = model.torch_module is not None
    task = task_of(model)
    opset = onnx_opset(model.onnx_model)
    quantize = "yes: dynamic, static, fp16" + (", int4 (MatMul weights)" if "MatMul" in ops or "Gemm" in ops
                                              else "; int4 needs MatMul/Gemm weights")
    if opset < MIN_OPSET:
        quantize += f"; the graph is upgraded from opset {opset} to {MIN_OPSET} first"
    batch = fixed_batch_size(model.onnx_model)
    outputs = model.outputs
    fills = [_input_description(model, spec) for spec in model.inputs]
    return {
        "quantize": quantize,
        "prune": ("yes: structured, unstructured, 2:4" if has_torch
                  else "unstructured on the ONNX weights; structured pruning needs a torch model"),
        "distill": ("yes" if task == "classification"
                    else "needs a classifier (one 2-D logits output)"),
        "batch sizes": ("yes: the batch axis is symbolic, any batch size can be timed" if batch is None else
                        f"the batch axis is fixed at {batch}: Featherweight makes it symbolic where the graph "
                        f"allows (checked in onnxruntime), else only batch {batch} is timed"),
        "synthetic data": ("no: " if any("cannot" in f for f in fills) else "yes: ") + "; ".join(fills),
        "fidelity": ("yes: accuracy (with labels) and top-1 agreement with the baseline" if task == "classification"
                     else "yes: cosine similarity to the baseline's outputs"
                     + (f", per output and overall ({len(outputs)} outputs)" if len(outputs) > 1 else "")),
    }


def _input_description(model: Model, spec: TensorSpec) -> str:
    """How synthetic inputs fill one input (core.io.data.synthetic_inputs), in words."""
    from core.io.data import _vocab_size

    symbolic = [str(d) for d in spec.shape[1:] if not isinstance(d, int) or d <= 0]
    axes = f", {'/'.join(symbolic)} = benchmark.sequence_length" if symbolic else ""
    lowered = spec.name.lower()
    if spec.dtype == "object" or spec.dtype.startswith("onnx:"):
        return f"{spec.name} ({spec.dtype}) cannot be synthesized: upload data"
    if spec.dtype == "bool" or "mask" in lowered:
        return f"{spec.name}: a mask of ones{axes}"
    if spec.dtype.startswith("float"):
        return f"{spec.name}: floats in [0, 1){axes}"
    if "type" in lowered or "segment" in lowered:
        return f"{spec.name}: zeros (one segment){axes}"
    vocab = _vocab_size(model, spec.name)
    return (f"{spec.name}: token ids below the vocabulary size {vocab:,}{axes}" if vocab
            else f"{spec.name}: integers in [0, 1000) (no embedding table found){axes}")
