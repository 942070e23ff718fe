"""Job configs: what an insight job is asked to do, validated as data (the recipe's own steps are in `recipe`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.errors import BadInputError
from core.spec.checks import check_bool, check_keys, check_range


# The characters of a run id (core.jobs.store.RunStore makes and accepts only these).
RUN_ID_CHARS = set("0123456789abcdefghijklmnopqrstuvwxyz-")


@dataclass(frozen=True)
class DiagnoseConfig:
    """What to diagnose: variants of a finished run, profiled at one batch size and/or timed over a grid."""

    source_run: str  # a run id in the same store
    variants: tuple
    batch_size: int | None = None  # profile batch (default: the run's largest)
    profile: bool = True
    scaling_batch_sizes: tuple = ()
    scaling_threads: tuple = (1,)
    runs: int = 200  # the most rounds of the interleaved profile (core.analysis.diagnose.profile_in_rounds)
    threads: int = 1

    def __post_init__(self):
        run = self.source_run
        if not isinstance(run, str) or not run or any(c not in RUN_ID_CHARS for c in run):
            raise BadInputError(f"diagnose.source_run={run!r} is not a run id")
        variants = self.variants
        if isinstance(variants, str) or not variants or not all(isinstance(v, str) for v in variants):
            raise BadInputError(f"diagnose.variants={variants!r} must be a non-empty list of variant names")
        object.__setattr__(self, "variants", tuple(variants))
        if self.batch_size is not None:
            check_range("diagnose.batch_size", self.batch_size, 1, 65536, integer=True)
        check_bool("diagnose.profile", self.profile)
        for name in ("scaling_batch_sizes", "scaling_threads"):
            values = tuple(getattr(self, name) or ())
            for v in values:
                check_range(f"diagnose.{name}", v, 1, 65536, integer=True)
            object.__setattr__(self, name, values)
        if not self.scaling_threads:
            object.__setattr__(self, "scaling_threads", (1,))
        if not self.profile and not self.scaling_batch_sizes:
            raise BadInputError("diagnose needs profile: true or scaling_batch_sizes")
        check_range("diagnose.runs", self.runs, 1, 100000, integer=True)
        check_range("diagnose.threads", self.threads, 1, 256, integer=True)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "DiagnoseConfig":
        check_keys("diagnose", data, [f.name for f in dataclasses.fields(cls)])
        if "source_run" not in data or "variants" not in data:
            raise BadInputError("diagnose needs source_run and variants")
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        except TypeError as exc:
            raise BadInputError(f"diagnose: {exc}") from None
