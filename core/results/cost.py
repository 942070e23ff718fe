"""Cost, energy and device fit: dollars per million inferences, joules per inference (measured from RAPL energy
counters or estimated from CPU time), grams of CO2, and roofline estimates of whether a variant fits a device.

Every number that depends on a price, a wattage or a grid intensity is computed here from measured quantities
(throughput, CPU time, energy counters, the ONNX graph) and a `CostAssumptions`; the defaults are assumptions
with a stated source (see README, "Cost, energy and device fit"), never measurements.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.errors import BadInputError
from core.io.files import scratch_cwd

# --------------------------------------------------------------------------------------------------------------
# Assumptions and their sources

# AWS EC2 on-demand c7i.large (2 vCPU, Linux, us-east-1) list price, USD per instance-hour. An assumption: prices
# change and differ by region and provider; edit it.
DEFAULT_INSTANCE_PRICE_USD = 0.08925
DEFAULT_INSTANCE_CORES = 2
DEFAULT_PRICE_PER_CORE_HOUR_USD = DEFAULT_INSTANCE_PRICE_USD / DEFAULT_INSTANCE_CORES  # 0.0446 per vCPU-hour
# Cloud Carbon Footprint methodology: average maximum power per busy vCPU on AWS (from SPECpower_ssj2008 data).
DEFAULT_WATTS_PER_CORE = 3.5
# IEA: world-average carbon intensity of electricity generation, ~475 gCO2/kWh.
DEFAULT_GRID_G_PER_KWH = 475.0
# No source: an illustrative traffic level for the monthly figures; set your own.
DEFAULT_REQUESTS_PER_SECOND = 100.0
# 730 hours a month (8760 / 12): the convention of cloud price lists and calculators.
HOURS_PER_MONTH = 730.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0
JOULES_PER_KWH = 3.6e6
# Results are rounded to 4 significant figures: the measurements are not more precise than that.
SIGNIFICANT_DIGITS = 4

SOURCES = {
    "price_per_core_hour_usd": "AWS EC2 on-demand c7i.large, us-east-1, Linux: $0.08925/h for 2 vCPU "
                               "= $0.0446 per vCPU-hour (list price; an assumption, edit to yours)",
    "watts_per_core": "Cloud Carbon Footprint methodology: 3.5 W average maximum per busy vCPU on AWS "
                      "(SPECpower-based; an assumption, used only when energy is estimated)",
    "grid_g_per_kwh": "IEA world-average carbon intensity of electricity, ~475 gCO2/kWh (an assumption; "
                      "use your region's figure)",
    "requests_per_second": "illustrative traffic level (no source); set your own",
    "hours_per_month": "730 h per month (8760 / 12), the cloud price-list convention",
}

# Session-state keys of the Cost page (one place, so the page and its tests agree).
COST_RUN_KEY = "fw_cost_run"
COST_BATCH_KEY = "fw_cost_batch"
COST_PRICING_KEY = "fw_cost_pricing"  # "per core-hour" | "per instance-hour"
COST_PRICE_KEY = "fw_cost_price_per_core_hour"
COST_INSTANCE_PRICE_KEY = "fw_cost_instance_price"
COST_CORES_KEY = "fw_cost_cores"
COST_WATTS_KEY = "fw_cost_watts_per_core"
COST_GRID_KEY = "fw_cost_grid_g_per_kwh"
COST_RPS_KEY = "fw_cost_requests_per_second"
COST_DEVICES_KEY = "fw_cost_devices"
COST_DEVICE_FILTER_KEY = "fw_cost_device_filter"
PRICING_MODES = ("per core-hour", "per instance-hour")


def _round_sig(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """`value` to `digits` significant figures (None and non-finite values pass through as None)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def _check(name: str, value, minimum: float, *, strict: bool = False) -> None:
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
        or (value <= minimum if strict else value < minimum)
    if bad:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise BadInputError(f"{name} must be a number {bound}; got {value!r}")


