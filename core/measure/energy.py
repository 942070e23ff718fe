"""Energy counters: the CPU package's RAPL energy (Linux powercap), read around a timed loop. A hardware counter,
nothing about prices (those are `core.results.energy` and `core.results.cost`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


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


