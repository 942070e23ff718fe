"""Cost assumptions and their sources: prices, watts per core, grid intensity and traffic, each default an
assumption with a stated source (see README, "Cost, energy and device fit"), never a measurement."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from core.errors import BadInputError


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


PRICING_MODES = ("per core-hour", "per instance-hour")


def check_number(name: str, value, minimum: float, *, strict: bool = False) -> None:
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
        check_number("price_per_core_hour_usd", self.price_per_core_hour_usd, 0)
        if not isinstance(self.cores, int) or isinstance(self.cores, bool) or self.cores < 1:
            raise BadInputError(f"cores must be a whole number >= 1; got {self.cores!r}")
        check_number("watts_per_core", self.watts_per_core, 0)
        check_number("grid_g_per_kwh", self.grid_g_per_kwh, 0)
        check_number("requests_per_second", self.requests_per_second, 0)

    @classmethod
    def from_instance_price(cls, usd_per_instance_hour: float, cores: int, **others) -> "CostAssumptions":
        """Assumptions from an instance's hourly price and its core count (price per core = price / cores)."""
        check_number("usd_per_instance_hour", usd_per_instance_hour, 0)
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