@dataclass(frozen=True)
class CostAssumptions:
    """Prices, power and traffic that turn measurements into dollars, joules and grams (all user-editable)."""

    price_per_core_hour_usd: float = DEFAULT_PRICE_PER_CORE_HOUR_USD
    cores: int = DEFAULT_INSTANCE_CORES  # cores (vCPUs) per instance: converts instance-hour prices
    watts_per_core: float = DEFAULT_WATTS_PER_CORE
    grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND

    def __post_init__(self):
        _check("price_per_core_hour_usd", self.price_per_core_hour_usd, 0)
        if not isinstance(self.cores, int) or isinstance(self.cores, bool) or self.cores < 1:
            raise BadInputError(f"cores must be a whole number >= 1; got {self.cores!r}")
        _check("watts_per_core", self.watts_per_core, 0)
        _check("grid_g_per_kwh", self.grid_g_per_kwh, 0)
        _check("requests_per_second", self.requests_per_second, 0)

    @classmethod
    def from_instance_price(cls, usd_per_instance_hour: float, cores: int, **others) -> "CostAssumptions":
        """Assumptions from an instance's hourly price and its core count (price per core = price / cores)."""
        _check("usd_per_instance_hour", usd_per_instance_hour, 0)
        if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
            raise BadInputError(f"cores must be a whole number >= 1; got {cores!r}")
        return cls(price_per_core_hour_usd=usd_per_instance_hour / cores, cores=cores, **others)

    @classmethod
    def from_dict(cls, data: dict | None) -> "CostAssumptions":
        """Assumptions from a dict (unknown keys ignored, missing ones default)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})

    @property
    def price_per_instance_hour_usd(self) -> float:
        return self.price_per_core_hour_usd * self.cores

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------------
# Money


def cost_per_million(throughput_per_s: float | None, assumptions: CostAssumptions, threads: int = 1) -> float | None:
    """USD per million inferences at a measured throughput.

    The benchmark keeps `threads` cores busy, so a million inferences take ``1e6 / throughput`` seconds of
    ``threads`` cores: cost = that many core-hours x the price per core-hour.

    Args:
        throughput_per_s: measured samples per second (at one batch size).
        assumptions: the price per core-hour.
        threads: cores the benchmark used (the run's ``environment.threads``).

    Returns:
        USD per 1,000,000 inferences, 4 significant figures; None without a positive throughput.
    """
    if not throughput_per_s or throughput_per_s <= 0:
        return None
    core_hours = 1e6 / throughput_per_s * max(1, int(threads)) / 3600.0
    return _round_sig(core_hours * assumptions.price_per_core_hour_usd)


def decoder_cost(variant: dict, assumptions: CostAssumptions | None = None, threads: int = 1) -> dict:
    """A decoder variant's cost per million generated tokens, from its measured decode tokens/s at batch 1.

    Generation is decode-bound (one forward pass per token), so the decode rate prices a token; prefill is
    faster per token and reported beside it. Same arithmetic as `cost_per_million`, with tokens for inferences.

    Returns:
        ``{"usd_per_million_tokens": decode-priced, "usd_per_million_prompt_tokens": prefill-priced,
        "basis": str, "assumptions": {...}, "threads": n}``.
    """
    assumptions = assumptions or CostAssumptions()
    rates = variant.get("tokens_per_s") or {}
    return {"usd_per_million_tokens": cost_per_million(rates.get("decode"), assumptions, threads),
            "usd_per_million_prompt_tokens": cost_per_million(rates.get("prefill"), assumptions, threads),
            "basis": "measured decode (and prefill) tokens/s at batch 1 x price per core-hour x threads",
            "assumptions": assumptions.to_dict(), "threads": threads}


def monthly_cost(usd_per_million: float | None, requests_per_second: float) -> float | None:
    """USD a month to serve `requests_per_second` (one inference each) for 730 hours."""
    if usd_per_million is None:
        return None
    return _round_sig(usd_per_million * requests_per_second * SECONDS_PER_MONTH / 1e6)


def monthly_saving(baseline_usd_per_million: float | None, variant_usd_per_million: float | None,
                   requests_per_second: float) -> float | None:
    """USD saved a month by serving the variant instead of the baseline (negative: the variant costs more)."""
    if baseline_usd_per_million is None or variant_usd_per_million is None:
        return None
    return _round_sig((baseline_usd_per_million - variant_usd_per_million) * requests_per_second
                      * SECONDS_PER_MONTH / 1e6)


# --------------------------------------------------------------------------------------------------------------
# Energy: measured (powercap) or estimated (CPU time x watts per core)

POWERCAP_ROOT = Path("/sys/class/powercap")
# RAPL counters update about every millisecond; shorter windows give mostly quantization noise.
MIN_ENERGY_WINDOW_S = 0.05
_TOP_ZONE = re.compile(r"^[a-z_-]*rapl:\d+$")  # intel-rapl:0 (also AMD's package counters on Linux >= 5.8)


@dataclass(frozen=True)
class EnergyZone:
    """One top-level powercap zone (a CPU package): where its counter is and when it wraps."""

    path: Path
    name: str
    max_energy_range_uj: int | None


def find_energy_zones(root: str | Path | None = None) -> tuple[list[EnergyZone], str | None]:
    """The readable CPU-package energy counters under a powercap root.

    Sub-zones (``intel-rapl:0:0`` core / uncore / dram) are inside their package and ``-mmio`` zones duplicate
    it, so only top-level package zones are summed (``psys``, the whole platform, only when no package zone).

    Returns:
        ``(zones, None)`` when counters can be read, else ``([], reason)`` saying why not.
    """
    root = Path(root) if root is not None else POWERCAP_ROOT
    if not root.is_dir():
        return [], f"no powercap interface at {root}"
    candidates = []
    for path in sorted(root.iterdir()):
        if not _TOP_ZONE.match(path.name) or "mmio" in path.name or not (path / "energy_uj").exists():
            continue
        try:
            name = (path / "name").read_text(encoding="utf-8").strip()
        except OSError:
            name = path.name
        candidates.append((path, name))
    if not candidates:
        return [], f"no RAPL energy counters under {root}"
    packages = [c for c in candidates if c[1].startswith("package")]
    chosen = packages or [c for c in candidates if c[1] == "psys"] or candidates
    zones = []
    for path, name in chosen:
        try:
            int((path / "energy_uj").read_text(encoding="utf-8").strip())
        except PermissionError:
            return [], (f"energy counters at {path / 'energy_uj'} are not readable by this user (permission "
                        "denied: since the CVE-2020-8694 fix only root can read them)")
        except (OSError, ValueError) as exc:
            return [], f"cannot read {path / 'energy_uj'}: {exc}"
        try:
            max_range = int((path / "max_energy_range_uj").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            max_range = None  # a wrap cannot be undone: such a window is discarded
        zones.append(EnergyZone(path, name, max_range))
    return zones, None


class EnergyCounter:
    """Reads and differences the CPU-package energy counters (RAPL via powercap; AMD's on recent kernels)."""

    def __init__(self, root: str | Path | None = None, *, min_window_s: float = MIN_ENERGY_WINDOW_S):
        self.root = Path(root) if root is not None else POWERCAP_ROOT
        self.min_window_s = min_window_s
        self.zones, self.reason = find_energy_zones(self.root)

    @property
    def available(self) -> bool:
        return bool(self.zones)

    @property
    def source(self) -> str:
        """How measured numbers were obtained, for the 'measured' label."""
        names = " + ".join(z.name for z in self.zones)
        return f"measured (RAPL powercap: {names}; whole CPU package, other processes included)"

    def read(self) -> tuple[int, ...] | None:
        """Every zone's counter in microjoules, or None when one cannot be read."""
        try:
            return tuple(int((z.path / "energy_uj").read_text(encoding="utf-8").strip()) for z in self.zones)
        except (OSError, ValueError):
            return None

    def joules(self, before: tuple[int, ...] | None, after: tuple[int, ...] | None,
               window_s: float | None = None) -> float | None:
        """Energy between two readings, undoing counter wraps with ``max_energy_range_uj``.

        Returns:
            Joules, or None when a reading failed, the window was shorter than `min_window_s`, a counter
            wrapped without a known range, or the counters did not advance.
        """
        if before is None or after is None or len(before) != len(after) or not self.zones:
            return None
        if window_s is not None and window_s < self.min_window_s:
            return None
        total_uj = 0
        for zone, start, end in zip(self.zones, before, after):
            delta = end - start
            if delta < 0:
                if not zone.max_energy_range_uj:
                    return None
                delta += zone.max_energy_range_uj
            total_uj += delta
        return total_uj / 1e6 if total_uj > 0 else None


@dataclass(frozen=True)
class EnergyEstimate:
    """Joules per inference, whether they were measured or estimated, and what was assumed."""

    joules: float | None
    basis: str | None  # "measured" | "estimated" | None
    assumption: str


def energy_per_inference(cpu_ms_per_sample: float | None, measured_joules: float | None,
                         assumptions: CostAssumptions, *, source: str | None = None,
                         throughput_per_s: float | None = None, threads: int = 1) -> EnergyEstimate:
    """Joules per inference: measured when the energy counters gave a number, else estimated.

    Estimated = CPU seconds per inference x watts per core (CPU time counts every busy thread, so it already
    covers multi-threaded runs); without a recorded CPU time, wall time x threads stands in for it.
    """
    if measured_joules is not None and measured_joules > 0:
        return EnergyEstimate(_round_sig(measured_joules), "measured", source or "measured (RAPL powercap)")
    watts = assumptions.watts_per_core
    if cpu_ms_per_sample is not None and cpu_ms_per_sample > 0:
        return EnergyEstimate(_round_sig(cpu_ms_per_sample / 1000.0 * watts), "estimated",
                              f"estimated: CPU time x {watts:g} W per core")
    if throughput_per_s:
        return EnergyEstimate(_round_sig(max(1, int(threads)) / throughput_per_s * watts), "estimated",
                              f"estimated: wall time x {max(1, int(threads))} thread(s) x {watts:g} W per core "
                              "(no CPU time recorded)")
    return EnergyEstimate(None, None, "not measured")


def co2_grams(joules: float | None, grid_g_per_kwh: float) -> float | None:
    """Grams of CO2 for `joules` of electricity at a grid intensity in gCO2/kWh."""
    if joules is None:
        return None
    return _round_sig(joules / JOULES_PER_KWH * grid_g_per_kwh)


# --------------------------------------------------------------------------------------------------------------
# Compute profile of an ONNX graph (batch 1)

_INT8_OPS = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
             "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm"}
# Ops whose multiply-accumulates are counted, with the input index of the weight (Conv) or of (A, B) (MatMul).
_CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1, "NhwcConv": 1}
_MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "FusedMatMul": (0, 1),
               "DynamicQuantizeMatMul": (0, 1), "MatMulIntegerToFloat": (0, 1)}
