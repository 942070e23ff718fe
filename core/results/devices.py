"""Devices: target profiles (memory, sustained int8 / fp32 throughput, bandwidth) and roofline estimates of whether a
variant fits one and how fast it would run there (rough, editable; derivations in README)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from core.errors import BadInputError
from core.format import as_number, format_bytes, round_significant
from core.results.assumptions import check_number


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
            check_number(f"{self.name}: {name}", getattr(self, name), 0, strict=True)
        if self.weight_memory_bytes is not None:
            check_number(f"{self.name}: weight_memory_bytes", self.weight_memory_bytes, 0, strict=True)

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
    # A decoder's activations are mostly its KV cache at the context its profile was taken at.
    held = (f"KV cache at {profile['context_tokens']} tokens + one token's activations"
            if profile.get("kv_cache_bytes") is not None and profile.get("context_tokens") else "peak activations")
    if device.weight_memory_bytes is None:
        needed = weights + activations
        fits = needed <= device.memory_bytes
        reason = (f"weights {format_bytes(weights)} + {held} {format_bytes(activations)} = "
                  f"{format_bytes(needed)} {'<=' if fits else '>'} memory {format_bytes(device.memory_bytes)}")
    else:
        needed = weights + activations
        weights_fit = weights <= device.weight_memory_bytes
        activations_fit = activations <= device.memory_bytes
        fits = weights_fit and activations_fit
        reason = (f"weights {format_bytes(weights)} {'<=' if weights_fit else '>'} weight memory "
                  f"{format_bytes(device.weight_memory_bytes)}; {held} {format_bytes(activations)} "
                  f"{'<=' if activations_fit else '>'} memory {format_bytes(device.memory_bytes)}")
    int8_macs = profile.get("int8_macs")
    float_macs = profile.get("float_macs")
    if int8_macs is None and float_macs is None:
        macs = profile.get("macs") or 0
        int8_macs, float_macs = (macs, 0) if profile.get("precision") == "int8" else (0, macs)
    compute_s = 2.0 * (int8_macs or 0) / (device.int8_gops * 1e9) + 2.0 * (float_macs or 0) / (device.fp32_gflops * 1e9)
    memory_s = float(profile.get("bytes_moved") or weights + 2 * activations) / (device.bandwidth_gbps * 1e9)
    return {"fits": bool(fits), "latency_ms_estimate": round_significant(max(compute_s, memory_s) * 1000.0),
            "bound": "compute" if compute_s >= memory_s else "memory", "memory_needed_bytes": needed,
            "reason": reason}


def variants_fitting(results: dict, device: DeviceProfile) -> list[str]:
    """Names of the run's measured variants that fit `device` (results.json variants carry ``compute``)."""
    return [v["name"] for v in results.get("variants", [])
            if v.get("status") == "ok" and _profile_of(v) and fits(v, device)]


def fits(variant_row, device: DeviceProfile) -> bool:
    """Whether a variant (a results.json variant dict, or a results / cost table row) fits `device`."""
    return bool(device_fit(_profile_of(variant_row), device)["fits"])


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
            if any(as_number(row.get(k)) is not None for k in ("memory_mb", "int8_gops", "fp32_gflops")):
                errors.append(f"row {index}: a device needs a name")
            continue
        name = str(name).strip()
        if name in seen:
            errors.append(f"row {index}: the name {name!r} is used twice")
            continue
        try:
            memory, weight_memory = as_number(row.get("memory_mb")), as_number(row.get("weight_memory_mb"))
            devices.append(DeviceProfile(
                name, memory_bytes=int(round(memory * MB)) if memory is not None else None,
                int8_gops=as_number(row.get("int8_gops")), fp32_gflops=as_number(row.get("fp32_gflops")),
                bandwidth_gbps=as_number(row.get("bandwidth_gbps")),
                weight_memory_bytes=int(round(weight_memory * MB)) if weight_memory is not None else None))
            seen.add(name)
        except BadInputError as exc:
            errors.append(f"row {index}: {exc}")
    return devices, errors
