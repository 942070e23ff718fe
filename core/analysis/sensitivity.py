"""Sensitivity scan: quantize or prune one layer at a time and measure how much each one alone hurts.

For every layer the scan builds the baseline with only that layer changed and compares its outputs with the
baseline's: accuracy drop (with labels), top-1 agreement (classifiers), cosine, and the output SQNR,
``10 * log10(||y||^2 / ||y - y_q||^2)`` in dB (higher is better; ``None`` when the outputs are identical).
Layers come back most sensitive first. The scan scores on the dataset's validation split (`Dataset.selection`), so
a run that keeps the top layers in float is then measured on a test split the ranking never saw. Example::

    result = scan(model, dataset, SensitivityConfig(technique="quantize"))
    recipe = recipe_with_exclude(recipe, top_layers(result, 2))  # keep the two most sensitive in float
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import BadInputError, FeatherweightError, UnsupportedModelError
from core.spec.recipe import QuantizeConfig, Recipe, Variant
from core.spec.checks import check_bool, check_choice, check_keys, check_range
from core.io import runtime
from core.io.data import load_data
from core.io.files import write_atomic
from core.io.graph import layer_table, task_of
from core.io.model import load_model
from core.measure import quality as measure
from core.pipeline.build import ProgressEvent, export_candidate
from core.results.table import resolution_pt, resolution_text
from core.techniques import Candidate, StepContext, apply_step
from core.techniques.prune import magnitude_masks, onnx_weight_initializers, prunable_layers

SENSITIVITY_VERSION = 1
TECHNIQUES = ("quantize", "prune")
# Ops whose weights onnxruntime's quantizers change; other nodes that read a constant (a bias Add, a Reshape
# shape) are not layers a user would keep in float.
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather", "Attention", "LSTM", "GRU")
SCAN_EVAL_BATCH = 256


@dataclass(frozen=True)
class SensitivityConfig:
    """What to change one layer at a time: quantize (with these settings) or prune (at `amount`)."""

    technique: str = "quantize"
    mode: str = "static"  # quantize: QuantizeConfig.MODES
    per_channel: bool = True
    calibration: str = "minmax"
    samples: int = 128  # calibration samples
    amount: float = 0.5  # prune: fraction of the layer's weights zeroed (unstructured magnitude)
    amounts: tuple = ()  # prune: further amounts, measured for the heatmap
    max_samples: int | None = None  # score on the first N validation samples (None = all)
    layers: tuple = ()  # restrict the scan to these layer names (empty = every layer)
    threads: int = 1

    def __post_init__(self):
        check_choice("sensitivity.technique", self.technique, TECHNIQUES)
        check_choice("sensitivity.mode", self.mode, QuantizeConfig.MODES)
        check_choice("sensitivity.calibration", self.calibration, QuantizeConfig.CALIBRATIONS)
        check_bool("sensitivity.per_channel", self.per_channel)
        check_range("sensitivity.samples", self.samples, 1, 100000, integer=True)
        check_range("sensitivity.amount", self.amount, 0.0, 1.0, low_open=True, high_open=True)
        amounts = (self.amounts,) if isinstance(self.amounts, (int, float)) else tuple(self.amounts)
        for value in amounts:
            check_range("sensitivity.amounts", value, 0.0, 1.0, low_open=True, high_open=True)
        object.__setattr__(self, "amounts", tuple(float(a) for a in amounts))
        if self.max_samples is not None:
            check_range("sensitivity.max_samples", self.max_samples, 1, 10**9, integer=True)
        if isinstance(self.layers, str) or not all(isinstance(n, str) for n in self.layers):
            raise BadInputError(f"sensitivity.layers={self.layers!r} must be a list of layer names")
        object.__setattr__(self, "layers", tuple(self.layers))
        check_range("sensitivity.threads", self.threads, 1, 256, integer=True)

    def quantize_config(self, exclude: tuple = ()) -> QuantizeConfig:
        return QuantizeConfig(mode=self.mode, per_channel=self.per_channel, calibration=self.calibration,
                              samples=self.samples, exclude=tuple(exclude))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["amounts"], out["layers"] = list(self.amounts), list(self.layers)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SensitivityConfig":
        check_keys("sensitivity", data, [f.name for f in dataclasses.fields(cls)])
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**values)
        except TypeError as exc:
            raise BadInputError(f"sensitivity: {exc}") from None


@dataclass
class LayerSensitivity:
    """What changing one layer alone did to the outputs (drop in points: see SensitivityResult.metric)."""

    name: str  # the layer: ONNX node name (quantize, ONNX-only prune) or torch module name (torch prune)
    type: str  # op type (Conv, Gemm, ...) or torch layer class
    node: str | None = None  # the ONNX node name, which a quantize step's `exclude` takes
    params: int | None = None
    drop: float | None = None
    accuracy: float | None = None
    agreement: float | None = None
    cosine_mean: float | None = None
    sqnr_db: float | None = None  # None: outputs identical to the baseline's
    by_amount: dict | None = None  # prune: amount (as text) -> drop, for the heatmap
    error: str | None = None
    rank: int | None = None  # 1 = most sensitive; layers tied on the validation split share a rank (1, 2, 2, 4)
    tied: bool = False  # within one validation sample of another layer: the order between them is not measured

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SensitivityResult:
    """A whole scan: settings, the baseline's quality, and every layer, most sensitive first."""

    technique: str
    model: str
    data: str | None
    config: dict
    metric: str  # what `drop` measures, e.g. "accuracy drop (pt)"
    baseline: dict
    layers: list = field(default_factory=list)
    status: str = "completed"  # completed | cancelled
    duration_s: float | None = None
    version: int = SENSITIVITY_VERSION
    split: dict = field(default_factory=dict)  # {"selection": "validation", "n": N, "resolution_pt": 100 / N}: the
    # split every layer is scored on and what one sample of it is worth (None for a cosine drop: no samples to count)

    def to_dict(self) -> dict:
        return {"version": self.version, "technique": self.technique, "model": self.model, "data": self.data,
                "config": self.config, "metric": self.metric, "baseline": self.baseline, "status": self.status,
                "duration_s": self.duration_s, "split": self.split,
                "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: dict) -> "SensitivityResult":
        known = {f.name for f in dataclasses.fields(LayerSensitivity)}
        layers = [LayerSensitivity(**{k: v for k, v in row.items() if k in known}) for row in data.get("layers", [])]
        if layers and all(layer.rank is None for layer in layers):  # a scan from before ranks: rank it as read
            mark_ties(layers, scan_resolution(data))
        return cls(technique=data.get("technique", "quantize"), model=data.get("model", ""), data=data.get("data"),
                   config=data.get("config") or {}, metric=data.get("metric", "drop (pt)"),
                   baseline=data.get("baseline") or {}, layers=layers, status=data.get("status", "completed"),
                   duration_s=data.get("duration_s"), version=data.get("version", SENSITIVITY_VERSION),
                   split=data.get("split") or {})


# --------------------------------------------------------------------------------------------------------------
# Scoring one changed model against the baseline


def sqnr_db(reference: list[np.ndarray], changed: list[np.ndarray]) -> float | None:
    """Signal-to-quantization-noise ratio of `changed` against `reference`, over all outputs, in dB.

    Returns None when the outputs are identical (an infinite SQNR, which JSON cannot hold).
    """
    signal = sum(float(np.sum(np.square(r.astype(np.float64)))) for r in reference)
    noise = sum(float(np.sum(np.square(r.astype(np.float64) - c.astype(np.float64))))
                for r, c in zip(reference, changed))
    if noise == 0.0:
        return None
    if signal == 0.0:
        return -math.inf if noise else None
    return round(10.0 * math.log10(signal / noise), 4)


def quality_drop(accuracy: float | None, agreement: float | None, cosine_mean: float | None,
                 baseline_accuracy: float | None) -> tuple[float | None, str]:
    """The loss of quality in points and what it measures: accuracy drop with labels, else disagreement with the
    baseline (classifiers), else 1 - cosine (as core.results.compare.quality_drop_pt does for whole variants)."""
    if accuracy is not None and baseline_accuracy is not None:
        return round((baseline_accuracy - accuracy) * 100.0, 4), "accuracy drop (pt)"
    if agreement is not None:
        return round((1.0 - agreement) * 100.0, 4), "disagreement with baseline (pt)"
    if cosine_mean is not None:
        return round((1.0 - cosine_mean) * 100.0, 4), "1 - cosine to baseline (pt)"
    return None, "drop (pt)"


class _Scorer:
    """Runs changed models on the (possibly shortened) validation split and scores them against the baseline."""

    def __init__(self, baseline_bytes: bytes, dataset, task: str, max_samples: int | None, threads: int):
        split = dataset.selection if max_samples is None else dataset.selection.take(max_samples)
        self.split_name = dataset.selection_name
        self.inputs, self.labels, self.task, self.threads = split.x, split.y, task, threads
        session = runtime.make_session(baseline_bytes, threads)
        self.output_names = [o.name for o in session.get_outputs()]
        self.baseline_outputs = runtime.run_batched(session, self.inputs, SCAN_EVAL_BATCH)
        base = measure.fidelity(self.baseline_outputs, None, self.labels, task)
        self.baseline_accuracy = base.accuracy
        self.metric = quality_drop(base.accuracy, 1.0 if task == "classification" else None,
                                   None if task == "classification" else 1.0, base.accuracy)[1]

    def score(self, model_bytes: bytes) -> dict:
        session = runtime.make_session(model_bytes, self.threads)
        outputs = runtime.run_batched(session, self.inputs, SCAN_EVAL_BATCH)
        fid = measure.fidelity(outputs, self.baseline_outputs, self.labels, self.task, self.output_names)
        cosine = fid.cosine_mean
        if cosine is None and self.task == "classification":
            cosine = float(np.mean([_mean_cosine(o, b) for o, b in zip(outputs, self.baseline_outputs)]))
        drop, _ = quality_drop(fid.accuracy, fid.agreement, fid.cosine_mean, self.baseline_accuracy)
        return {"drop": drop, "accuracy": fid.accuracy, "agreement": fid.agreement, "cosine_mean": cosine,
                "sqnr_db": sqnr_db(self.baseline_outputs, outputs)}


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)))