_GEMM_OPS = {"Gemm": (0, 1), "QGemm": (0, 3)}


def _fix_symbolic_dims(proto, sequence_length: int):
    """A copy whose symbolic input dims are concrete (the batch axis 1, any other, e.g. tokens,
    `sequence_length`) and whose declared intermediate / output shapes are dropped, so inference recomputes them."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = 1 if axis == 0 else sequence_length
    del model.graph.value_info[:]
    ordered = _topological_order(model.graph)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    for value in model.graph.output:
        if value.type.HasField("tensor_type"):
            value.type.tensor_type.ClearField("shape")
    return model


def _topological_order(graph) -> list:
    """The graph's nodes in an order where every input is made before it is used (some converters, e.g.
    fp16's, append nodes out of order; onnxruntime accepts that, onnx's shape inference does not)."""
    available = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle or a name from an outer scope: keep the rest as written
            return ordered + pending
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    return ordered


def _collect_shapes(graph) -> dict[str, tuple[tuple, int, int]]:
    """name -> (shape, itemsize, elem_type) for every tensor with a full static shape."""
    from onnx import helper

    out = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = value.type.tensor_type
        if not tensor.HasField("shape") or not tensor.elem_type:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        if any(d is None or d < 0 for d in dims):
            continue
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            continue
        out[value.name] = (dims, itemsize, tensor.elem_type)
    return out


def _infer(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference rejects some valid graphs; fall back to declared shapes
        return model


def _shapes(model) -> dict[str, tuple[tuple, int, int]]:
    """Static shapes of the graph's tensors (onnx inference; contrib ops handled as far as possible)."""
    from onnx import helper

    produced = {o for n in model.graph.node for o in n.output if o}
    shapes = _collect_shapes(_infer(model).graph)
    # onnx's inference stops at contrib ops. MatMulNBits (what int4 produces) is simple: declare its output
    # (A's shape with the last axis N) and infer again, until nothing more is learnt.
    for _ in range(len(model.graph.node)):
        added = False
        for node in model.graph.node:
            if node.op_type == "MatMulNBits" and node.output[0] not in shapes and node.input[0] in shapes:
                dims, _, elem = shapes[node.input[0]]
                n = int(_attributes(node).get("N", 0))
                if n > 0:
                    model.graph.value_info.append(helper.make_tensor_value_info(node.output[0], elem,
                                                                                list(dims[:-1]) + [n]))
                    added = True
        if not added:
            break
        shapes = _collect_shapes(_infer(model).graph)
    if produced - set(shapes):
        # Other contrib ops: onnxruntime's symbolic inference knows them (its first use imports sympy, ~2 s).
        try:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            # When it cannot infer every shape it saves the model into the working directory, then raises.
            with scratch_cwd():
                symbolic = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
            shapes = {**_collect_shapes(symbolic.graph), **shapes}
        except Exception:  # noqa: BLE001 - best effort: unknown shapes are counted and reported
            pass
    return shapes


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _prod(values) -> int:
    total = 1
    for v in values:
        total *= int(v)
    return total


