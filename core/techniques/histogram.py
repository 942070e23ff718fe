"""Streaming activation histograms for percentile and entropy calibration, in bounded memory.

onnxruntime's histogram calibrators run the whole calibration set with every activation as a graph output and keep
all of them before building one histogram (onnxruntime issue #21979; PR #14183, closed unmerged): on a 240x240
EfficientNet with 128 samples that is ~30 GiB, and its arena gives up. Here each tensor's histogram is built batch
by batch in two passes, and a batch is sized so that its activations stay under `BATCH_BYTES`:

1. the tensor's min and max (onnxruntime's own MinMax calibrator, which reduces inside the graph);
2. a fixed-range histogram over [-t, t] (t = max |min|, |max|) for entropy, or of |x| over [0, t] for percentile
   (as onnxruntime's calibrators build them), ``num_bins`` bins, counts added per batch.

The histogram has the layout onnxruntime's ``HistogramCollector`` keeps (counts, edges, min, max, threshold), so
the percentile and entropy thresholds are computed by the same arithmetic as onnxruntime's.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

# Activations one calibration batch may hold at once. 256 MiB keeps the worker (8 GiB address space by default, of
# which torch and onnxruntime map 1-3 GiB) far from its limit; EfficientNet-Lite1 at 240x240 has ~25 MB of float
# activations per sample (measured), so it calibrates 10 samples at a time.
BATCH_BYTES = 256 * 2**20
MINMAX_BATCH = 32  # samples per min / max batch at most (small models: fewer session calls)


def augmented(proto, tensors: list[str]):
    """A copy of `proto` with every tensor of `tensors` added as a graph output."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    existing = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return probe