# --------------------------------------------------------------------------------------------------------------
# Layers


def quantizable_layers(proto) -> list[dict]:
    """Nodes a quantize step can keep in float or quantize: {name, type, params}, in graph order."""
    return [{"name": row["name"], "type": row["type"], "params": row["params"]} for row in layer_table(proto)
            if row["type"] in QUANTIZABLE_OPS]


def _node_of_module(proto, module_name: str) -> str | None:
    """The ONNX node a torch module exported as: the TorchScript exporter names nodes /path/<module>/<Op>."""
    for node in proto.graph.node:
        parts = node.name.split("/")
        if len(parts) >= 2 and parts[-2] == module_name and node.op_type in QUANTIZABLE_OPS:
            return node.name
    return None


def _named(proto):
    """A copy with every node named (output name for unnamed ones), so exclusion by name reaches all of them."""
    proto = copy.deepcopy(proto)
    for node in proto.graph.node:
        if not node.name:
            node.name = node.output[0]
    return proto


def _rank(layers: list[LayerSensitivity], resolution: float | None = None) -> list[LayerSensitivity]:
    """Most sensitive first: largest drop, then lowest SQNR (identical outputs last); failures at the end.

    The sort is stable, so equal layers keep graph order and a fixed seed gives a fixed ranking. Ranks then mark
    what the validation split can tell apart (`mark_ties`)."""
    def key(layer: LayerSensitivity):
        failed = layer.drop is None
        sqnr = math.inf if layer.sqnr_db is None else layer.sqnr_db
        return (failed, -(layer.drop or 0.0), sqnr)

    return mark_ties(sorted(layers, key=key), resolution)