def model_compute_profile(proto, *, sequence_length: int = 128) -> dict:
    """Multiply-accumulates, weight bytes and peak activation bytes of one inference (batch 1).

    MACs count Conv / ConvTranspose / MatMul / Gemm and their quantized forms (an int8 op, or a float op fed by
    DequantizeLinear on both sides, which onnxruntime fuses into an int8 kernel). Peak activations come from a
    liveness pass over the (topologically ordered) nodes: a tensor lives from the node that makes it to its
    last consumer; tensors computed only from weights are treated as weights (constant-folded). Graphs with a
    fixed batch axis are divided by it.

    Args:
        proto: the ONNX ModelProto.
        sequence_length: the length given to symbolic non-batch input axes (e.g. tokens).

    Returns:
        ``{macs, int8_macs, float_macs, weight_bytes, peak_activation_bytes, bytes_moved, precision,
        unknown_shapes}``; bytes_moved = weights + every activation written once and read by each consumer.
    """
    from onnx import AttributeProto, helper

    graph = proto.graph
    batch = 1
    initializer_names = {i.name for i in graph.initializer}
    for value in graph.input:
        if value.name not in initializer_names:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 1:
                batch = dims[0].dim_value
            break
    model = _fix_symbolic_dims(proto, sequence_length)
    shapes = _shapes(model)
    graph = model.graph  # the same graph, nodes in topological order
    for tensor in graph.initializer:  # weights: their shape only, never activation bytes
        shapes.setdefault(tensor.name, (tuple(tensor.dims), 0, tensor.data_type))

    weight_bytes = 0
    constants = set(initializer_names)
    for tensor in graph.initializer:
        weight_bytes += _tensor_bytes(tensor)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    weight_bytes += _tensor_bytes(attr.t)
            constants.update(o for o in node.output if o)
        elif node.input and all((not i) or i in constants for i in node.input):
            constants.update(o for o in node.output if o)  # folded at load time: a weight, not an activation

    producers = {o: node for node in graph.node for o in node.output if o}

    def is_dequantized(name: str) -> bool:
        node = producers.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    int8_macs = float_macs = 0
    unknown = 0
    for node in graph.node:
        op = node.op_type
        out = shapes.get(node.output[0]) if node.output else None
        if op in _CONV_OPS or op == "ConvTranspose":
            weight_index = _CONV_OPS.get(op, 1)
            weight = shapes.get(node.input[weight_index])
            # Output elements x (input channels per group x kernel area); ConvTranspose runs from its input.
            source = shapes.get(node.input[0]) if op == "ConvTranspose" else out
            macs = _prod(source[0]) * _prod(weight[0][1:]) if source and weight else None
        elif op in _MATMUL_OPS or op in _GEMM_OPS:
            a_index, weight_index = _MATMUL_OPS.get(op) or _GEMM_OPS[op]
            a = shapes.get(node.input[a_index])
            if not (out and a and a[0]):
                macs = None
            elif op in _GEMM_OPS:
                macs = _prod(out[0]) * a[0][0 if _attributes(node).get("transA", 0) else -1]
            else:
                macs = _prod(out[0]) * a[0][-1]
        elif op == "MatMulNBits":
            weight_index = 1
            k = _attributes(node).get("K")
            macs = _prod(out[0]) * int(k) if out and k else None
        else:
            continue
        if macs is None:
            unknown += 1
            continue
        # A float op fed by DequantizeLinear on both sides is a QDQ pair onnxruntime fuses into an int8 kernel.
        if op == "MatMulNBits":  # int4 weights; the arithmetic is int8 only at accuracy_level 4, else float
            quantized = int(_attributes(node).get("accuracy_level", 0)) == 4
        else:
            quantized = op in _INT8_OPS or (len(node.input) > weight_index and is_dequantized(node.input[0])
                                            and is_dequantized(node.input[weight_index]))
        if quantized:
            int8_macs += macs
        else:
            float_macs += macs

    # Liveness pass over activations.
    graph_outputs = {o.name for o in graph.output}
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in constants:
                last_use[name] = index

    def nbytes(name: str) -> int:
        shape = shapes.get(name)
        return _prod(shape[0]) * shape[1] if shape else 0

    live: dict[str, int] = {}
    for value in graph.input:
        if value.name not in constants:
            live[value.name] = nbytes(value.name)
    peak = sum(live.values())
    traffic = 0
    for index, node in enumerate(graph.node):
        outputs = [o for o in node.output if o and o not in constants]
        for name in outputs:
            live[name] = nbytes(name)
            if name not in shapes:
                unknown += 1
        peak = max(peak, sum(live.values()))
        traffic += sum(nbytes(i) for i in node.input if i and i not in constants) + sum(nbytes(o) for o in outputs)
        for name in [n for n in live if last_use.get(n, -1) <= index and n not in graph_outputs]:
            del live[name]

    total_macs = int8_macs + float_macs
    if int8_macs and float_macs:
        precision = "mixed"
    elif int8_macs:
        precision = "int8"
    else:
        float_types = {helper.tensor_dtype_to_np_dtype(t.data_type).name for t in graph.initializer
                       if t.data_type in (1, 10, 16)}
        precision = "fp16" if "float16" in float_types and "float32" not in float_types else "fp32"
    if any(n.op_type == "MatMulNBits" for n in graph.node):
        precision = f"int4 weights, {precision} compute"
    per = max(1, batch)
    return {"macs": int(total_macs // per), "int8_macs": int(int8_macs // per), "float_macs": int(float_macs // per),
            "weight_bytes": int(weight_bytes), "peak_activation_bytes": int(peak // per),
            "bytes_moved": int(weight_bytes + traffic // per), "precision": precision, "unknown_shapes": unknown}


def _tensor_bytes(tensor) -> int:
    from onnx import helper

    if tensor.HasField("raw_data") and tensor.raw_data:
        return len(tensor.raw_data)
    count = _prod(tensor.dims) if len(tensor.dims) else 1
    try:
        return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return count * 4


# --------------------------------------------------------------------------------------------------------------
# Devices


@dataclass(frozen=True)
class DeviceProfile:
    """A target device: memory, sustained int8 / fp32 throughput and memory bandwidth (rough, editable)."""

    name: str
    memory_bytes: int  # RAM for activations (and for weights when weight_memory_bytes is None)
    int8_gops: float  # sustained int8 ops/s in billions (1 multiply-accumulate = 2 ops)
    fp32_gflops: float  # sustained fp32 FLOP/s in billions (fp16 graphs are assumed to run at this rate)
    bandwidth_gbps: float  # sustained memory bandwidth, GB/s
    weight_memory_bytes: int | None = None  # separate weight storage (a microcontroller's flash); None = shared

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise BadInputError(f"a device needs a name; got {self.name!r}")
        for name in ("memory_bytes", "int8_gops", "fp32_gflops", "bandwidth_gbps"):
            _check(f"{self.name}: {name}", getattr(self, name), 0, strict=True)
        if self.weight_memory_bytes is not None:
            _check(f"{self.name}: weight_memory_bytes", self.weight_memory_bytes, 0, strict=True)

    def to_dict(self) -> dict:
        return asdict(self)


MB = 1_000_000
# Rough, illustrative profiles (derivations in README): peak = cores x clock x SIMD ops per cycle, derated ~50%
# for sustained kernels; bandwidth ~60% of the memory bus's theoretical rate. Edit them to your device.
DEFAULT_DEVICES = (
    # 4 big Arm Cortex-A7x-class cores ~2.8 GHz, 2x128-bit FMA (fp32 peak ~180 GFLOPS; int8 SDOT 4x that);
    # LPDDR5 64-bit 6400 MT/s = 51 GB/s theoretical. CPU only: an NPU is not counted. 1 GB app budget.
    DeviceProfile("Phone SoC (CPU cores)", 1000 * MB, int8_gops=360.0, fp32_gflops=90.0, bandwidth_gbps=30.0),
    # Raspberry Pi 4: 4x Cortex-A72 1.5 GHz (fp32 peak ~48 GFLOPS, no int8 dot product); LPDDR4 32-bit,
    # ~4-5 GB/s measured by STREAM-like tests. 2 GB of its 4 GB for the model.
    DeviceProfile("Raspberry Pi 4 class", 2000 * MB, int8_gops=40.0, fp32_gflops=20.0, bandwidth_gbps=4.0),
    # Cortex-M7 480 MHz (STM32H7-class): CMSIS-NN int8 2 MACs/cycle (~1.9 GOPS peak), single-precision FPU 1 FMA
    # per cycle (~1 GFLOPS peak); 1 MB SRAM for activations, 2 MB flash for weights.
    DeviceProfile("Microcontroller (Cortex-M7 class)", 1 * MB, int8_gops=1.0, fp32_gflops=0.5,
                  bandwidth_gbps=1.0, weight_memory_bytes=2 * MB),
)


def _profile_of(row) -> dict | None:
    """A compute profile from a results.json variant (its ``compute``) or a results / cost table row."""
    getter = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    compute = getter("compute", None)
    if isinstance(compute, dict) and compute:
        return compute
    profile = {}
    for key in ("macs", "int8_macs", "float_macs", "weight_bytes", "peak_activation_bytes", "bytes_moved",
                "precision"):
        value = getter(key, None)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            profile[key] = value
    return profile or None


def device_fit(profile: dict | None, device: DeviceProfile) -> dict:
    """Whether a variant's weights and peak activations fit `device`, and a roofline latency estimate.

    The estimate is ``max(compute time, memory time)`` with compute time = 2 x int8 MACs / int8 throughput +
    2 x float MACs / fp32 throughput and memory time = bytes moved / bandwidth, at batch 1: an estimate, not a
    measurement (no cache reuse, no kernel overheads, no operator support checks).

    Returns:
        ``{fits, latency_ms_estimate, bound, memory_needed_bytes, reason}``; ``fits`` is False when the profile
        is unknown.
    """
    if not profile or profile.get("weight_bytes") is None or profile.get("peak_activation_bytes") is None:
        return {"fits": False, "latency_ms_estimate": None, "bound": None, "memory_needed_bytes": None,
                "reason": "no compute profile recorded for this variant"}
    weights = int(profile["weight_bytes"])
    activations = int(profile["peak_activation_bytes"])
    if device.weight_memory_bytes is None:
        needed = weights + activations
        fits = needed <= device.memory_bytes
        reason = (f"weights {format_bytes(weights)} + peak activations {format_bytes(activations)} = "
                  f"{format_bytes(needed)} {'<=' if fits else '>'} memory {format_bytes(device.memory_bytes)}")
    else:
        needed = weights + activations
        weights_fit = weights <= device.weight_memory_bytes
        activations_fit = activations <= device.memory_bytes
        fits = weights_fit and activations_fit
        reason = (f"weights {format_bytes(weights)} {'<=' if weights_fit else '>'} weight memory "
                  f"{format_bytes(device.weight_memory_bytes)}; peak activations {format_bytes(activations)} "
                  f"{'<=' if activations_fit else '>'} memory {format_bytes(device.memory_bytes)}")
    int8_macs = profile.get("int8_macs")
    float_macs = profile.get("float_macs")
    if int8_macs is None and float_macs is None:
        macs = profile.get("macs") or 0
        int8_macs, float_macs = (macs, 0) if profile.get("precision") == "int8" else (0, macs)
    compute_s = 2.0 * (int8_macs or 0) / (device.int8_gops * 1e9) + 2.0 * (float_macs or 0) / (device.fp32_gflops * 1e9)
    memory_s = float(profile.get("bytes_moved") or weights + 2 * activations) / (device.bandwidth_gbps * 1e9)
    return {"fits": bool(fits), "latency_ms_estimate": _round_sig(max(compute_s, memory_s) * 1000.0),
            "bound": "compute" if compute_s >= memory_s else "memory", "memory_needed_bytes": needed,
            "reason": reason}


def variants_fitting(results: dict, device: DeviceProfile) -> list[str]:
    """Names of the run's measured variants that fit `device` (results.json variants carry ``compute``)."""
    return [v["name"] for v in results.get("variants", [])
            if v.get("status") == "ok" and _profile_of(v) and fits(v, device)]


def fits(variant_row, device: DeviceProfile) -> bool:
    """Whether a variant (a results.json variant dict, or a results / cost table row) fits `device`."""
    return bool(device_fit(_profile_of(variant_row), device)["fits"])


def format_bytes(value) -> str:
    """Bytes in decimal units: 1234567 -> '1.23 MB'."""
    value = float(value)
    for limit, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if value >= limit:
            return f"{value / limit:.3g} {unit}"
    return f"{value:.0f} B"


def devices_to_rows(devices) -> list[dict]:
    """Device profiles as editable rows in friendly units (MB, GOPS, GFLOPS, GB/s)."""
    return [{"name": d.name, "memory_mb": d.memory_bytes / MB,
             "weight_memory_mb": None if d.weight_memory_bytes is None else d.weight_memory_bytes / MB,
             "int8_gops": d.int8_gops, "fp32_gflops": d.fp32_gflops, "bandwidth_gbps": d.bandwidth_gbps}
            for d in devices]


def devices_from_rows(rows) -> tuple[list[DeviceProfile], list[str]]:
    """Device profiles from edited rows (see `devices_to_rows`); a bad row is skipped and its error returned."""
    devices, errors, seen = [], [], set()
    for index, row in enumerate(rows, start=1):
        name = row.get("name")
        if name is None or (isinstance(name, float) and math.isnan(name)) or not str(name).strip():
            if any(_number(row.get(k)) is not None for k in ("memory_mb", "int8_gops", "fp32_gflops")):
                errors.append(f"row {index}: a device needs a name")
            continue
        name = str(name).strip()
        if name in seen:
            errors.append(f"row {index}: the name {name!r} is used twice")
            continue
        try:
            memory, weight_memory = _number(row.get("memory_mb")), _number(row.get("weight_memory_mb"))
            devices.append(DeviceProfile(
                name, memory_bytes=int(round(memory * MB)) if memory is not None else None,
                int8_gops=_number(row.get("int8_gops")), fp32_gflops=_number(row.get("fp32_gflops")),
                bandwidth_gbps=_number(row.get("bandwidth_gbps")),
                weight_memory_bytes=int(round(weight_memory * MB)) if weight_memory is not None else None))
            seen.add(name)
        except BadInputError as exc:
            errors.append(f"row {index}: {exc}")
    return devices, errors


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# --------------------------------------------------------------------------------------------------------------
# Per-variant numbers, tables and figures


def _threads(results: dict) -> int:
    try:
        return max(1, int((results.get("environment") or {}).get("threads") or 1))
    except (TypeError, ValueError):
        return 1


def variant_cost(variant: dict, assumptions: CostAssumptions | None = None, threads: int = 1) -> dict:
    """A variant's cost and energy per batch size under `assumptions` (what results.json stores as ``cost``).

    Returns:
        ``{"usd_per_million": {bs}, "joules_per_inference": {bs}, "energy_basis": {bs}, "gco2_per_million": {bs},
        "assumptions": {...}, "threads": n}`` with batch sizes as strings.
    """
    assumptions = assumptions or CostAssumptions()
    throughput = variant.get("throughput") or {}
    cpu_ms = variant.get("cpu_ms_per_sample") or {}
    energy = variant.get("energy") or {}
    measured = energy.get("joules_per_sample") or {}
    out = {"usd_per_million": {}, "joules_per_inference": {}, "energy_basis": {}, "gco2_per_million": {},
           "assumptions": assumptions.to_dict(), "threads": threads}
    for bs in sorted(set(throughput) | set(cpu_ms) | set(measured), key=lambda b: int(b)):
        out["usd_per_million"][bs] = cost_per_million(throughput.get(bs), assumptions, threads)
        estimate = energy_per_inference(cpu_ms.get(bs), measured.get(bs), assumptions, source=energy.get("source"),
                                        throughput_per_s=throughput.get(bs), threads=threads)
        out["joules_per_inference"][bs] = estimate.joules
        out["energy_basis"][bs] = estimate.basis
        out["gco2_per_million"][bs] = co2_grams(None if estimate.joules is None else estimate.joules * 1e6,
                                                assumptions.grid_g_per_kwh)
    return out


def _baseline(variants: list) -> dict:
    return next((v for v in variants if v.get("name") == "baseline"), variants[0] if variants else {})


def results_columns(variant: dict, baseline: dict, batch_sizes, threads: int = 1,
                    assumptions: CostAssumptions | None = None) -> dict:
    """The cost / energy / compute columns `results_frame` adds to a variant's row (stored assumptions first)."""
    stored = (variant.get("cost") or {}).get("assumptions")
    assumptions = assumptions or CostAssumptions.from_dict(stored)
    mine = variant_cost(variant, assumptions, threads)
    base = variant_cost(baseline, assumptions, threads)
    row = {}
    for bs in batch_sizes:
        key = str(bs)
        usd = mine["usd_per_million"].get(key)
        joules = mine["joules_per_inference"].get(key)
        row[f"usd_per_million_bs{bs}"] = usd
        row[f"monthly_saving_usd_bs{bs}"] = monthly_saving(base["usd_per_million"].get(key), usd,
                                                           assumptions.requests_per_second)
        row[f"energy_mj_bs{bs}"] = None if joules is None else _round_sig(joules * 1000.0)
        row[f"gco2_per_million_bs{bs}"] = mine["gco2_per_million"].get(key)
    bases = {b for b in mine["energy_basis"].values() if b}
    row["energy_basis"] = bases.pop() if len(bases) == 1 else ("mixed" if bases else None)
    compute = variant.get("compute") or {}
    for key in ("macs", "weight_bytes", "peak_activation_bytes"):
        row[key] = compute.get(key)
    return row


def cost_frame(results: dict, assumptions: CostAssumptions | None = None, devices=DEFAULT_DEVICES,
               batch_size: int | None = None, *, run_dir: str | Path | None = None):
    """One row per variant: cost per million, monthly cost and saving, energy (measured / estimated), CO2, and
    fit plus estimated latency on each device.

    Args:
        results: a results.json dict.
        assumptions: prices, power and traffic (defaults when None).
        devices: device profiles for the fit columns ``fits: NAME`` / ``est. ms: NAME``.
        batch_size: the serving batch size whose throughput is priced; the largest measured when None.
        run_dir: the run's directory; variants recorded before compute profiles existed get one from their
            artifact when it is given.

    Returns:
        A pandas DataFrame (empty, with the columns, when there are no variants).
    """
    import pandas as pd

    assumptions = assumptions or CostAssumptions()
    variants = results.get("variants") or []
    threads = _threads(results)
    sizes = sorted({int(b) for v in variants for b in (v.get("throughput") or {})})
    if batch_size is None or batch_size not in sizes:
        batch_size = sizes[-1] if sizes else None
    key = str(batch_size) if batch_size is not None else None
    base = _baseline(variants)
    base_usd = variant_cost(base, assumptions, threads)["usd_per_million"].get(key) if base else None
    rows = []
    for v in variants:
        numbers = variant_cost(v, assumptions, threads)
        usd = numbers["usd_per_million"].get(key)
        monthly = monthly_cost(usd, assumptions.requests_per_second)
        joules = numbers["joules_per_inference"].get(key)
        estimate = energy_per_inference((v.get("cpu_ms_per_sample") or {}).get(key),
                                        ((v.get("energy") or {}).get("joules_per_sample") or {}).get(key),
                                        assumptions, source=(v.get("energy") or {}).get("source"),
                                        throughput_per_s=(v.get("throughput") or {}).get(key), threads=threads)
        monthly_joules = None if joules is None else joules * assumptions.requests_per_second * SECONDS_PER_MONTH
        compute = v.get("compute") or (profile_from_artifact(run_dir, v) if run_dir else None) or {}
        row = {"name": v.get("name"), "status": v.get("status"), "batch_size": batch_size,
               "throughput": (v.get("throughput") or {}).get(key),
               "usd_per_million": usd, "monthly_cost_usd": monthly,
               "monthly_saving_usd": monthly_saving(base_usd, usd, assumptions.requests_per_second),
               "saving_pct": _saving_pct(base.get("throughput") or {}, v.get("throughput") or {}, key),
               "energy_mj": None if joules is None else _round_sig(joules * 1000.0),
               "energy_basis": estimate.basis, "energy_assumption": estimate.assumption,
               "gco2_per_million": numbers["gco2_per_million"].get(key),
               "monthly_kwh": None if monthly_joules is None else _round_sig(monthly_joules / JOULES_PER_KWH),
               "monthly_co2_kg": None if monthly_joules is None
               else _round_sig(monthly_joules / JOULES_PER_KWH * assumptions.grid_g_per_kwh / 1000.0),
               "size_bytes": v.get("size_bytes"), "macs": compute.get("macs"),
               "weight_bytes": compute.get("weight_bytes"),
               "peak_activation_bytes": compute.get("peak_activation_bytes"), "precision": compute.get("precision")}
        for device in devices:
            fit = device_fit(compute, device)
            row[f"fits: {device.name}"] = fit["fits"]
            row[f"est. ms: {device.name}"] = fit["latency_ms_estimate"]
        rows.append(row)
    columns = ["name", "status", "batch_size", "throughput", "usd_per_million", "monthly_cost_usd",
               "monthly_saving_usd", "saving_pct", "energy_mj", "energy_basis", "energy_assumption",
               "gco2_per_million", "monthly_kwh", "monthly_co2_kg", "size_bytes", "macs", "weight_bytes",
               "peak_activation_bytes", "precision"]
    columns += [c for d in devices for c in (f"fits: {d.name}", f"est. ms: {d.name}")]
    return pd.DataFrame(rows, columns=columns)


def _saving_pct(base_throughput: dict, throughput: dict, key) -> float | None:
    """Percent of the baseline's cost saved: 1 - baseline throughput / variant throughput (same price, same
    threads), from the unrounded measurements."""
    base, mine = base_throughput.get(key), throughput.get(key)
    if not base or not mine:
        return None
    return _round_sig((1.0 - base / mine) * 100.0)


def device_fit_frame(results: dict, devices=DEFAULT_DEVICES, *, run_dir: str | Path | None = None):
    """Long form: one row per (variant, device) with fits, estimated latency, what bounds it, and why."""
    import pandas as pd

    rows = []
    for v in results.get("variants") or []:
        if v.get("status") not in (None, "ok"):
            continue
        compute = v.get("compute") or (profile_from_artifact(run_dir, v) if run_dir else None) or {}
        for device in devices:
            fit = device_fit(compute, device)
            rows.append({"variant": v.get("name"), "device": device.name, "fits": fit["fits"],
                         "est_latency_ms": fit["latency_ms_estimate"], "bound": fit["bound"],
                         "reason": fit["reason"]})
    return pd.DataFrame(rows, columns=["variant", "device", "fits", "est_latency_ms", "bound", "reason"])


def profile_from_artifact(run_dir, variant: dict) -> dict | None:
    """The compute profile of a variant's model file inside `run_dir` (runs recorded before profiles existed)."""
    artifact = variant.get("artifact")
    if not artifact or variant.get("status") not in (None, "ok"):
        return None
    path = (Path(run_dir) / artifact).resolve()
    if Path(run_dir).resolve() not in path.parents or not path.is_file():
        return None
    # Parsed in a worker with the upload limits: the file is a run's output, and a run may have been fed a
    # hostile model (issue 15). core.jobs.queue sits above this module; imported here, where it is needed.
    from core.jobs.queue import compute_profile_isolated

    try:
        return compute_profile_isolated(str(path))
    except Exception:  # noqa: BLE001 - an unreadable artifact only loses its device-fit columns
        return None


def cost_figure(frame, *, device: str | None = None, height: int = 440):
    """Cost per million inferences (x) vs energy per inference (y) for each ok variant; the marker says whether
    energy was measured (filled) or estimated (open); variants that do not fit `device` are grey."""
    import plotly.graph_objects as go

    from core.views.charts import ACCENT, FONT, GRID, INK, MUTED, OUT_OF_BUDGET, empty_figure, label_positions

    if frame is None or frame.empty:
        return empty_figure("No variants in this run yet.")
    rows = frame[(frame["status"].fillna("ok") == "ok") & frame["usd_per_million"].notna()
                 & frame["energy_mj"].notna()].reset_index(drop=True)
    if rows.empty:
        return empty_figure("No measured variants: cost and energy need a measured throughput.")
    fit_column = f"fits: {device}" if device else None
    x_top = float(rows["usd_per_million"].max()) * 1.15 or 1.0
    y_top = float(rows["energy_mj"].max()) * 1.15 or 1.0
    positions = dict(zip(rows["name"], label_positions(rows["usd_per_million"], rows["energy_mj"], list(rows["name"]),
                                                       x_range=(0.0, x_top), y_range=(0.0, y_top),
                                                       height_px=max(200, height - 120))))
    fig = go.Figure()
    for basis, symbol in (("measured", "circle"), ("estimated", "circle-open")):
        part = rows[rows["energy_basis"] == basis]
        if part.empty:
            continue
        inside = part[fit_column].fillna(False).astype(bool) if fit_column in part else None
        colors = [ACCENT if inside is None or ok else OUT_OF_BUDGET for ok in (inside if inside is not None
                                                                               else [True] * len(part))]
        custom = [[n, _money(m), _money(s), f"{e:.4g} mJ", b, f"{g:.4g} g", format_bytes(w), a]
                  for n, m, s, e, b, g, w, a in zip(part["name"], part["monthly_cost_usd"],
                                                    part["monthly_saving_usd"], part["energy_mj"],
                                                    part["energy_basis"], part["gco2_per_million"].fillna(0),
                                                    part["weight_bytes"], part["energy_assumption"])]
        fig.add_trace(go.Scatter(
            x=part["usd_per_million"], y=part["energy_mj"], mode="markers+text", text=part["name"],
            textposition=[positions[n] for n in part["name"]], cliponaxis=False,
            textfont=dict(color=INK, size=13), name=f"energy {basis}",
            marker=dict(size=16, symbol=symbol, color=colors, line=dict(width=2, color=colors)),
            customdata=custom,
            hovertemplate=("<b>%{customdata[0]}</b><br>$%{x:.4g} per million inferences"
                           "<br>%{customdata[1]} a month (saves %{customdata[2]})"
                           "<br>energy %{customdata[3]} per inference (%{customdata[4]})"
                           "<br>%{customdata[5]} CO2 per million · weights %{customdata[6]}"
                           "<br><i>%{customdata[7]}</i><extra></extra>")))
    batch = rows["batch_size"].iloc[0]
    fig.update_layout(template="plotly_white", height=height, font=dict(family=FONT, size=14, color=INK),
                      margin=dict(l=10, r=10, t=40, b=10), paper_bgcolor="white", plot_bgcolor="white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
                      hoverlabel=dict(font=dict(family=FONT, size=13), bgcolor="white"))
    # Dollars as dollars: plotly's default SI ticks wrote "100μ" for $0.0001.
    fig.update_xaxes(title=f"USD per million inferences (batch {batch}; assumed price)", range=[0, x_top],
                     gridcolor=GRID, zerolinecolor=GRID, tickprefix="$", tickformat=",.2~r" if x_top < 1 else ",.2f")
    fig.update_yaxes(title="Energy per inference (mJ)", range=[0, y_top], gridcolor=GRID, zerolinecolor=GRID,
                     tickformat=",.3~r")
    if device:
        fig.add_annotation(text=f"grey: does not fit {device}", showarrow=False, x=1, y=1.08, xref="paper",
                           yref="paper", xanchor="right", font=dict(color=MUTED, size=12))
    return fig


def _money(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    sign = "−" if value < 0 else ""
    value = abs(float(value))
    return f"{sign}${value:,.2f}" if value >= 0.01 or value == 0 else f"{sign}${value:.2g}"


def summary_lines(results: dict, assumptions: CostAssumptions | None = None) -> list[str]:
    """A short cost / energy summary of a run for the command line (largest batch size, stored assumptions)."""
    variants = [v for v in results.get("variants") or [] if v.get("status") == "ok"]
    if not variants:
        return []
    if assumptions is None:
        assumptions = CostAssumptions.from_dict((variants[0].get("cost") or {}).get("assumptions"))
    frame = cost_frame(results, assumptions, devices=())
    frame = frame[frame["status"] == "ok"]
    if frame.empty or frame["batch_size"].isna().all():
        return []
    batch = int(frame["batch_size"].iloc[0])
    lines = [f"cost and energy at batch {batch} (assumed: ${assumptions.price_per_core_hour_usd:.4g} per core-hour, "
             f"{assumptions.watts_per_core:g} W per busy core when estimated, {assumptions.requests_per_second:g} "
             f"req/s, {assumptions.grid_g_per_kwh:g} gCO2/kWh):"]
    sources = {(v.get("energy") or {}).get("source") for v in variants} - {None}
    notes = {(v.get("energy") or {}).get("note") for v in variants} - {None}
    if sources:
        lines.append("  energy " + "; ".join(sorted(sources)))
    if notes:
        lines.append(f"  energy estimated from CPU time x {assumptions.watts_per_core:g} W where not measured: "
                     + "; ".join(sorted(notes)))
    for row in frame.to_dict("records"):
        usd, energy_mj = _number(row["usd_per_million"]), _number(row["energy_mj"])
        price = "–" if usd is None else f"${usd:.4g}"
        energy = "–" if energy_mj is None else f"{energy_mj:.4g} mJ"
        saving_usd = _number(row["monthly_saving_usd"])
        saving = "" if row["name"] == "baseline" or saving_usd is None else (
            f", saves {_money(saving_usd)}/month" if saving_usd >= 0 else f", costs {_money(-saving_usd)}/month more")
        lines.append(f"  {row['name']}: {price} per million, {energy} per inference "
                     f"({row['energy_basis'] or 'n/a'}){saving}")
    return lines


__all__ = ["CostAssumptions", "DEFAULT_DEVICES", "DeviceProfile", "EnergyCounter", "EnergyEstimate", "SOURCES",
           "co2_grams", "cost_figure", "cost_frame", "cost_per_million", "device_fit", "device_fit_frame",
           "devices_from_rows", "devices_to_rows", "energy_per_inference", "find_energy_zones", "fits",
           "model_compute_profile", "monthly_cost", "monthly_saving", "profile_from_artifact", "results_columns",
           "summary_lines", "variant_cost"]
