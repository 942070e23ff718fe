"""A deterministic test bed with something to recover: a copy of a sample whose per-channel ranges are spread
~100x by rescaling consecutive layers, computing the same function in fp32.

Cross-layer equalization run backwards: for each ``Conv -> Relu [-> MaxPool] -> Conv`` pair, output channel i of
the first conv is multiplied by t_i and input channel i of the second divided by it (ReLU and max pooling are
positively homogeneous, so the outputs do not change), with t spread log-uniformly over `factor`. A trained net's
channels are alike; after this one scale per tensor must cover channels `factor` apart, and per-tensor int8 loses
the small ones. Used by the recovery tests and `make bench`; nothing here is registered as a sample.
"""

from __future__ import annotations

import copy

import numpy as np

SPREAD_FACTOR = 100.0
SPREAD_SEED = 0


def spread_channels(proto, factor: float = SPREAD_FACTOR, seed: int = SPREAD_SEED):
    """A copy of `proto` with every conv pair joined by Relu / pooling (not ReLU6) spread `factor` apart (exact in
    fp32).

    Returns:
        (the new ModelProto, how many pairs were spread).
    """
    from onnx import numpy_helper

    from core.techniques.equalize import find_pairs

    spread = copy.deepcopy(proto)
    inits = {i.name: i for i in spread.graph.initializer}
    rng = np.random.default_rng(seed)
    count = 0
    for pair in find_pairs(spread):
        if pair.relu6_cap is not None:
            continue  # a ReLU6 cap would not follow the rescaling exactly
        if int(next((a.i for a in pair.conv2.attribute if a.name == "group"), 1)) != 1:
            continue
        w1 = numpy_helper.to_array(inits[pair.conv1.input[1]]).astype(np.float64)
        w2 = numpy_helper.to_array(inits[pair.conv2.input[1]]).astype(np.float64)
        t = factor ** rng.uniform(-0.5, 0.5, size=w1.shape[0])
        t[np.argmin(t)], t[np.argmax(t)] = factor ** -0.5, factor ** 0.5  # exactly `factor` apart
        inits[pair.conv1.input[1]].CopyFrom(numpy_helper.from_array(
            (w1 * t.reshape((-1,) + (1,) * (w1.ndim - 1))).astype(np.float32), pair.conv1.input[1]))
        if len(pair.conv1.input) > 2 and pair.conv1.input[2] in inits:
            bias = numpy_helper.to_array(inits[pair.conv1.input[2]]).astype(np.float64)
            inits[pair.conv1.input[2]].CopyFrom(numpy_helper.from_array((bias * t).astype(np.float32),
                                                                        pair.conv1.input[2]))
        inits[pair.conv2.input[1]].CopyFrom(numpy_helper.from_array(
            (w2 / t.reshape((1, -1) + (1,) * (w2.ndim - 2))).astype(np.float32), pair.conv2.input[1]))
        count += 1
    return spread, count