def observing_session(proto):
    """An onnxruntime session that runs the graph as written (no optimization: every tensor observable, QDQ ops
    unfused: dequantize -> float op, what the fused int8 kernel computes), one thread, no memory arena."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every tensor as written
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False  # outputs of very different sizes: the arena would keep the largest
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def batches_of(inputs: dict, per_batch: int, fixed_batch: int | None = None):
    """Yield feeds of `per_batch` samples (or exactly `fixed_batch`, padding the last one by repeating samples,
    with the padding's count so callers can drop it)."""
    n = len(next(iter(inputs.values())))
    step = fixed_batch or max(1, per_batch)
    for start in range(0, n, step):
        feed = {k: v[start:start + step] for k, v in inputs.items()}
        real = len(next(iter(feed.values())))
        if fixed_batch and real < fixed_batch:
            feed = {k: np.resize(v, (fixed_batch, *v.shape[1:])) for k, v in feed.items()}
        yield feed, real


def observer(proto, inputs: dict, tensors: list[str], fixed_batch: int | None = None, copies: int = 1) -> tuple:
    """(an `observing_session` with `tensors` as outputs, the tensors it has, samples per batch): a batch holds
    as many samples as BATCH_BYTES of those tensors allow, `copies` times over (work arrays a caller makes)."""
    session = observing_session(augmented(proto, tensors))
    names = {o.name for o in session.get_outputs()}
    wanted = [t for t in tensors if t in names]
    n = len(next(iter(inputs.values())))
    first = {k: v[:1] if not fixed_batch else np.resize(v[:1], (fixed_batch, *v.shape[1:])) for k, v in inputs.items()}
    per_sample = sum(o.nbytes for o in session.run(wanted, first)) / (fixed_batch or 1) if wanted else 1.0
    return session, wanted, int(max(1, min(n, BATCH_BYTES // max(1.0, per_sample * copies))))


def collect_histograms(proto, inputs: dict, tensors: list[str], thresholds: dict, *, num_bins: int,
                       fixed_batch: int | None = None, should_stop=None, absolute: bool = False) -> dict:
    """Per tensor, the counts of its values in `num_bins` equal bins over [-t, t] (t = `thresholds[tensor]`), or
    with `absolute` of their magnitudes over [0, t] (what onnxruntime's percentile calibrator histograms).

    Args:
        proto: the float model.
        inputs: calibration inputs, name -> array (samples first).
        tensors: the tensors to histogram.
        thresholds: tensor -> (min, max) from a first pass; the histogram spans [-max|.|, max|.|].
        num_bins: bins per histogram.
        fixed_batch: the graph's fixed batch size, if it has one.
        should_stop: optional cancellation check, called between batches.

    Returns:
        tensor -> (counts int64, edges float32, min, max, threshold), onnxruntime's HistogramCollector layout.
    """
    session, wanted, per_batch = observer(proto, inputs, tensors, fixed_batch)
    counts = {t: np.zeros(num_bins, np.int64) for t in wanted}
    limits = {t: float(max(abs(float(thresholds[t][0])), abs(float(thresholds[t][1])))) for t in wanted}
    for feed, real in batches_of(inputs, per_batch, fixed_batch):
        if should_stop is not None:
            should_stop()
        for name, value in zip(wanted, session.run(wanted, feed)):
            if fixed_batch and real < fixed_batch and value.ndim and value.shape[0] == fixed_batch:
                value = value[:real]
            limit = limits[name]
            if limit <= 0:
                counts[name][0 if absolute else num_bins // 2] += value.size
                continue
            if absolute:
                hist, _ = np.histogram(np.abs(value.reshape(-1)), num_bins, range=(0.0, limit))
            else:
                hist, _ = np.histogram(value.reshape(-1), num_bins, range=(-limit, limit))
            counts[name] += hist
    out = {}
    for name in wanted:
        limit = limits[name]
        bottom = 0.0 if absolute else -limit
        edges = np.linspace(bottom, limit, num_bins + 1).astype(np.float32) if limit > 0 else \
            np.linspace(0.0 if absolute else -1.0, 1.0, num_bins + 1).astype(np.float32)
        low, high = (np.float32(v) for v in thresholds[name])
        out[name] = (counts[name], edges, low, high, np.float32(limit))
    return out


def percentile_range(histogram, percentile: float) -> tuple:
    """onnxruntime's percentile cut (``HistogramCollector.compute_percentile``, symmetric, as its percentile
    calibrator runs): on the histogram of |x| (`collect_histograms(absolute=True)`), t = the edge where the
    cumulative share reaches `percentile` %; the range is [-t, t] kept within the tensor's min and max."""
    hist, edges, low, high = histogram[:4]
    total = hist.sum()
    if total == 0:
        return low, high
    cdf = np.cumsum(hist / total)
    top = np.float32(edges[min(int(np.searchsorted(cdf, percentile / 100.0)), len(edges) - 1)])
    return max(-top, low), min(top, high)


def sample_bytes(proto, inputs: dict, tensors: list[str], fixed_batch: int | None = None) -> float:
    """The bytes `tensors` take for one sample (one run of one sample with them as outputs): what sizes a batch."""
    session = observing_session(augmented(proto, tensors))
    names = {o.name for o in session.get_outputs()}
    wanted = [t for t in tensors if t in names]
    first = {k: v[:1] if not fixed_batch else np.resize(v[:1], (fixed_batch, *v.shape[1:])) for k, v in inputs.items()}
    return sum(o.nbytes for o in session.run(wanted, first)) / (fixed_batch or 1) if wanted else 1.0


def minmax_ranges(proto, inputs: dict, workdir: Path, fixed_batch: int | None = None, batch: int | None = None) \
        -> dict:
    """tensor -> (min, max) over `inputs`, from onnxruntime's MinMax calibrator (it reduces inside the graph: it
    keeps two numbers per tensor and batch); the tensors are those onnxruntime calibrates. A batch holds as many
    samples as BATCH_BYTES of activations allow (onnxruntime keeps a batch's activations alive in its arena). Its
    `max_intermediate_outputs` option is not used: in onnxruntime 1.32 it clears the batches collected so far
    without merging them into the ranges."""
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    path = workdir / "calibrate-minmax.onnx"
    onnx.save(proto, str(path))
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(path, None, augmented_model_path=str(workdir / "augmented-minmax.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax,
                                       extra_options={"moving_average": False})
        if batch is None:
            tensors, _ = calibrator.select_tensors_to_calibrate(calibrator.model)
            own = {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.input}
            per_sample = sample_bytes(proto, inputs, sorted(t for t in tensors if t in own), fixed_batch)
            batch = int(max(1, min(MINMAX_BATCH, BATCH_BYTES // max(1.0, per_sample))))
        calibrator.collect_data(CalibrationReader(inputs, batch, fixed_batch))
        data = calibrator.compute_data()
    return {name: tuple(np.asarray(v).reshape(-1)[0] for v in data[name].range_value) for name in data.keys()}


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over `inputs`, `batch` samples at a time (a graph with a fixed
    batch axis gets exactly that many, the last batch padded)."""

    def __init__(self, inputs: dict, batch: int, fixed_batch: int | None):
        self.feeds = [feed for feed, _ in batches_of(inputs, batch, fixed_batch)]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        return self.feeds[self.position - 1]

    def rewind(self):
        self.position = 0


class ActivationStatistics:
    """Every calibrated tensor's min / max over the calibration inputs, and its histograms on demand (one streaming
    pass per bin count), so minmax, percentile and entropy ranges, and per-tensor overrides, share the passes."""

    def __init__(self, proto, inputs: dict, workdir: Path, *, fixed_batch: int | None = None, should_stop=None):
        self.proto, self.inputs, self.workdir = proto, inputs, Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fixed_batch, self.should_stop = fixed_batch, should_stop
        self.minmax = minmax_ranges(proto, inputs, self.workdir, fixed_batch)
        self._histograms: dict[int, dict] = {}

    @property
    def tensors(self) -> list[str]:
        return list(self.minmax)

    def histograms(self, num_bins: int, tensors=None, *, absolute: bool = False) -> dict:
        """tensor -> histogram (onnxruntime's layout) with `num_bins` bins, of the values (entropy) or of their
        magnitudes (`absolute`: percentile), for `tensors` (None: all)."""
        wanted = [t for t in (tensors if tensors is not None else self.tensors) if t in self.minmax]
        cached = self._histograms.setdefault((num_bins, absolute), {})
        missing = [t for t in wanted if t not in cached]
        if missing:
            cached.update(collect_histograms(self.proto, self.inputs, missing, self.minmax, num_bins=num_bins,
                                             fixed_batch=self.fixed_batch, should_stop=self.should_stop,
                                             absolute=absolute))
        return {t: cached[t] for t in wanted if t in cached}


def channel_ranges(proto, inputs: dict, tensors: list[str], *, axis: int = 1, fixed_batch: int | None = None,
                   should_stop=None) -> dict:
    """Per tensor, its smallest and largest value per channel along `axis` (1 for conv feature maps, -1 for a
    transformer's hidden size) over `inputs`, batch by batch: tensor -> (min per channel, max per channel).
    Cap-aware equalization asks which ReLU6 channels ever reach the cap; SmoothQuant, each channel's range."""
    if not tensors:
        return {}
    session, wanted, per_batch = observer(proto, inputs, tensors, fixed_batch)
    lows: dict[str, np.ndarray] = {}
    highs: dict[str, np.ndarray] = {}
    for feed, real in batches_of(inputs, per_batch, fixed_batch):
        if should_stop is not None:
            should_stop()
        for name, value in zip(wanted, session.run(wanted, feed)):
            value = value[:real]
            if value.ndim < 2:
                continue
            flat = np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)
            low, high = flat.min(axis=1), flat.max(axis=1)
            lows[name] = low if name not in lows else np.minimum(lows[name], low)
            highs[name] = high if name not in highs else np.maximum(highs[name], high)
    return {name: (lows[name], highs[name]) for name in lows}
