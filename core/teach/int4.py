"""Learn: int4 block quantization on a decoder's real weights: block size vs error vs bytes.

Each MatMul weight (a Linear's ``(out, in)`` matrix) is cut along its input axis into blocks of `block_size`
weights; each block gets one float scale, and each weight becomes a 4-bit integer in [-8, 7]. This is the
symmetric round-to-nearest rule of onnxruntime's MatMulNBits quantizer (``matmul_nbits_quantizer.py``: the weight of
largest magnitude maps to -8, ``scale = that weight / -8``), the one onnxruntime-genai's builder applies for
``precision int4``. Smaller blocks follow the weights' local range more closely (less error) but store more scales
(more bytes per weight): 4 bits + 32 bits / block_size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import BadInputError

BLOCK_SIZES = (16, 32, 64, 128, 256)
SCALE_BITS = 32  # one float32 scale per block (symmetric: no zero point)
WEIGHT_SUFFIXES = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
                   "up_proj.weight", "down_proj.weight", "lm_head.weight")


@dataclass(frozen=True)
class BlockRow:
    """One block size: bits per weight, total bytes, and the error it leaves on the chosen weights."""

    block_size: int
    bits_per_weight: float
    total_bytes: int
    relative_rms_error: float  # ||W - Q(W)|| / ||W|| over every chosen matrix
    max_abs_error: float
    weights: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def quantize_blocks(weight: np.ndarray, block_size: int) -> np.ndarray:
    """`weight` (out, in) quantized to int4 per block along `in` and back to float (zero-padded tail block).

    Returns:
        The dequantized matrix, same shape as `weight`.
    """
    rows, cols = weight.shape
    padded = -(-cols // block_size) * block_size
    blocks = np.zeros((rows, padded), dtype=np.float64)
    blocks[:, :cols] = weight
    blocks = blocks.reshape(rows, -1, block_size)
    low, high = blocks.min(axis=2, keepdims=True), blocks.max(axis=2, keepdims=True)
    extreme = np.where(np.abs(high) > np.abs(low), high, low)
    scale = extreme / -8.0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(scale == 0, 0, np.round(blocks / scale)).clip(-8, 7)
    return (q * scale).reshape(rows, padded)[:, :cols]


def decoder_weights(folder: str | Path, *, limit: int | None = None) -> dict[str, np.ndarray]:
    """The MatMul weights (attention and MLP projections, lm_head) of a checkpoint folder's safetensors.

    Raises:
        BadInputError: no safetensors file, or none of its tensors is a projection weight.
    """
    from safetensors.numpy import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise BadInputError(f"{folder}: no *.safetensors weights to explain")
    weights = {}
    for path in files:
        for name, tensor in load_file(str(path)).items():
            if name.endswith(WEIGHT_SUFFIXES) and tensor.ndim == 2:
                weights[name] = tensor.astype(np.float32)
                if limit and len(weights) >= limit:
                    return weights
    if not weights:
        raise BadInputError(f"{folder}: no projection weights ({', '.join(WEIGHT_SUFFIXES[:3])}, ...) found")
    return weights


def block_size_table(weights: dict[str, np.ndarray], block_sizes=BLOCK_SIZES) -> list[BlockRow]:
    """Error and bytes of int4 block quantization of `weights` at each block size, plus fp32 for reference."""
    count = sum(w.size for w in weights.values())
    norm = float(np.sqrt(sum(float(np.square(w, dtype=np.float64).sum()) for w in weights.values())))
    rows = [BlockRow(0, 32.0, 4 * count, 0.0, 0.0, count)]  # block_size 0: the fp32 original
    for block in block_sizes:
        squared, worst, blocks = 0.0, 0.0, 0
        for w in weights.values():
            error = w - quantize_blocks(w, block)
            squared += float(np.square(error).sum())
            worst = max(worst, float(np.abs(error).max()))
            blocks += w.shape[0] * -(-w.shape[1] // block)
        total_bytes = (count * 4 + 7) // 8 + blocks * SCALE_BITS // 8
        rows.append(BlockRow(block, 8.0 * total_bytes / count, total_bytes, float(np.sqrt(squared)) / (norm or 1.0),
                             worst, count))
    return rows


def sample_block_table(folder: str | Path | None = None) -> list[BlockRow]:
    """`block_size_table` on ``sample:tiny-lm``'s shipped weights (or another checkpoint folder)."""
    if folder is None:
        from sample_models.tiny_lm import CHECKPOINT_DIR  # the shipped checkpoint (as core.io.data imports samples)

        folder = CHECKPOINT_DIR
    return block_size_table(decoder_weights(folder))


__all__ = ["BLOCK_SIZES", "BlockRow", "block_size_table", "decoder_weights", "quantize_blocks", "sample_block_table"]
