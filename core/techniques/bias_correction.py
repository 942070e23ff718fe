"""Empirical bias correction's measurement: per-channel mean outputs of a graph's tensors over calibration data,
batch by batch. Each quantized Conv / Gemm gets its per-output-channel mean shift against the float graph added
back to its int32 bias (as NNCF's fast bias correction does; Nagel et al. 2019, section 4.2, do it analytically
from BN statistics); `core.techniques.static` applies it one layer at a time, kept only where validation improves.

Rounding the weights to int8 shifts each layer's expected output, ``E[W_q x] - E[W x] = (W_q - W) E[x]``; the shift
adds up layer after layer.
"""

from __future__ import annotations

import numpy as np

from core.techniques.histogram import BATCH_BYTES, augmented, batches_of, observing_session, sample_bytes

MAX_BATCH = 64  # samples per run at most


def channel_means(proto, inputs: dict, tensors: list[str], batch: int | None = None,
                  fixed_batch: int | None = None) -> dict:
    """Per-channel (axis 1) means of `tensors` over `inputs`, batch by batch.

    Args:
        proto: the graph to run.
        inputs: name -> array, the first axis the samples.
        tensors: tensor names to observe.
        batch: samples per run (default: as many as `core.techniques.histogram.BATCH_BYTES` of them allow).
        fixed_batch: the batch size a graph with a fixed batch axis takes (a short last batch is padded).

    Returns:
        name -> float64 array of length channels.
    """
    if batch is None:
        per_sample = sample_bytes(proto, inputs, tensors, fixed_batch)
        batch = int(max(1, min(MAX_BATCH, BATCH_BYTES // max(1.0, per_sample))))
    session = observing_session(augmented(proto, tensors))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for feed, real in batches_of(inputs, batch, fixed_batch):
        for name, value in zip(tensors, session.run(tensors, feed)):
            value = np.asarray(value[:real], dtype=np.float64)
            axes = (0,) + tuple(range(2, value.ndim))
            sums[name] = sums.get(name, 0.0) + value.sum(axis=axes)
            counts[name] = counts.get(name, 0) + value.size // value.shape[1]
    return {name: total / max(counts[name], 1) for name, total in sums.items()}
