"""Decoder checkpoints: a zipped Hugging Face folder of a Llama / Qwen / Phi / Gemma-class causal LM, checked as data.

Nothing in a checkpoint is executed, and nothing is written where other uploads live until all of it is checked.
From the zip itself: flat names only, no duplicates, sizes and ratios capped, every entry's bytes apart from every
other's (an overlapping zip makes 62 entries of one block; Python 3.11's zipfile does not notice), weights as
safetensors only (a pickle-only checkpoint such as ``pytorch_model.bin`` is refused), ``config.json`` and
``tokenizer_config.json`` parsed as JSON and refused when they ask for remote code (``auto_map``), an architecture
transformers does not ship natively or onnxruntime-genai's builder cannot build, and each safetensors header
(read from the zip's stream: dtypes, shapes, offsets inside the file, the tensor and header caps). Only then is it
extracted into a staging folder of its own (removed on any refusal or error, a bad CRC included), checked again on
disk and moved into the cache, which is capped (least recently used first out, never a checkpoint a live worker
holds). The tokenizer is read only as ``tokenizer.json`` (the `tokenizers` library parses it as data). Like
`core.io.model`, this parses in the calling process: user files go through a worker (`core.jobs.queue`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import BadInputError, UnsupportedModelError
from core.io.disk import DiskLimits, evict_least_recent, mark_used, staging_folder, sweep_staging, tree_bytes
from core.io.safetensors_header import (DTYPE_BYTES, MAX_HEADER_BYTES, MAX_TENSORS, check_header, check_header_size,
                                        header_length)

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


def refuse_remote_code(config, what: str, file: str = "config.json") -> None:
    """Refuse a config (config.json, tokenizer_config.json) that asks for code from the checkpoint.

    Raises:
        BadInputError: ``auto_map`` or ``trust_remote_code`` in it, or it is not a JSON object.
    """
    if not isinstance(config, dict):
        raise BadInputError(f"{what}: {file} is not a JSON object")
    if "auto_map" in config or config.get("trust_remote_code"):
        auto_map = config.get("auto_map")
        mapped = ", ".join(sorted(str(k) for k in auto_map)) if isinstance(auto_map, dict) and auto_map \
            else "trust_remote_code"
        raise BadInputError(f"{what}: {file} asks for remote code (auto_map: {mapped[:80]}); Featherweight "
                            "never runs code from a checkpoint (trust_remote_code is off)")


def check_config(config, what: str) -> str:
    """Refuse a config.json that asks for remote code or names an architecture the builder cannot build.

    Returns:
        The architecture name.

    Raises:
        BadInputError: remote code asked for (``auto_map``), or not a config at all.
        UnsupportedModelError: an architecture outside SUPPORTED_ARCHITECTURES.
    """
    refuse_remote_code(config, what)
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise BadInputError(f"{what}: config.json names no architecture (an 'architectures' list); "
                            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    if architectures[0] not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(f"{what}: architecture {architectures[0][:60]!r} is not supported; supported: "
                                    f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    return architectures[0]


def _read_json(data: bytes, what: str, file: str):
    if len(data) > MAX_JSON_BYTES:
        raise BadInputError(f"{what}: {file} is over {MAX_JSON_BYTES // 2**20} MiB")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInputError(f"{what}: {file} is not valid JSON") from None


def _check_tensors(found: list, what: str, file: str) -> None:
    for name, dtype, _ in found:
        if dtype not in BUILDER_DTYPES:
            raise BadInputError(f"{what}: {file}: tensor {name[:60]!r} is {dtype}, which the model "
                                f"builder does not read; allowed: {', '.join(sorted(BUILDER_DTYPES))}")


def open_folder(folder: str | Path, source: str, *, max_elements: int = 2**31, max_tensors: int = MAX_TENSORS,
                max_header_bytes: int = MAX_HEADER_BYTES) -> DecoderCheckpoint:
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
    if (folder / "config.json").stat().st_size > MAX_JSON_BYTES:
        raise BadInputError(f"{source}: config.json is over {MAX_JSON_BYTES // 2**20} MiB")
    config = _read_json((folder / "config.json").read_bytes(), source, "config.json")
    architecture = check_config(config, source)
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        if tokenizer_config.stat().st_size > MAX_JSON_BYTES:
            raise BadInputError(f"{source}: tokenizer_config.json is over {MAX_JSON_BYTES // 2**20} MiB")
        refuse_remote_code(_read_json(tokenizer_config.read_bytes(), source, "tokenizer_config.json"), source,
                           "tokenizer_config.json")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise BadInputError(f"{source}: no *.safetensors weights (a pickle-only checkpoint is refused: convert "
                            "pytorch_model.bin to model.safetensors)")
    tensors: list[tuple] = []
    for path in weights:
        with open(path, "rb") as fh:  # only the header is read: the weights stay on disk
            head = fh.read(8)
            size = path.stat().st_size
            check_header_size(head, size, f"{source}: {path.name}", max_header_bytes=max_header_bytes,
                              max_tensors=max_tensors)
            head += fh.read(header_length(head))
        found = check_header(head, size, f"{source}: {path.name}", max_elements=max_elements,
                             max_header_bytes=max_header_bytes, max_tensors=max_tensors - len(tensors))
        _check_tensors(found, source, path.name)
        tensors += found
    params = sum(math.prod(shape) for _, _, shape in tensors)
    if not (folder / "tokenizer.json").is_file():
        raise BadInputError(f"{source}: no tokenizer.json (the fast-tokenizer file); Featherweight reads only "
                            "that form of tokenizer, as data")
    if (folder / "tokenizer.json").stat().st_size > MAX_JSON_BYTES:
        raise BadInputError(f"{source}: tokenizer.json is over {MAX_JSON_BYTES // 2**20} MiB")
    return DecoderCheckpoint(source, folder, architecture, params, config, tensors=tuple(tensors))


# Compression methods a checkpoint zip may use: stored and deflate (what `zip` and Python write).
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


def check_zip_layout(data: bytes, archive: zipfile.ZipFile, entries: list, what: str) -> None:
    """Every entry's local header and data lie inside the archive, before its central directory, and apart from
    every other entry's; the local header names the same file as the directory.

    Python 3.11's zipfile checks none of this (3.12 added an overlap check): a 60 KB zip of 62 entries that all
    decompress one shared 8 MiB block extracted to ~500 MiB.

    Raises:
        BadInputError: overlapping entries, an entry outside the archive, a mismatched or missing local header,
            an encrypted entry, or a compression method other than stored / deflate.
    """
    end_of_entries = archive.start_dir
    spans = []
    for entry in entries:
        label = entry.filename[:80]
        if entry.flag_bits & 0x1:
            raise BadInputError(f"{what}: {label} is encrypted; zip the checkpoint without a password")
        if entry.compress_type not in ZIP_METHODS:
            raise BadInputError(f"{what}: {label} uses zip compression method {entry.compress_type}; allowed: "
                                f"{', '.join(ZIP_METHODS.values())}")
        start = entry.header_offset
        if start < 0 or start + 30 > end_of_entries or data[start:start + 4] != b"PK\x03\x04":
            raise BadInputError(f"{what}: {label} has no local header where the directory says; the zip is damaged")
        name_length, extra_length = struct.unpack_from("<HH", data, start + 26)
        name = data[start + 30:start + 30 + name_length]
        if name != entry.orig_filename.encode("utf-8" if entry.flag_bits & 0x800 else "cp437", "replace"):
            raise BadInputError(f"{what}: {label}'s local header names another file; the zip is damaged or crafted")
        end = start + 30 + name_length + extra_length + entry.compress_size
        if entry.flag_bits & 0x8:  # a data descriptor follows the data: at least 12 bytes
            end += 12
        if end > end_of_entries:
            raise BadInputError(f"{what}: {label} runs past the end of the zip's entries; the zip is damaged")
        spans.append((start, end, label))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise BadInputError(f"{what}: entries {first!r} and {second!r} overlap (share bytes), a trick of zip "
                                "bombs; zip the checkpoint folder again")


def _zip_header(archive: zipfile.ZipFile, entry, what: str, inner: str, max_header_bytes: int,
                max_tensors: int) -> bytes:
    """A safetensors entry's first 8 + header-length bytes, read from the zip's stream (capped before reading)."""
    with archive.open(entry) as stream:
        head = stream.read(8)
        length = check_header_size(head, entry.file_size, f"{what}: {inner}", max_header_bytes=max_header_bytes,
                                   max_tensors=max_tensors)
        return head + stream.read(length)


def _in_use(folder: Path) -> bool:
    """Whether a live process holds `folder` (a shared lock on its marker; see `hold_checkpoint`)."""
    try:
        with open(folder / COMPLETE_MARKER, "rb") as marker:
            fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(marker, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


_HELD: list = []  # open markers this process holds (shared locks), released when the process exits


def hold_checkpoint(folder: Path) -> None:
    """Keep the cache from evicting `folder` while this process lives: a worker (an inspect, a job) uses an
    extracted checkpoint until it exits, and workers are short-lived processes."""
    try:
        marker = open(Path(folder) / COMPLETE_MARKER, "rb")  # noqa: SIM115 - held open on purpose
        fcntl.flock(marker, fcntl.LOCK_SH)
        _HELD.append(marker)
    except OSError:
        pass
    mark_used(Path(folder))


def _make_room(extract_root: Path, incoming: int, cap: int, what: str) -> None:
    """Evict least-recently-used checkpoints so that `incoming` more bytes fit under `cap`.

    Raises:
        BadInputError: the checkpoint alone is over the cap, or the rest is held by running workers.
    """
    if incoming > cap:
        raise BadInputError(f"{what} extracts to {incoming / 2**20:,.0f} MiB; this server keeps at most "
                            f"{cap / 2**20:,.0f} MiB of checkpoints (FEATHERWEIGHT_DECODER_CACHE_MB)")
    cached = [p for p in extract_root.iterdir() if not p.name.startswith(".") and p.is_dir()]
    evict_least_recent(cached, cap - incoming, in_use=_in_use)
    held = sum(tree_bytes(p) for p in cached if p.exists())
    if held + incoming > cap:
        raise BadInputError(f"the server's checkpoint cache is full ({held / 2**20:,.0f} of {cap / 2**20:,.0f} MiB "
                            "in use by running jobs); try again when they finish")


def load_decoder_bytes(data: bytes, filename: str, extract_root: Path, *, max_bytes: int,
                       max_elements: int = 2**31, max_tensors: int = MAX_TENSORS,
                       max_header_bytes: int = MAX_HEADER_BYTES, disk: DiskLimits | None = None) -> DecoderCheckpoint:
    """Check a zipped checkpoint folder and extract it, flat, under `extract_root`/<content digest>.

    Args:
        data: the zip's bytes.
        filename: the uploaded name (for messages).
        extract_root: where extracted checkpoints live (``core.io.model.cache_dir() / "decoders"``).
        max_bytes: cap on the total uncompressed size (the upload limit).
        max_elements: cap on the elements of one tensor.
        max_tensors / max_header_bytes: caps on the tensors of the whole checkpoint and on one header's size,
            checked before any header is parsed.
        disk: the cache's cap (default `DiskLimits.from_env()`).

    Raises:
        BadInputError: not a zip, nested or unsafe names, over a cap, overlapping entries, a bad CRC, pickles,
            code, remote code, bad headers, a missing tokenizer.
        UnsupportedModelError: an architecture the builder cannot build.
    """
    what = Path(filename).name
    disk = disk or DiskLimits.from_env()
    sweep_staging(extract_root)  # a worker killed mid-extraction could not remove its own
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [e for e in archive.infolist() if not e.is_dir()]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error):
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
        if inner in names:
            raise BadInputError(f"{what} holds {inner} twice; zip the checkpoint folder again")
        total += entry.file_size
        if entry.file_size > MAX_RATIO * max(1, entry.compress_size) + 2**20:
            raise BadInputError(f"{what}: {inner} expands {entry.file_size / max(1, entry.compress_size):,.0f}x; "
                                f"the limit is {MAX_RATIO}x")
        names[inner] = entry
    if total > max_bytes:
        raise BadInputError(f"{what} expands to {total / 2**20:,.1f} MiB; the limit is {max_bytes / 2**20:,.0f} MiB")
    check_zip_layout(data, archive, entries, what)
    if "config.json" not in names:
        raise BadInputError(f"{what} has no config.json at the top of its folder")

    def read(inner: str) -> bytes:
        entry = names[inner]
        if entry.file_size > MAX_JSON_BYTES:
            raise BadInputError(f"{what}: {inner} is over {MAX_JSON_BYTES // 2**20} MiB")
        return _read_entry(archive, entry, what, inner)

    # Refuse remote code and a missing tokenizer before a single weight is written to disk.
    check_config(_read_json(read("config.json"), what, "config.json"), what)
    if "tokenizer_config.json" in names:
        refuse_remote_code(_read_json(read("tokenizer_config.json"), what, "tokenizer_config.json"), what,
                           "tokenizer_config.json")
    weights = sorted(inner for inner in names if inner.endswith(".safetensors"))
    if not weights:
        raise BadInputError(f"{what}: no *.safetensors weights (a pickle-only checkpoint is refused: convert "
                            "pytorch_model.bin to model.safetensors)")
    if "tokenizer.json" not in names:
        raise BadInputError(f"{what}: no tokenizer.json (the fast-tokenizer file); Featherweight reads only "
                            "that form of tokenizer, as data")
    declared = 0
    for inner in weights:
        entry = names[inner]
        try:
            head = _zip_header(archive, entry, what, inner, max_header_bytes, max_tensors - declared)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
            raise BadInputError(f"{what}: {inner} is damaged (it does not decompress); zip the folder again") \
                from None
        found = check_header(head, entry.file_size, f"{what}: {inner}", max_elements=max_elements,
                             max_header_bytes=max_header_bytes, max_tensors=max_tensors - declared)
        _check_tensors(found, what, inner)
        declared += len(found)

    extract_root = Path(extract_root)
    folder = extract_root / hashlib.sha256(data).hexdigest()[:20]
    if not (folder / COMPLETE_MARKER).exists():
        with staging_folder(extract_root) as staging:
            for inner, entry in names.items():
                _extract(archive, entry, staging / inner, what, inner)
            checked = open_folder(staging, what, max_elements=max_elements, max_tensors=max_tensors,
                                  max_header_bytes=max_header_bytes)
            (staging / COMPLETE_MARKER).write_text("ok", encoding="utf-8")
            _make_room(extract_root, tree_bytes(staging), disk.decoder_cache_bytes, what)
            try:
                os.replace(staging, folder)
            except OSError:  # another worker extracted the same bytes first; ours is removed on the way out
                pass
        if not (folder / COMPLETE_MARKER).exists():
            raise BadInputError(f"{what}: the checkpoint could not be stored; try again")
        hold_checkpoint(folder)
        return dataclasses.replace(checked, folder=folder)
    hold_checkpoint(folder)
    return open_folder(folder, what, max_elements=max_elements, max_tensors=max_tensors,
                       max_header_bytes=max_header_bytes)


def _read_entry(archive: zipfile.ZipFile, entry, what: str, inner: str) -> bytes:
    try:
        with archive.open(entry) as stream:
            content = stream.read(entry.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BadInputError(f"{what}: {inner} {_damage(exc)}; zip the checkpoint folder again") from None
    if len(content) > entry.file_size:
        raise BadInputError(f"{what}: {inner} is larger than its zip entry says")
    return content


def _damage(exc: BaseException) -> str:
    return "fails its CRC-32 check (the zip is damaged)" if "CRC" in str(exc) else "does not decompress"


def _extract(archive: zipfile.ZipFile, entry, target: Path, what: str, inner: str) -> None:
    """Copy one entry to `target`, never more than its declared size; a bad CRC or a broken stream refuses it."""
    try:
        with archive.open(entry) as src, open(target, "wb") as dst:
            copied = 0
            while chunk := src.read(2**20):
                copied += len(chunk)
                if copied > entry.file_size:  # a header that lies about the size
                    raise BadInputError(f"{what}: {inner} is larger than its zip entry says")
                dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise BadInputError(f"{what}: {inner} {_damage(exc)}; zip the checkpoint folder again") from None


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


def forward_inputs(model_dir: str | Path, input_specs, *, tokens: int = 16, past: int = 0) -> dict:
    """One forward pass's inputs for a built decoder's graph, as onnxruntime-genai feeds it: `tokens` token ids at
    batch 1 after a KV cache of `past` tokens (0: a prompt's prefill; 1 token after N: one decode step), an all-ones
    attention mask over both, and the KV heads and head size from genai_config.json. For profiling the graph outside
    the generator (the Graph page, Insight): the cache holds zeros, as timing does not depend on its values.

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
            feed[spec.name] = np.ones((1, past + tokens), dtype=dtype)
        elif spec.name == "position_ids":
            feed[spec.name] = np.arange(past, past + tokens, dtype=dtype)[None, :]
        elif spec.name.startswith("past_key_values"):
            feed[spec.name] = np.zeros((1, kv_heads, past, head_size), dtype=dtype)
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
           "ZIP_METHODS", "check_config", "check_zip_layout", "export_zip", "forward_inputs", "hold_checkpoint",
           "load_decoder_bytes", "open_folder", "refuse_remote_code", "weights_bytes"]