def mark_ties(ranked: list[LayerSensitivity], resolution: float | None) -> list[LayerSensitivity]:
    """Give ranked layers their rank, tied layers a shared one: a layer whose drop is within one validation sample
    (`resolution` pt) of the first layer of its group joins that group, since one sample more or less on the
    validation split would reorder them. Without a resolution (a cosine drop) only equal drops tie. Failed layers
    get no rank. Returns `ranked`."""
    step = (resolution or 0.0) + 1e-9
    start = None
    for position, layer in enumerate(ranked):
        if layer.drop is None:
            layer.rank, layer.tied = None, False
            continue
        if start is None or (start.drop or 0.0) - (layer.drop or 0.0) > step:
            start = layer
            layer.rank = position + 1
        else:
            layer.rank = start.rank
    ranks = [layer.rank for layer in ranked if layer.rank is not None]
    for layer in ranked:
        layer.tied = layer.rank is not None and ranks.count(layer.rank) > 1
    return ranked


def scan_resolution(result: "SensitivityResult | dict") -> float | None:
    """What one validation sample is worth in the scan's drop (pt): 100 / n for an accuracy drop or a
    disagreement, None for a cosine drop (no samples to count)."""
    data = result.to_dict() if isinstance(result, SensitivityResult) else result
    if "cosine" in str(data.get("metric", "")):
        return None
    return resolution_pt((data.get("split") or {}).get("n"))


