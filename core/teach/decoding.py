"""Learn: how a decoder generates, on the current decoder's own shapes: the KV cache, why decoding one token at batch 1
is memory-bound, and why weight-only int4 helps exactly there; plus its weights for the quantization grid.

Generating a token runs the whole network on one new position. The keys and values of every earlier position are
kept (the KV cache), so nothing is recomputed, but every weight is read once per token: at batch 1 each weight
takes part in one multiply-add (2 FLOPs) per byte or half byte read. A CPU moves bytes from memory far slower
than it multiplies, so the time per token is about (bytes read) / (memory bandwidth): fewer bytes per weight (int8:
1, int4: about 0.56 with its block scales) is fewer seconds per token. With many sequences decoded together each
weight read serves every sequence, the work per byte grows, and past the CPU's own FLOP/byte balance the multiply
becomes the limit, where weight-only int4 (which multiplies in int8 or float after unpacking) buys nothing.

The bandwidth and FLOP rate are measured here (a large array copy; a float32 matrix multiply); the times they give
are a roofline estimate, labelled as such, not a measurement of the model.
"""

from __future__ import annotations

import time

import numpy as np

from core.errors import BadInputError
from core.io.decoder import DecoderCheckpoint
from core.teach.weights import WeightTensor

# Bytes per weight of each precision the builder writes: int4 and int8 are MatMulNBits with one float32 scale per
# block of 32 weights (the builder's default block), so 4 + 32/32 = 5 bits and 8 + 1 = 9 bits per weight.
PRECISION_BYTES = {"fp32": 4.0, "int8": 9.0 / 8.0, "int4": 5.0 / 8.0}
KV_BYTES = 4  # the CPU builds keep the KV cache in float32 whatever the weights' precision
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COPY_MIB = 256  # bigger than any last-level cache, so the copy runs at DRAM speed
MATMUL_N = 1024


def decoder_weight_tensors(checkpoint: DecoderCheckpoint) -> list[WeightTensor]:
    """The checkpoint's linear-layer weights (2-D, not embeddings), read from the safetensors headers: what the
    builder turns into MatMulNBits. A Hugging Face Linear stores (out, in): the output-channel axis is 0."""
    out = []
    for name, _dtype, shape in checkpoint.tensors:
        if len(shape) == 2 and "embed" not in name and "norm" not in name:
            out.append(WeightTensor(name, name.rsplit(".", 1)[0], "MatMul", tuple(int(d) for d in shape), 0))
    return out


def decoder_weight_array(checkpoint: DecoderCheckpoint, name: str) -> np.ndarray:
    """One weight of the checkpoint as float32, read lazily from its safetensors file (bf16 / fp16 widened).

    Raises:
        BadInputError: no tensor of that name.
    """
    import torch  # bf16 has no numpy dtype: safetensors' torch reader widens it
    from safetensors import safe_open

    for path in sorted(checkpoint.folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            if name in handle.keys():
                return handle.get_tensor(name).to(torch.float32).numpy()
    raise BadInputError(f"the checkpoint has no weight named {name!r}")


def measured_bandwidth_gb_s(mib: int = COPY_MIB, repeats: int = 5) -> float:
    """Memory bandwidth of this machine from a large array copy (read + write, best of `repeats`), GB/s."""
    source = np.ones(mib * 2**20 // 8, dtype=np.float64)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best / 1e9


def measured_gflops(n: int = MATMUL_N, repeats: int = 5) -> float:
    """Float32 matrix-multiply rate of this process (numpy's BLAS, its threads), GFLOP/s, best of `repeats`."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best / 1e9


def decoder_shape(checkpoint: DecoderCheckpoint) -> dict:
    """Layers, widths, heads and parameter counts of a checkpoint (linear weights vs embeddings)."""
    config = checkpoint.config
    heads = int(config.get("num_attention_heads") or 1)
    hidden = int(config.get("hidden_size") or 0)
    head_dim = int(config.get("head_dim") or (hidden // heads if heads else 0))
    linear = sum(w.size for w in decoder_weight_tensors(checkpoint))
    embedding = sum(int(np.prod(shape)) for name, _, shape in checkpoint.tensors if "embed" in name)
    return {"layers": int(config.get("num_hidden_layers") or 0), "hidden": hidden, "heads": heads,
            "kv_heads": int(config.get("num_key_value_heads") or heads), "head_dim": head_dim,
            "vocab": int(config.get("vocab_size") or 0), "context": int(config.get("max_position_embeddings") or 0),
            "linear_params": int(linear), "embedding_params": int(embedding), "params": int(checkpoint.params)}


def decoding_view(checkpoint: DecoderCheckpoint, *, measure: bool = True) -> dict:
    """The decoding explainer's numbers for one checkpoint.

    Returns:
        ``{"shape", "kv_bytes_per_token", "kv_curve": {"tokens", "bytes"}, "weight_bytes": {precision},
        "bandwidth_gb_s", "gflops", "balance_flops_per_byte", "roofline": {precision: [tokens/s per sequence at each
        batch]}, "batches", "floor_ms": {precision}}``: the KV cache per token and over the context, the bytes of
        weights read per decoded token, and the roofline estimate from this machine's measured bandwidth and
        FLOP rate.
    """
    shape = decoder_shape(checkpoint)
    kv_per_token = 2 * shape["layers"] * shape["kv_heads"] * shape["head_dim"] * KV_BYTES
    context = shape["context"] or 2048
    tokens = np.unique(np.linspace(1, context, 32).astype(int)).tolist()
    # Per decoded token: every linear weight once (lm_head included), one embedding row.
    weight_bytes = {p: shape["linear_params"] * b + shape["hidden"] * 4 for p, b in PRECISION_BYTES.items()}
    bandwidth = measured_bandwidth_gb_s() if measure else None
    gflops = measured_gflops() if measure else None
    roofline, floor_ms = {}, {}
    if bandwidth and gflops:
        flops_per_token = 2.0 * shape["linear_params"]
        for precision, nbytes in weight_bytes.items():
            rates = []
            for batch in BATCHES:
                seconds = max(nbytes / (bandwidth * 1e9), batch * flops_per_token / (gflops * 1e9))
                rates.append(1.0 / seconds)  # tokens/s of each sequence: one token of every sequence per step
            roofline[precision] = rates
            floor_ms[precision] = 1000.0 * nbytes / (bandwidth * 1e9)
    return {"shape": shape, "kv_bytes_per_token": kv_per_token,
            "kv_curve": {"tokens": tokens, "bytes": [t * kv_per_token for t in tokens]},
            "weight_bytes": weight_bytes, "bandwidth_gb_s": bandwidth, "gflops": gflops,
            "balance_flops_per_byte": gflops / bandwidth if bandwidth and gflops else None,
            "roofline": roofline, "batches": list(BATCHES), "floor_ms": floor_ms, "copy_mib": COPY_MIB}


__all__ = ["BATCHES", "KV_BYTES", "PRECISION_BYTES", "decoder_shape", "decoder_weight_array", "decoder_weight_tensors",
           "decoding_view", "measured_bandwidth_gb_s", "measured_gflops"]
