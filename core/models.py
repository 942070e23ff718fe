"""Models: safe loading per format, ONNX export of torch modules, opset upgrades, and the model card.

Loading policy (see SECURITY.md): an ONNX file is parsed as data and checked against size caps before any
tensor is materialised; tensors stored outside the file are refused. Torch weights are read only as plain
tensors (``torch.load(weights_only=True)`` or safetensors) into a bundled sample architecture. Pickled modules,
TorchScript and ``torch.export`` archives are programs and are refused.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import os
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import BadInputError, UnsupportedModelError

# Opset our exports target; quantization needs >= 13 for per-channel QDQ, int4 MatMulNBits needs >= 21 only in
# the contrib domain (so 17 is fine for every technique here).
EXPORT_OPSET = 17
MIN_OPSET = 13


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
        """Defaults, with FEATHERWEIGHT_MAX_UPLOAD_MB overriding the file cap."""
        limits = cls()
        mb = os.environ.get("FEATHERWEIGHT_MAX_UPLOAD_MB")
        if mb and mb.isdigit():
            limits = dataclasses.replace(limits, max_file_bytes=int(mb) * 2**20)
        return limits


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
        raise BadInputError(f"{name} stores its data outside the file ({location!r}); "
                            "external data is refused: save the model as a single .onnx file")
    elements = _tensor_elements(t.dims, name, limits)
    return elements * _DTYPE_BYTES.get(t.data_type, 8)


def _check_constant_shape(values: np.ndarray, what: str, limits: LoadLimits) -> None:
    _tensor_elements([int(v) for v in values.reshape(-1)], what, limits)


def _walk_graph(graph, limits: LoadLimits, depth: int, counts: dict) -> None:
    """Check every tensor and node of a graph and its subgraphs, without loading any external file."""
    import onnx
    from onnx import numpy_helper

    if depth > limits.max_graph_depth:
        raise BadInputError(f"subgraphs nest deeper than {limits.max_graph_depth} levels")
    constants: dict[str, Any] = {}
    for init in graph.initializer:
        counts["bytes"] += _check_tensor(init, "initializer", limits)
        constants[init.name] = init
    for sparse in graph.sparse_initializer:
        counts["bytes"] += _check_tensor(sparse.values, "sparse initializer", limits)
        _check_tensor(sparse.indices, "sparse initializer indices", limits)
        _tensor_elements(sparse.dims, "sparse initializer", limits)
    for node in graph.node:
        counts["nodes"] += 1
        if counts["nodes"] > limits.max_nodes:
            raise BadInputError(f"the model has more than {limits.max_nodes:,} nodes")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                counts["bytes"] += _check_tensor(attr.t, f"node {node.name or node.op_type} attribute", limits)
                if node.op_type == "Constant":
                    for out in node.output:
                        constants[out] = attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                for t in attr.tensors:
                    counts["bytes"] += _check_tensor(t, f"node {node.name or node.op_type} attribute", limits)
            elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                counts["bytes"] += _check_tensor(attr.sparse_tensor.values, "sparse attribute", limits)
            elif attr.type == onnx.AttributeProto.GRAPH:
                _walk_graph(attr.g, limits, depth + 1, counts)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _walk_graph(g, limits, depth + 1, counts)
        # Shape-producing ops whose target shape is a constant: refuse an output bigger than the caps
        # before onnxruntime ever allocates it (a ConstantOfShape asking for terabytes).
        if node.op_type in ("ConstantOfShape", "Expand", "Tile", "Reshape") and len(node.input) >= 1:
            shape_input = node.input[0] if node.op_type == "ConstantOfShape" else (
                node.input[1] if len(node.input) > 1 else "")
            tensor = constants.get(shape_input)
            if tensor is not None and node.op_type in ("ConstantOfShape", "Expand") and \
                    _tensor_elements(tensor.dims, "shape", limits) <= 16:
                _check_constant_shape(numpy_helper.to_array(tensor), f"node {node.name or node.op_type} output",
                                      limits)
        if counts["bytes"] > limits.max_initializer_bytes:
            raise BadInputError(f"the model's weights exceed {limits.max_initializer_bytes / 2**20:,.0f} MiB")


def validate_onnx_bytes(data: bytes, limits: LoadLimits | None = None, *, what: str = "file"):
    """Parse and check an ONNX model held in memory, without following external data.

    Args:
        data: the serialized model.
        limits: caps on size, nodes and tensor sizes.
        what: how to name the input in errors.

    Returns:
        The validated ``onnx.ModelProto``.

    Raises:
        BadInputError: unreadable, unsafe or over a cap; the message says which.
    """
    import onnx
    from google.protobuf.message import DecodeError

    limits = limits or LoadLimits.from_env()
    if len(data) == 0:
        raise BadInputError(f"{what} is empty")
    if len(data) > limits.max_file_bytes:
        raise BadInputError(f"{what} is {len(data) / 2**20:,.1f} MiB; the limit is "
                            f"{limits.max_file_bytes / 2**20:,.0f} MiB")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise BadInputError(f"{what} is not an ONNX model (protobuf parse failed: {exc})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise BadInputError(f"{what} is not an ONNX model (no graph with nodes)")
    if proto.ir_version <= 0 or not proto.opset_import:
        raise BadInputError(f"{what} is not an ONNX model (no IR version or opset)")
    counts = {"nodes": 0, "bytes": 0}
    _walk_graph(proto.graph, limits, 0, counts)
    for function in proto.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    _check_tensor(attr.t, f"function {function.name} attribute", limits)
            counts["nodes"] += 1
        if counts["nodes"] > limits.max_nodes:
            raise BadInputError(f"the model has more than {limits.max_nodes:,} nodes")
    for value in list(proto.graph.input) + list(proto.graph.output):
        if value.type.HasField("tensor_type"):
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim if d.HasField("dim_value")]
            _tensor_elements(dims, f"graph input/output {value.name!r}", limits)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, Exception) as exc:  # noqa: BLE001 - the checker raises several types
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise BadInputError(f"{what} failed the ONNX checker: {message[:300]}") from None
    return proto


def read_capped(path: Path, limits: LoadLimits) -> bytes:
    """Read a regular file, refusing directories, devices and files over the cap."""
    try:
        st = path.stat()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{path} is not a regular file")
    if st.st_size > limits.max_file_bytes:
        raise BadInputError(f"{path.name} is {st.st_size / 2**20:,.1f} MiB; the limit is "
                            f"{limits.max_file_bytes / 2**20:,.0f} MiB")
    with open(path, "rb") as fh:
        return fh.read(limits.max_file_bytes + 1)


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
    proto.producer_name = "featherweight"
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
    import torch

    sample = _sample(name)
    if getattr(sample, "load_model", None) is not None:  # samples with their own loader (text models)
        return sample.load_model()
    module = load_sample_module(name)
    digest = hashlib.sha256(sample.weights_path.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"{name}-{digest}-torch{torch.__version__}-op{EXPORT_OPSET}.onnx"
    if cached.exists():
        proto = onnx.load_from_string(cached.read_bytes())
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

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"{source} does not hold a plain state dict of tensors; save model.state_dict(), "
                            "or export the model to ONNX")
    for name, sample in SAMPLE_MODELS.items():
        if sample.extra:
            continue
        reference = sample.build(1.0).state_dict()
        if set(reference) == set(state) and all(reference[k].shape == state[k].shape for k in state):
            module = sample.build(1.0)
            module.load_state_dict(state)
            module.eval()
            proto = export_onnx(module, torch.zeros((1, *sample.input_shape)))
            return Model(source, proto, module, architecture=name)
    raise UnsupportedModelError(f"{source}: the weights match no bundled architecture "
                                f"({', '.join(SAMPLE_MODELS)}); for any other model upload an ONNX export")


def _load_torch_weights(data: bytes, path: Path) -> Model:
    import torch

    if data[:2] == b"PK":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            raise BadInputError(f"{path.name} is a damaged zip archive") from None
        if any(n.endswith("/code/") or "/code/" in n or n.endswith("constants.pkl") for n in names):
            raise BadInputError(f"{path.name} is a TorchScript archive, which is code and is refused; "
                                "export it to ONNX instead")
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
            raise BadInputError(f"{path.name} is a torch.export program, which is refused; export it to ONNX")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises many types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise BadInputError(f"{path.name} holds pickled Python objects, not just tensors; it is refused "
                                "(save model.state_dict(), or export to ONNX / torch.export)") from None
        raise BadInputError(f"{path.name} is not a readable torch weights file: {first}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return _state_dict_into_sample(state, path.name)


def _load_safetensors(data: bytes, path: Path) -> Model:
    from safetensors.torch import load as load_safetensors

    try:
        state = load_safetensors(data)
    except Exception as exc:  # noqa: BLE001 - the parser raises its own error types
        raise BadInputError(f"{path.name} is not a valid safetensors file: {str(exc)[:200]}") from None
    return _state_dict_into_sample(state, path.name)


MODEL_SUFFIXES = (".onnx", ".safetensors", ".pt", ".pth")


def load_model(spec: str, limits: LoadLimits | None = None) -> Model:
    """Load a model from ``sample:NAME`` or a file path (.onnx, .safetensors, .pt, .pth).

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
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise BadInputError(f"{path.name}: unsupported model file type {suffix or '(none)'!r}; "
                            f"allowed: {', '.join(MODEL_SUFFIXES)}")
    data = read_capped(path, limits)
    return load_model_bytes(data, path.name, limits)