def resolution_caption(result: "SensitivityResult | dict") -> str:
    """"Scored on 180 validation samples: 1 sample = 0.56 pt; layers within one sample of each other are tied (=)"
    for a page or the CLI ('' when the scan has no sample count)."""
    data = result.to_dict() if isinstance(result, SensitivityResult) else result
    split = data.get("split") or {}
    n, step = split.get("n"), scan_resolution(data)
    if not n:
        return ""
    where = f"Scored on {n} {split.get('selection', 'validation')} samples"
    if step is None:
        return where + "; layers with equal drops are tied (=)."
    return (f"{where}: {resolution_text(n).replace('±', '')}; layers within one sample of each other are tied (=), "
            "since one sample more or less would reorder them.")


# --------------------------------------------------------------------------------------------------------------
# The scan


def scan(model, dataset, config: SensitivityConfig, *,
         on_progress: Callable | None = None, should_stop: Callable[[], bool] = lambda: False) -> SensitivityResult:
    """Change one layer at a time as `config` says and measure each against the baseline.

    Args:
        model: the core.io.graph.Model (baseline).
        dataset: its core.io.data.Dataset (validation split scored, `Dataset.selection`; calib split calibrates static
            quantization; the test split is never read).
        config: the technique and its settings.
        on_progress: called with a core.pipeline.build.ProgressEvent per layer.
        should_stop: polled between layers; when true the scan returns what it has (status "cancelled").

    Returns:
        The SensitivityResult, layers most sensitive first.

    Raises:
        UnsupportedModelError: the model has no layer the technique can change.
    """
    started = time.perf_counter()
    task = task_of(model)
    proto = _named(model.onnx_model)
    scorer = _Scorer(proto.SerializeToString(), dataset, task, config.max_samples, config.threads)
    if config.technique == "quantize":
        jobs = _quantize_jobs(proto, dataset, model, config)
    else:
        jobs = _prune_jobs(proto, dataset, model, config)
    if config.layers:
        wanted = set(config.layers)
        unknown = sorted(wanted - {j[0].name for j in jobs} - {j[0].node for j in jobs})
        if unknown:
            raise BadInputError(f"no layer named {', '.join(unknown)}; layers: "
                                + ", ".join(j[0].name for j in jobs[:20]))
        jobs = [j for j in jobs if j[0].name in wanted or j[0].node in wanted]
    samples = len(next(iter(scorer.inputs.values())))
    result = SensitivityResult(config.technique, model.source, dataset.source, config.to_dict(), scorer.metric,
                               {"accuracy": scorer.baseline_accuracy, "samples": samples, "split": scorer.split_name},
                               split={"selection": scorer.split_name, "n": samples})
    result.split["resolution_pt"] = scan_resolution(result)
    for index, (layer, build) in enumerate(jobs):
        if should_stop():
            result.status = "cancelled"
            break
        if on_progress is not None:
            on_progress(ProgressEvent("step", layer.name, index, len(jobs), f"changing {layer.name} alone",
                                      index / max(1, len(jobs)), time.perf_counter() - started))
        try:
            scores = {}
            for amount, model_bytes in build():
                scores[amount] = scorer.score(model_bytes)
            primary = scores[None] if None in scores else scores[config.amount]
            for key in ("drop", "accuracy", "agreement", "cosine_mean", "sqnr_db"):
                setattr(layer, key, primary[key])
            if config.technique == "prune" and len(scores) > 1:
                layer.by_amount = {f"{a:g}": s["drop"] for a, s in sorted(scores.items())}
        except FeatherweightError as exc:
            layer.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one layer that cannot be changed must not lose the others
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            layer.error = f"{exc.__class__.__name__}: {first}"
        result.layers.append(layer)
        if on_progress is not None:
            on_progress(ProgressEvent("variant_done", layer.name, index, len(jobs), f"{layer.name}: drop "
                                      f"{layer.drop} pt", (index + 1) / max(1, len(jobs)),
                                      time.perf_counter() - started, layer.to_dict()))
    result.layers = _rank(result.layers, result.split["resolution_pt"])
    result.duration_s = round(time.perf_counter() - started, 3)
    return result


