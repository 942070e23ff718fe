"""Models: loading per format (after the checks of `core.io.safety`), ONNX export of torch modules, opset upgrades.

Loading policy (see SECURITY.md): an ONNX file is parsed as data and checked against size caps before any
tensor is materialised; tensors stored outside the file are refused. Torch weights are read only as plain
tensors into a bundled sample architecture: a .pt / .pth pickle is first scanned statically (every global it
would import must be one a state dict needs), then read with ``torch.load(weights_only=True)``; a safetensors
header is checked before it is parsed. Pickled modules, TorchScript and ``torch.export`` archives are programs
and are refused. These functions parse in the calling process: user files go through `core.jobs.entries`, which
runs them in a worker with resource limits (`core.io.sandbox`). Graph facts live in `core.io.graph`, the model
card in `core.measure.card`.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

from core.errors import BadInputError, FeatherweightError, UnsupportedModelError
from core.format import first_line
from core.io.decoder import DECODER_SUFFIX, DecoderCheckpoint, load_decoder_bytes
from core.io.disk import DiskLimits, evict_least_recent, mark_used
from core.io.files import write_atomic
from core.io.graph import Model, onnx_opset
from core.io.repair import fold_constants, raise_ir_version
from core.io.safety import (EXPORT_HINT, LoadLimits, check_safetensors, check_suffix, read_capped, scan_torch_file,
                            validate_onnx_bytes)

# Opset our exports target; quantization needs >= 13 for per-channel QDQ, int4 MatMulNBits needs >= 21 only in
# the contrib domain (so 17 is fine for every technique here).
EXPORT_OPSET = 17
MIN_OPSET = 13


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
    """Where exported sample ONNX files are cached (FEATHERWEIGHT_CACHE, else ~/.cache/featherweight), absolute."""
    path = Path(os.environ.get("FEATHERWEIGHT_CACHE") or Path.home() / ".cache" / "featherweight")
    path = path.expanduser().absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_export(path: Path) -> bytes | None:
    """A sample's ONNX export from the cache (marked as just used), or None when it is not there."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    mark_used(path)
    return data


def save_export(path: Path, data: bytes) -> None:
    """Write a sample's ONNX export into the cache (atomically), then keep the cache's exports under
    FEATHERWEIGHT_SAMPLE_CACHE_MB, least recently used first out (the one just written stays)."""
    write_atomic(path, data)
    exports = [p for p in path.parent.glob("*.onnx") if p.is_file()]
    evict_least_recent(exports, DiskLimits.from_env().sample_cache_bytes, keep=[path])


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
    stored = cached_export(cached)
    if stored is not None:
        proto = stamp_producer(onnx.load_from_string(stored))  # a cache written before the stamp
    else:
        proto = export_onnx(module, torch.zeros((1, *sample.input_shape)))
        save_export(cached, proto.SerializeToString())
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
                raise BadInputError(f"{source}: the weights do not load into {name}: {first_line(exc)}") from None
            module.eval()
            proto = export_onnx(module, torch.zeros((1, *sample.input_shape)))
            return Model(source, proto, module, architecture=name)
    raise UnsupportedModelError(f"{source}: the weights match no bundled architecture "
                                f"({', '.join(SAMPLE_MODELS)}); for any other model upload an ONNX export")


# ---- pickles: a static look at every global a torch file would import, before torch ever unpickles it


def _load_torch_weights(data: bytes, path: Path, limits: LoadLimits | None = None, *, prescan: bool = True) \
        -> Model:
    """A .pt / .pth holding a plain state dict: statically scanned, then ``torch.load(weights_only=True)``.

    Args:
        prescan: run the static pickle scan first (turned off only by tests of the second layer).
    """
    limits = limits or LoadLimits.from_env()
    what = path.name
    if prescan:
        scan_torch_file(data, what, limits)
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
        raise BadInputError(f"{what} is not a readable torch weights file: {first_line(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return _state_dict_into_sample(state, what)


def _load_safetensors(data: bytes, path: Path, limits: LoadLimits | None = None) -> Model:
    check_safetensors(data, path.name, limits or LoadLimits.from_env())
    from safetensors.torch import load as load_safetensors

    try:
        state = load_safetensors(data)
    except Exception as exc:  # noqa: BLE001 - the parser raises its own error types
        raise BadInputError(f"{path.name} is not a valid safetensors file: {first_line(exc)}") from None
    return _state_dict_into_sample(state, path.name)


def load_model(spec: str, limits: LoadLimits | None = None) -> Model:
    """Load a model from ``sample:NAME`` or a file path (.onnx, .safetensors, .pt, .pth).

    This parses the file in the calling process: for files from users, use ``core.jobs.entries.inspect_isolated`` or a
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
    check_suffix(path.name)
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
    suffix = check_suffix(path.name)
    if suffix == ".onnx":
        proto = validate_onnx_bytes(data, limits, what=path.name)
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
                                      max_elements=limits.max_tensor_elements, max_tensors=limits.max_tensors,
                                      max_header_bytes=limits.max_header_bytes)
        if suffix == ".safetensors":
            return _load_safetensors(data, path, limits)
        return _load_torch_weights(data, path, limits)
    except FeatherweightError:
        raise
    except MemoryError:
        raise BadInputError(f"{path.name} needs more memory to load than this process may use") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes must give our error, never a traceback
        raise BadInputError(f"{path.name} could not be loaded ({exc.__class__.__name__}: {first_line(exc)})") \
            from None


