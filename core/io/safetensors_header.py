"""The one safetensors header check: the 8-byte length and the JSON table of dtype / shape / offsets, read before
anything loads the file, so a header that lies about its tensors is refused before it is trusted.

Used by the single-file weight upload (`core.io.safety.check_safetensors`, the whole file in memory) and by
decoder checkpoints (`core.io.decoder.open_folder`, only the header read from disk).
"""

from __future__ import annotations

import json

from core.errors import BadInputError

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_HEADER = 100 * 2**20  # the format's own cap on the JSON header
# Our caps, checked before the header is parsed (a 30 MiB header of 450,000 tensors took 70 s and 3 GiB to refuse
# after parsing). Real checkpoints stay far below: a Llama-3-70B shard declares ~100 tensors in ~15 KB, a whole
# DeepSeek-V3 (MoE) ~91,000 tensors over 163 files; 65,536 tensors of 200-byte entries make a 13 MB header.
MAX_TENSORS = 65_536
MAX_HEADER_BYTES = 16 * 2**20


def header_length(head: bytes) -> int:
    """The JSON header's length from the file's first 8 bytes (0 when there are fewer)."""
    return int.from_bytes(head[:8], "little") if len(head) >= 8 else 0


def check_header_size(head: bytes, file_size: int, what: str, *, max_header_bytes: int = MAX_HEADER_BYTES,
                      max_tensors: int = MAX_TENSORS) -> int:
    """The caps checked before a header is parsed: its declared length (from the first 8 bytes, so a huge header is
    refused before it is even read) and its tensor count (an upper bound: every entry has one ``"data_offsets"``
    key, and a name that holds the text only makes the count larger). Returns the header's length.

    Raises:
        BadInputError: a length that does not fit the file or passes `max_header_bytes`; more than `max_tensors`.
    """
    if len(head) < 8:
        raise BadInputError(f"{what} is not a valid safetensors file (shorter than its 8-byte header length)")
    length = header_length(head)
    if length > file_size - 8 or length > MAX_HEADER:
        raise BadInputError(f"{what} is not a valid safetensors file (header length {length:,} does not fit)")
    if length > max_header_bytes:
        raise BadInputError(f"{what}: its header is {length / 2**20:,.1f} MiB; the limit is "
                            f"{max_header_bytes / 2**20:,.0f} MiB (FEATHERWEIGHT_MAX_HEADER_MB)")
    if len(head) >= 8 + length:
        tensors = head.count(b'"data_offsets"', 8, 8 + length)
        if tensors > max_tensors:
            raise BadInputError(f"{what} declares {tensors:,} tensors; the limit is {max_tensors:,} "
                                "(FEATHERWEIGHT_MAX_TENSORS)")
    return length


def check_header(head: bytes, file_size: int, what: str, *, max_elements: int,
                 max_dim: int | None = None, max_header_bytes: int = MAX_HEADER_BYTES,
                 max_tensors: int = MAX_TENSORS) -> list[tuple]:
    """Check a safetensors header against the file's size; returns its tensors as ``(name, dtype, shape)`` in
    file order.

    Args:
        head: the file's first ``8 + header length`` bytes (or the whole file).
        file_size: the file's size in bytes: every tensor's bytes must lie inside it.
        what: the file, as error messages name it.
        max_elements: the most elements one tensor may declare (checked as the shape is multiplied out).
        max_dim: the largest single dimension, or None for no separate cap.
        max_header_bytes / max_tensors: caps checked before the header is parsed (`check_header_size`).

    Raises:
        BadInputError: a header that does not parse or fit, an unknown dtype, an impossible shape, a tensor over
            the caps, or a tensor whose bytes are not exactly its shape's inside the file.
    """
    length = check_header_size(head, file_size, what, max_header_bytes=max_header_bytes, max_tensors=max_tensors)
    if len(head) < 8 + length:
        raise BadInputError(f"{what} is not a valid safetensors file (header length {length:,} does not fit)")
    try:
        header = json.loads(head[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInputError(f"{what} is not a valid safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise BadInputError(f"{what} is not a valid safetensors file (its header is not a table)")
    body, tensors = file_size - 8 - length, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        label = f"tensor {str(name)[:60]!r}"
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPE_BYTES:
            raise BadInputError(f"{what}: {label} has no supported dtype; allowed: {', '.join(DTYPE_BYTES)}")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in shape + offsets):
            raise BadInputError(f"{what} is not a valid safetensors file (bad entry for {str(name)[:60]!r})")
        elements = 1
        for d in shape:
            if d < 0 or (max_dim is not None and d > max_dim):
                raise BadInputError(f"{what}: {label} declares an impossible dimension {d}")
            elements *= d
            if elements > max_elements:
                raise BadInputError(f"{what}: {label} declares {elements:,}+ elements; the limit is "
                                    f"{max_elements:,}")
        begin, end = offsets
        if not 0 <= begin <= end <= body or end - begin != elements * DTYPE_BYTES[entry["dtype"]]:
            raise BadInputError(f"{what} is not a valid safetensors file ({label} does not match its bytes)")
        tensors.append((str(name), entry["dtype"], tuple(shape), begin))
    return [t[:3] for t in sorted(tensors, key=lambda t: t[3])]


__all__ = ["DTYPE_BYTES", "MAX_HEADER", "MAX_HEADER_BYTES", "MAX_TENSORS", "check_header", "check_header_size",
           "header_length"]