def _quantize_jobs(proto, dataset, model, config: SensitivityConfig) -> list:
    """(layer, build) per quantizable node; build() quantizes that node alone (every other node excluded)."""
    layers = quantizable_layers(proto)
    if not layers:
        raise UnsupportedModelError("the sensitivity scan found no Conv / Gemm / MatMul / Gather layer with "
                                    "weights to quantize")
    names = [n.name for n in proto.graph.node]
    context = StepContext(dataset=dataset, baseline=model)
    jobs = []
    for row in layers:
        def build(_target=row["name"]):
            step = config.quantize_config(exclude=tuple(n for n in names if n != _target))
            candidate = apply_step(step, Candidate(onnx_model=proto), context)
            return [(None, candidate.onnx_model.SerializeToString())]

        jobs.append((LayerSensitivity(row["name"], row["type"], node=row["name"], params=row["params"]), build))
    return jobs


def _prune_jobs(proto, dataset, model, config: SensitivityConfig) -> list:
    """(layer, build) per prunable layer; build() zeroes the `amount` smallest-magnitude weights of that layer
    alone (through the torch module's parameter when there is one, else the ONNX initializer)."""
    amounts = sorted({config.amount, *config.amounts})
    jobs = []
    if model.torch_module is not None:
        import torch

        module = copy.deepcopy(model.torch_module).eval()
        for name, layer in prunable_layers(module):
            def build(_layer=layer):
                out = []
                original = _layer.weight.detach().clone()
                try:
                    for amount in amounts:
                        weight = original.cpu().numpy()
                        mask = magnitude_masks({"w": weight}, amount, "layer")["w"]
                        with torch.no_grad():
                            _layer.weight.copy_(original * torch.from_numpy(mask).to(original.dtype))
                        exported = export_candidate(Candidate(torch_module=module), model, dataset)
                        out.append((amount, exported.onnx_model.SerializeToString()))
                finally:
                    with torch.no_grad():
                        _layer.weight.copy_(original)
                return out

            jobs.append((LayerSensitivity(name, type(layer).__name__, node=_node_of_module(proto, name),
                                          params=int(layer.weight.numel())), build))
    else:
        from onnx import numpy_helper

        targets = onnx_weight_initializers(proto)
        by_name = {i.name: i for i in proto.graph.initializer}
        types = {n.name: n.op_type for n in proto.graph.node}
        for init_name, users in targets.items():
            def build(_init=init_name):
                out = []
                original = numpy_helper.to_array(by_name[_init]).copy()
                try:
                    for amount in amounts:
                        mask = magnitude_masks({"w": original.astype(np.float32)}, amount, "layer")["w"]
                        by_name[_init].CopyFrom(numpy_helper.from_array(
                            (original * mask.astype(original.dtype)).astype(original.dtype), _init))
                        out.append((amount, proto.SerializeToString()))
                finally:
                    by_name[_init].CopyFrom(numpy_helper.from_array(original, _init))
                return out

            jobs.append((LayerSensitivity(users[0], types.get(users[0], "?"), node=users[0],
                                          params=int(np.prod(by_name[init_name].dims))), build))
    if not jobs:
        raise UnsupportedModelError("the sensitivity scan found no Conv / Linear (or Conv / Gemm / MatMul weight) "
                                    "layer to prune")
    return jobs


