"""Decoder checkpoints: a zipped Hugging Face folder of a Llama / Qwen / Phi / Gemma-class causal LM, checked as data.

Nothing in a checkpoint is executed. The zip's entries are checked before anything is extracted (flat names only,
sizes capped, no compression bombs); weights must be safetensors (a pickle-only checkpoint such as
``pytorch_model.bin`` is refused); ``config.json`` is parsed as JSON and refused when it asks for remote code
(``auto_map``), names an architecture transformers does not ship natively, or one onnxruntime-genai's model builder
cannot build; each safetensors header is checked (dtypes, shapes, offsets inside the file). The tokenizer is
read only as ``tokenizer.json`` (the `tokenizers` library parses it as data). Like `core.io.model`, this parses
in the calling process: user files go through a worker (`core.jobs.queue`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import BadInputError, UnsupportedModelError
from core.io.safetensors_header import DTYPE_BYTES, MAX_HEADER, check_header, header_length

DECODER_SUFFIX = ".zip"

# Causal-LM architectures transformers implements natively and onnxruntime-genai's builder converts
# (onnxruntime_genai/models/builder.py, create_model's dispatch), restricted to those that
# tests/test_decoder_architectures.py builds at int4 and int8 and checks against torch (SmolLM / SmolLM2
# checkpoints are LlamaForCausalLM with tied embeddings). Gemma2 is left out: its sliding-window attention needs a
# KV cache as long as the window (4,096) in every generator, which onnxruntime-genai 0.18 refuses for the short
# generators a measurement uses.
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                           "PhiForCausalLM", "Phi3ForCausalLM", "GemmaForCausalLM", "SmolLM3ForCausalLM",
                           "GraniteForCausalLM", "OlmoForCausalLM")

# Files a checkpoint folder may hold. Anything else is refused by name, so nothing unexpected rides along.
DATA_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "added_tokens.json", "model.safetensors.index.json", "vocab.json",
              "merges.txt", "tokenizer.model", "README.md", "LICENSE", "LICENSE.txt", ".gitattributes")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CODE_SUFFIXES = (".py", ".pyc", ".so", ".dll", ".dylib", ".sh")
MAX_JSON_BYTES = 32 * 2**20  # config / tokenizer JSON; a real 150k-token tokenizer.json is ~10 MB
MAX_ENTRIES = 64
COMPLETE_MARKER = ".complete"  # written last into an extracted folder, so a half-extracted one is never used
MAX_RATIO = 200  # uncompressed / compressed; safetensors of random or trained weights compress < 1.2x
BUILDER_DTYPES = set(DTYPE_BYTES) - {"F8_E5M2", "F8_E4M3"}  # what onnxruntime-genai's builder reads from safetensors

@dataclass(frozen=True)
class TokenInput:
    """The one input a decoder's data binds to (core.io.data reads name / shape / dtype, as of a TensorSpec)."""

    name: str = "input_ids"
    shape: tuple = ("batch", "sequence")
    dtype: str = "int64"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class DecoderCheckpoint:
    """A checked Hugging Face causal-LM folder on disk: what the decoder pipeline builds its variants from."""

    source: str  # what the user named: sample:tiny-lm, or the uploaded file's name
    folder: Path  # holds config.json, *.safetensors, tokenizer.json
    architecture: str  # config.json's architectures[0], e.g. LlamaForCausalLM
    params: int  # weights counted from the safetensors headers
    config: dict = field(default_factory=dict)
    notes: tuple = ()
    tensors: tuple = ()  # (name, safetensors dtype, shape) of every weight, from the headers

    def layer_table(self) -> list[dict]:
        """One row per weight tensor, as `core.io.graph.layer_table` has one per ONNX node that owns weights:
        name, kind (read from the name and rank: embedding / linear / norm or bias), params and share of bytes."""
        sizes = [math.prod(shape) * DTYPE_BYTES[dtype] for _, dtype, shape in self.tensors]
        total = sum(sizes) or 1
        rows = []
        for (name, dtype, shape), nbytes in zip(self.tensors, sizes):
            kind = ("embedding" if "embed" in name else "linear" if len(shape) == 2 else
                    "norm / bias" if len(shape) == 1 else f"{len(shape)}-d")
            rows.append({"name": name, "type": kind, "params": math.prod(shape), "bytes": nbytes,
                         "share": nbytes / total, "dtype": dtype, "shape": "x".join(map(str, shape))})
        return rows

    @property
    def inputs(self) -> tuple:
        """Token ids, batch and sequence axes free: what sample:tiny-lm-text binds to."""
        return (TokenInput(),)

    @property
    def outputs(self) -> tuple:
        return (TokenInput("logits", ("batch", "sequence", "vocab"), "float32"),)

    def card(self) -> dict:
        """Facts for the model card and ``featherweight inspect``."""
        keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "max_position_embeddings")
        return {"source": self.source, "task": "text-generation", "format": "Hugging Face decoder (safetensors)",
                "architecture": self.architecture, "params": self.params, "size_bytes": weights_bytes(self.folder),
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "op_types": {}, "layers": self.layer_table(),
                "capabilities": {"quantize": "int4 (mode int4) and int8 (mode dynamic) weight-only MatMulNBits, "
                                             "built by onnxruntime-genai's model builder",
                                 "prune": "not offered for decoders", "distill": "not offered for decoders"},
                "config": {k: self.config.get(k) for k in keys if k in self.config}, "notes": list(self.notes)}