def load_model_bytes(data: bytes, filename: str, limits: LoadLimits | None = None) -> Model:
    """Load a model from bytes, choosing the parser by the file name's extension (uploads)."""
    limits = limits or LoadLimits.from_env()
    path = Path(filename)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        proto = validate_onnx_bytes(data, limits, what=path.name)
        return Model(filename, proto)
    if len(data) == 0:
        raise BadInputError(f"{path.name} is empty")
    if len(data) > limits.max_file_bytes:
        raise BadInputError(f"{path.name} is over the {limits.max_file_bytes / 2**20:,.0f} MiB limit")
    if suffix == ".safetensors":
        return _load_safetensors(data, path)
    if suffix in (".pt", ".pth"):
        return _load_torch_weights(data, path)
    raise BadInputError(f"{path.name}: unsupported model file type {suffix or '(none)'!r}; "
                        f"allowed: {', '.join(MODEL_SUFFIXES)}")


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
    }
    return card


def capabilities(model: Model) -> dict:
    """Which techniques apply to this model, each with a short reason."""
    ops = {n.op_type for n in model.onnx_model.graph.node}
    has_torch = model.torch_module is not None
    return {
        "quantize": "yes: dynamic, static, fp16" + (", int4 (MatMul weights)" if "MatMul" in ops or "Gemm" in ops
                                                      else "; int4 needs MatMul/Gemm weights"),
        "prune": ("yes: structured, unstructured, 2:4" if has_torch
                  else "unstructured on the ONNX weights; structured pruning needs a torch model"),
        "distill": ("yes" if task_of(model) == "classification"
                    else "needs a classifier (one 2-D logits output)"),
    }
