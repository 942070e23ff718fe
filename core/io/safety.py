"""What an untrusted model file must pass before it is parsed: its name (suffix), its size, the ONNX wire format and
checker, the globals a torch pickle would import, the safetensors header (see SECURITY.md)."""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import BadInputError, FeatherweightError
from core.format import first_line
from core.io.decoder import DECODER_SUFFIX
from core.io.graph import DTYPE_BYTES
from core.io.safetensors_header import MAX_HEADER_BYTES, MAX_TENSORS, check_header


# ---- a look at the protobuf wire format before parsing: count nodes and nesting without allocating them

# field numbers (onnx.proto): the messages that hold nodes, and where subgraphs hang off them
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_GRAPH_NODE, _NODE_ATTRIBUTE, _ATTR_G, _ATTR_GRAPHS, _FUNCTION_NODE = 1, 5, 6, 11, 7


# Environment variables that override LoadLimits' defaults (documented in SECURITY.md): name -> (field, unit).
LIMIT_ENV = {
    "FEATHERWEIGHT_MAX_UPLOAD_MB": ("max_file_bytes", 2**20),
    "FEATHERWEIGHT_MAX_NODES": ("max_nodes", 1),
    "FEATHERWEIGHT_MAX_WEIGHTS_MB": ("max_initializer_bytes", 2**20),
    "FEATHERWEIGHT_MAX_TENSOR_ELEMENTS": ("max_tensor_elements", 1),
    "FEATHERWEIGHT_MAX_TENSORS": ("max_tensors", 1),
    "FEATHERWEIGHT_MAX_HEADER_MB": ("max_header_bytes", 2**20),
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
    max_tensors: int = MAX_TENSORS  # tensors in a safetensors file (or a whole checkpoint), before its header parses
    max_header_bytes: int = MAX_HEADER_BYTES  # a safetensors header, refused from its 8-byte length

    @classmethod
    def from_env(cls) -> "LoadLimits":
        """Defaults, overridden by FEATHERWEIGHT_MAX_UPLOAD_MB, _MAX_NODES, _MAX_WEIGHTS_MB, _MAX_TENSOR_ELEMENTS,
        _MAX_TENSORS, _MAX_HEADER_MB.

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
    return elements * DTYPE_BYTES.get(t.data_type, 8)


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
                            f"{first_line(exc)})") from None


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
        raise BadInputError(f"{what} is not an ONNX model (protobuf parse failed: {first_line(exc)})") from None
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
        raise BadInputError(f"{what} failed the ONNX checker: {first_line(exc, 300)}") from None
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
        raise BadInputError(f"{what} is not a readable torch weights file (bad pickle: {first_line(exc, 120)})") \
            from None


def scan_torch_file(data: bytes, what: str, limits: LoadLimits) -> None:
    """Refuse TorchScript / torch.export archives, zip bombs and any pickle with a global beyond a state dict."""
    if data[:4] == b"PK\x03\x04" or data[:2] == b"PK":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            infos = archive.infolist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise BadInputError(f"{what} is a damaged zip archive ({first_line(exc, 120)})") from None
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
                raise BadInputError(f"{what} is a damaged zip archive ({first_line(exc, 120)})") from None
            _scan_pickle(io.BytesIO(payload), what)
        return
    # The legacy format: five pickles (magic number, protocol, system info, the object, storage keys), then
    # raw tensor bytes.
    stream = io.BytesIO(data)
    for _ in range(5):
        _scan_pickle(stream, what)


def check_safetensors(data: bytes, what: str, limits: LoadLimits) -> None:
    """Check the header (8-byte length, JSON table of dtype / shape / offsets) before torch is imported: every
    tensor's bytes must lie inside the file and match its declared shape (`core.io.safetensors_header`)."""
    check_header(data, len(data), what, max_elements=limits.max_tensor_elements, max_dim=limits.max_dim,
                 max_header_bytes=limits.max_header_bytes, max_tensors=limits.max_tensors)


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


def check_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in MODEL_SUFFIXES:
        return suffix
    allowed = ", ".join(MODEL_SUFFIXES)
    if suffix in CODE_SUFFIXES:
        raise BadInputError(f"{Path(name).name} looks like {CODE_SUFFIXES[suffix]}, which Featherweight does not "
                            f"load; allowed: {allowed} (for a torch model, {EXPORT_HINT})")
    raise BadInputError(f"{Path(name).name}: unsupported model file type {suffix or '(none)'!r}; allowed: {allowed}")