def weights_bytes(folder: Path) -> int:
    """Bytes of the checkpoint's safetensors files."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def _refuse_name(name: str, what: str) -> None:
    base = name.rsplit("/", 1)[-1]
    lower = base.lower()
    if lower.endswith(CODE_SUFFIXES):
        raise BadInputError(f"{what} holds {base}, which is code; Featherweight never runs code from a checkpoint "
                            "(no trust_remote_code): upload config.json, *.safetensors and tokenizer files only")
    if lower.endswith(PICKLE_SUFFIXES):
        raise BadInputError(f"{what} holds {base}, a pickle; only safetensors weights are loaded: convert it "
                            "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))")
    if not (lower.endswith(".safetensors") or base in DATA_FILES):
        raise BadInputError(f"{what} holds {base!r}, which is not part of a checkpoint; allowed: "
                            f"*.safetensors, {', '.join(DATA_FILES[:7])} and the like")


def check_config(config, what: str) -> str:
    """Refuse a config.json that asks for remote code or names an architecture the builder cannot build.

    Returns:
        The architecture name.

    Raises:
        BadInputError: remote code asked for (``auto_map``), or not a config at all.
        UnsupportedModelError: an architecture outside SUPPORTED_ARCHITECTURES.
    """
    if not isinstance(config, dict):
        raise BadInputError(f"{what}: config.json is not a JSON object")
    if "auto_map" in config or config.get("trust_remote_code"):
        mapped = ", ".join(sorted(config.get("auto_map") or {})) or "trust_remote_code"
        raise BadInputError(f"{what}: config.json asks for remote code (auto_map: {mapped[:80]}); Featherweight "
                            "never runs code from a checkpoint (trust_remote_code is off)")
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise BadInputError(f"{what}: config.json names no architecture (an 'architectures' list); "
                            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    if architectures[0] not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(f"{what}: architecture {architectures[0][:60]!r} is not supported; supported: "
                                    f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    return architectures[0]


def open_folder(folder: str | Path, source: str, *, max_elements: int = 2**31) -> DecoderCheckpoint:
    """Check a checkpoint folder already on disk (a sample's, or an extracted upload).

    Raises:
        BadInputError: missing config.json / tokenizer.json / safetensors, remote code, a pickle, a bad header.
        UnsupportedModelError: an architecture the builder cannot build.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise BadInputError(f"{source}: no config.json in the checkpoint folder")
    for path in folder.iterdir():
        if path.name != COMPLETE_MARKER:
            _refuse_name(path.name, source)
    config_bytes = (folder / "config.json").read_bytes()
    if len(config_bytes) > MAX_JSON_BYTES:
        raise BadInputError(f"{source}: config.json is {len(config_bytes):,} bytes; the limit is {MAX_JSON_BYTES:,}")
    try:
        config = json.loads(config_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInputError(f"{source}: config.json is not valid JSON") from None
    architecture = check_config(config, source)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise BadInputError(f"{source}: no *.safetensors weights (a pickle-only checkpoint is refused: convert "
                            "pytorch_model.bin to model.safetensors)")
    tensors: list[tuple] = []
    for path in weights:
        with open(path, "rb") as fh:  # only the header is read: the weights stay on disk
            head = fh.read(8)
            head += fh.read(min(header_length(head), MAX_HEADER))
        found = check_header(head, path.stat().st_size, f"{source}: {path.name}", max_elements=max_elements)
        for name, dtype, _ in found:
            if dtype not in BUILDER_DTYPES:
                raise BadInputError(f"{source}: {path.name}: tensor {name[:60]!r} is {dtype}, which the model "
                                    f"builder does not read; allowed: {', '.join(sorted(BUILDER_DTYPES))}")
        tensors += found
    params = sum(math.prod(shape) for _, _, shape in tensors)
    if not (folder / "tokenizer.json").is_file():
        raise BadInputError(f"{source}: no tokenizer.json (the fast-tokenizer file); Featherweight reads only "
                            "that form of tokenizer, as data")
    if (folder / "tokenizer.json").stat().st_size > MAX_JSON_BYTES:
        raise BadInputError(f"{source}: tokenizer.json is over {MAX_JSON_BYTES // 2**20} MiB")
    return DecoderCheckpoint(source, folder, architecture, params, config, tensors=tuple(tensors))


def load_decoder_bytes(data: bytes, filename: str, extract_root: Path, *, max_bytes: int,
                       max_elements: int = 2**31) -> DecoderCheckpoint:
    """Check a zipped checkpoint folder and extract it, flat, under `extract_root`/<content digest>.

    Args:
        data: the zip's bytes.
        filename: the uploaded name (for messages).
        extract_root: where extracted checkpoints live (``core.io.model.cache_dir() / "decoders"``).
        max_bytes: cap on the total uncompressed size (the upload limit).
        max_elements: cap on the elements of one tensor.

    Raises:
        BadInputError: not a zip, nested or unsafe names, over a cap, pickles, code, remote code, bad headers.
        UnsupportedModelError: an architecture the builder cannot build.
    """
    what = Path(filename).name
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [e for e in archive.infolist() if not e.is_dir()]
    except (zipfile.BadZipFile, ValueError, OSError):
        raise BadInputError(f"{what} is not a zip archive (zip a Hugging Face checkpoint folder)") from None
    if not entries:
        raise BadInputError(f"{what} is an empty zip")
    if len(entries) > MAX_ENTRIES:
        raise BadInputError(f"{what} holds {len(entries)} files; the limit is {MAX_ENTRIES}")
    prefix = _common_folder(entries)
    names = {}
    total = 0
    for entry in entries:
        inner = entry.filename[len(prefix):]
        if "/" in inner or "\\" in inner or inner.startswith(".") and inner != ".gitattributes" or not inner:
            raise BadInputError(f"{what}: {entry.filename[:80]!r} is not a file at the checkpoint folder's top "
                                "level; zip one flat folder")
        _refuse_name(inner, what)
        total += entry.file_size
        if entry.file_size > MAX_RATIO * max(1, entry.compress_size) + 2**20:
            raise BadInputError(f"{what}: {inner} expands {entry.file_size / max(1, entry.compress_size):,.0f}x; "
                                f"the limit is {MAX_RATIO}x")
        names[inner] = entry
    if total > max_bytes:
        raise BadInputError(f"{what} expands to {total / 2**20:,.1f} MiB; the limit is {max_bytes / 2**20:,.0f} MiB")
    if "config.json" not in names:
        raise BadInputError(f"{what} has no config.json at the top of its folder")
    config_entry = names["config.json"]
    if config_entry.file_size > MAX_JSON_BYTES:
        raise BadInputError(f"{what}: config.json is over {MAX_JSON_BYTES // 2**20} MiB")
    try:
        config = json.loads(archive.read(config_entry).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInputError(f"{what}: config.json is not valid JSON") from None
    check_config(config, what)  # refuse remote code before a single weight is written to disk
    folder = Path(extract_root) / hashlib.sha256(data).hexdigest()[:20]
    if not (folder / COMPLETE_MARKER).exists():
        staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        staging.mkdir(parents=True, exist_ok=True)
        for inner, entry in names.items():
            with archive.open(entry) as src, open(staging / inner, "wb") as dst:
                copied = 0
                while chunk := src.read(2**20):
                    copied += len(chunk)
                    if copied > entry.file_size:  # a header that lies about the size
                        raise BadInputError(f"{what}: {inner} is larger than its zip entry says")
                    dst.write(chunk)
        (staging / COMPLETE_MARKER).write_text("ok", encoding="utf-8")
        try:
            os.replace(staging, folder)
        except OSError:  # another worker extracted the same bytes first
            pass
    return open_folder(folder, what, max_elements=max_elements)


# What a built decoder folder holds that onnxruntime-genai reads: the graph, its weights, the generator's config and
# the tokenizer files the builder copied from the checkpoint.
EXPORT_SUFFIXES = (".onnx", ".onnx.data", ".json", ".txt", ".model")


def export_zip(model_dir: str | Path) -> Path:
    """One ``.zip`` of a built decoder, beside its folder: ``<name>/model.onnx``, its external data,
    ``genai_config.json`` and the tokenizer, which ``onnxruntime_genai.Model(<unzipped name>)`` loads as it is.

    Written once (atomically) and reused while no file of the folder is newer. Weights are stored, not deflated
    (they do not compress); JSON is deflated.

    Returns:
        The zip's path.
    """
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(EXPORT_SUFFIXES)
                   and not p.name.startswith("."))
    if not any(p.name == "genai_config.json" for p in files):
        raise BadInputError(f"{model_dir.name} is not a built decoder (no genai_config.json)")
    target = model_dir.with_name(f"{model_dir.name}.zip")
    newest = max(p.stat().st_mtime for p in files)
    if target.exists() and target.stat().st_mtime >= newest:
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(staging, "w") as archive:
        for path in files:
            packed = zipfile.ZIP_STORED if path.name.endswith((".onnx.data", ".onnx")) else zipfile.ZIP_DEFLATED
            archive.write(path, f"{model_dir.name}/{path.name}", compress_type=packed)
    os.replace(staging, target)
    return target


def prefill_inputs(model_dir: str | Path, input_specs, tokens: int = 16) -> dict:
    """One prompt's inputs for a built decoder's graph, as onnxruntime-genai feeds its first forward pass: `tokens`
    token ids at batch 1, an all-ones attention mask and an empty KV cache (past length 0; the KV heads and head size
    from genai_config.json). For profiling the graph outside the generator (the Graph page).

    Raises:
        BadInputError: the folder has no genai_config.json, or the graph has an input the builder does not write.
    """
    try:
        decoder = json.loads((Path(model_dir) / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
        kv_heads, head_size = int(decoder["num_key_value_heads"]), int(decoder["head_size"])
    except (OSError, ValueError, KeyError, TypeError):
        raise BadInputError(f"{Path(model_dir).name}: no readable genai_config.json beside the decoder") from None
    feed = {}
    for spec in input_specs:
        dtype = np.dtype(spec.dtype) if not str(spec.dtype).startswith("onnx:") else np.dtype("float32")
        if spec.name == "input_ids":
            feed[spec.name] = np.ones((1, tokens), dtype=dtype)
        elif spec.name == "attention_mask":
            feed[spec.name] = np.ones((1, tokens), dtype=dtype)
        elif spec.name == "position_ids":
            feed[spec.name] = np.arange(tokens, dtype=dtype)[None, :]
        elif spec.name.startswith("past_key_values"):
            feed[spec.name] = np.zeros((1, kv_heads, 0, head_size), dtype=dtype)
        else:
            raise BadInputError(f"{Path(model_dir).name}: input {spec.name!r} is not one onnxruntime-genai's builder "
                                "writes (input_ids, attention_mask, position_ids, past_key_values.*)")
    return feed


def _common_folder(entries) -> str:
    """'name/' when every entry sits in one top folder (how `zip -r x.zip name` stores it), else ''."""
    first = entries[0].filename.split("/", 1)
    if len(first) == 2 and all(e.filename.startswith(first[0] + "/") for e in entries):
        return first[0] + "/"
    return ""


__all__ = ["DECODER_SUFFIX", "DecoderCheckpoint", "EXPORT_SUFFIXES", "TokenInput", "SUPPORTED_ARCHITECTURES",
           "check_config", "export_zip", "prefill_inputs",
           "load_decoder_bytes", "open_folder", "weights_bytes"]