# --------------------------------------------------------------------------------------------------------------
# Using a scan


def top_layers(result: SensitivityResult | dict, k: int) -> list[str]:
    """The ONNX node names of the k most sensitive layers (what a quantize step's `exclude` takes)."""
    if isinstance(result, dict):
        result = SensitivityResult.from_dict(result)
    names = [layer.node or layer.name for layer in result.layers if layer.error is None]
    return names[:max(0, int(k))]


def recipe_with_exclude(recipe: Recipe, names: list[str] | tuple) -> Recipe:
    """The recipe with `names` kept in float by every quantize step; one static-int8 variant is added when the
    recipe has no quantize step at all."""
    names = tuple(dict.fromkeys(names))
    variants, touched = [], False
    for variant in recipe.variants:
        steps = []
        for step in variant.steps:
            if isinstance(step, QuantizeConfig):
                step = dataclasses.replace(step, exclude=names)
                touched = True
            steps.append(step)
        variants.append(Variant(variant.name, tuple(steps)))
    if not touched:
        name, n = f"int8-static-float-top{len(names)}", 2
        taken = {v.name for v in variants}
        while name in taken:
            name, n = f"int8-static-float-top{len(names)}-{n}", n + 1
        variants.append(Variant(name, (QuantizeConfig(mode="static", exclude=names),)))
    return recipe.replace(variants=tuple(variants))


def write_sensitivity(result: SensitivityResult, out_dir: str | Path) -> Path:
    """DIR/sensitivity.json, written atomically."""
    path = Path(out_dir) / "sensitivity.json"
    write_atomic(path, json.dumps(result.to_dict(), indent=2))
    return path


def load_sensitivity(path: str | Path) -> SensitivityResult:
    """Read sensitivity.json (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "sensitivity.json"
    try:
        return SensitivityResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}") from None


def scan_to_dir(model_spec: str, data_spec: str | None, config: SensitivityConfig, out_dir: str | Path, *,
                on_progress: Callable | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> SensitivityResult:
    """Load the model and data, scan, and write DIR/sensitivity.json.

    Raises:
        BadInputError: a rejected model or data that does not fit it.
    """
    model = load_model(model_spec)
    dataset = load_data(data_spec, model, seed=0, train_needed=False)  # a scan quantizes; it never trains
    runtime.check_runs(model.onnx_bytes(), dataset.eval.take(1).x)
    result = scan(model, dataset, config, on_progress=on_progress, should_stop=should_stop)
    result.model, result.data = model_spec, data_spec
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_sensitivity(result, out_dir)
    return result


__all__ = ["LayerSensitivity", "SensitivityConfig", "SensitivityResult", "load_sensitivity", "mark_ties",
           "quantizable_layers", "recipe_with_exclude", "resolution_caption", "scan", "scan_resolution", "scan_to_dir",
           "sqnr_db", "top_layers", "write_sensitivity"]
