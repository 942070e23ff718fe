"""Timing you can bet on: what is compared is timed interleaved in rounds, and a speed-up is the median of per-round
ratios with a 95% bootstrap interval; rounds go on until every interval is within ±5% or the time cap.

Why rounds: on a shared machine the load drifts over seconds. Timing the baseline for ten seconds and then a variant
for ten seconds compares two different machines; timing them alternately, a few milliseconds each, compares them
under the same load, and the per-round ratio cancels what the load does to both. The median of the ratios shrugs
off a round that a burst hit one side of, and the bootstrap interval says how sure the figure is. With one thread the
calls are timed on the thread's CPU clock for the ratios (`cpu_clock_for`), so the time the scheduler gives other
processes is not counted at all.

What the interval does not cover: another timing phase, with its own sessions. Identical sessions of one model
measured up to 3% apart in one phase (where their memory landed), so two phases agree at the ±5% target, not at
their narrower intervals.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator, Mapping, Sequence

import numpy as np

from core.format import speedup_verdict

# An interval "within ±5%" of its ratio: both ends inside ratio * (1 ± TARGET_HALF_WIDTH). Tighter costs rounds
# (the width shrinks as 1/sqrt(rounds)); 5% is below every decision a user makes on a speed-up (the tuner's 1.5x
# targets, "no measurable difference" around 1) and above the ±2-3% that p50 ratios repeat to on an idle machine.
TARGET_HALF_WIDTH = 0.05
CONFIDENCE = 0.95
# Bootstrap resamples of the median ratio: 2,000 puts the 2.5th / 97.5th percentiles' own Monte-Carlo error well
# below the interval's width (Efron & Tibshirani, ch. 13), and takes ~1 ms per check for 200 rounds.
BOOTSTRAP_RESAMPLES = 2000
# Fewest rounds before an interval may end the timing. Stopping as soon as an interval looks narrow favours the
# intervals that are narrow by luck: on tests/test_timing.py's bursty synthetic machine (200 seeds) the 95% interval
# covered the true ratio 90-93% of the time with 8 or 12 rounds at least, 93.5-96% with 16, 94-95% with 20.
MIN_ROUNDS = 16
# Wall time one runner gets per round: long enough that the clock's resolution and the call overhead vanish
# (perf_counter is ~100 ns), short enough that a round sees one load level. 25 ms measured as the knee here:
# shorter rounds gave no narrower intervals, longer ones let bursts split rounds.
ROUND_SECONDS = 0.025
# "Measured under contention": this process got less than this share of the CPU time it asked for while timing
# (preempted by others on its core), or the hypervisor stole more than STEAL_LIMIT of the machine's time.
CPU_SHARE_LIMIT = 0.9
STEAL_LIMIT = 0.05
# ... or other processes kept the rest of the machine's cores more than this busy. Pinned to its own core, a
# timing phase still shares caches and memory bandwidth with them, and on an SMT sibling the very execution units,
# which can slow one kind of kernel more than another: neither the per-round ratio nor the CPU clock cancels that.
OTHERS_BUSY_LIMIT = 0.5


@dataclass(frozen=True)
class Speedup:
    """A same-run speed-up against the baseline: the median per-round ratio and its bootstrap interval."""

    ratio: float
    low: float
    high: float
    rounds: int
    converged: bool = False  # the interval reached ±TARGET_HALF_WIDTH of the ratio

    def to_dict(self) -> dict:
        return {"ratio": round(self.ratio, 4), "low": round(self.low, 4), "high": round(self.high, 4),
                "rounds": self.rounds, "converged": self.converged}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Speedup":
        return cls(float(data["ratio"]), float(data["low"]), float(data["high"]), int(data.get("rounds", 0)),
                   bool(data.get("converged", False)))

    @property
    def verdict(self) -> str:
        """'faster' or 'slower' when the whole interval is on one side of 1, else 'no measurable difference'."""
        return speedup_verdict(self.to_dict())


def median_interval(ratios: Sequence[float], *, confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0) -> tuple[float, float, float]:
    """The median of `ratios` and its percentile-bootstrap interval: (median, low, high).

    Deterministic for a given seed. With a single ratio the interval is that ratio.
    """
    values = np.asarray(ratios, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no ratios to summarise")
    median = float(np.median(values))
    if values.size == 1:
        return median, median, median
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(resamples, values.size))
    medians = np.median(values[picks], axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return median, float(low), float(high)


def speedup_of(baseline_s: Sequence[float], variant_s: Sequence[float], *, target: float = TARGET_HALF_WIDTH,
               seed: int = 0) -> Speedup:
    """The speed-up of a variant from paired per-round times: baseline time / variant time per round, summarised by
    `median_interval`. `converged` says whether the interval is within ±`target` of the ratio."""
    base = np.asarray(baseline_s, dtype=np.float64)
    var = np.asarray(variant_s, dtype=np.float64)
    if base.shape != var.shape or base.size == 0:
        raise ValueError("baseline and variant need the same, non-zero number of rounds")
    ratio, low, high = median_interval(base / np.maximum(var, 1e-12), seed=seed)
    return Speedup(ratio, low, high, int(base.size), within_target(ratio, low, high, target))


def within_target(ratio: float, low: float, high: float, target: float = TARGET_HALF_WIDTH) -> bool:
    """Both ends of the interval inside ratio * (1 ± target)."""
    return low >= ratio * (1.0 - target) and high <= ratio * (1.0 + target)


# ----------------------------------------------------------------------------------------------------------------
# Contention


def _steal_jiffies() -> tuple[int, int, int] | None:
    """(steal, busy, total) jiffies of the whole machine from /proc/stat; None where there is no /proc."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    steal = values[7] if len(values) > 7 else 0
    # guest time is already counted in user time; the first 8 fields are the whole; idle and iowait are not busy
    total = sum(values[:8])
    return steal, total - values[3] - (values[4] if len(values) > 4 else 0), total


def _rusage() -> tuple[float, int]:
    """(CPU seconds, involuntary context switches) of this process so far."""
    try:
        import resource
    except ImportError:  # Windows
        return time.process_time(), 0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, int(usage.ru_nivcsw)


@dataclass
class ContentionProbe:
    """What else the machine was doing while we timed: started before the timed rounds, read after.

    `cpu_share` is the CPU time this process got over the wall time it spent asking for `threads` cores: a timed
    call that is preempted shows as lost share. `steal_share` is the hypervisor's (other guests). `others_busy_share`
    is how busy the machine's other cores were with other processes (the machine's busy time less ours, over the
    cores we did not ask for). The load average and the involuntary context switches per second are recorded as
    they are.
    """

    threads: int = 1
    started_wall: float = field(default=0.0, init=False)
    started_cpu: float = field(default=0.0, init=False)
    started_switches: int = field(default=0, init=False)
    started_steal: tuple[int, int, int] | None = field(default=None, init=False)

    def start(self) -> "ContentionProbe":
        self.started_wall = time.perf_counter()
        self.started_cpu, self.started_switches = _rusage()
        self.started_steal = _steal_jiffies()
        return self

    def read(self) -> dict:
        """The contention seen since start(): cpu_share, steal_share, involuntary switches per second, the 1-minute
        load average, the core count, and `contended` with its reasons."""
        wall = max(1e-9, time.perf_counter() - self.started_wall)
        cpu, switches = _rusage()
        cpu_share = min(1.0, (cpu - self.started_cpu) / (wall * max(1, self.threads)))
        steal_share = others_busy = None
        now_steal = _steal_jiffies()
        cores = os.cpu_count() or 1
        if self.started_steal is not None and now_steal is not None:
            total = now_steal[2] - self.started_steal[2]
            steal_share = (now_steal[0] - self.started_steal[0]) / total if total > 0 else 0.0
            if total > 0 and cores > self.threads:
                # jiffies are shared by every core: the machine's busy share, less this process's own CPU time
                busy = (now_steal[1] - self.started_steal[1]) / total * cores
                mine = (cpu - self.started_cpu) / wall
                others_busy = max(0.0, min(1.0, (busy - mine) / (cores - self.threads)))
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):
            load = None
        reasons = []
        if cpu_share < CPU_SHARE_LIMIT:
            reasons.append(f"this process got {cpu_share:.0%} of the CPU time it asked for")
        if steal_share is not None and steal_share > STEAL_LIMIT:
            reasons.append(f"the hypervisor stole {steal_share:.0%} of the CPU")
        if others_busy is not None and others_busy > OTHERS_BUSY_LIMIT:
            reasons.append(f"other processes kept the other cores {others_busy:.0%} busy")
        return {"cpu_share": round(cpu_share, 3),
                "steal_share": None if steal_share is None else round(steal_share, 4),
                "others_busy_share": None if others_busy is None else round(others_busy, 3),
                "involuntary_switches_per_s": round((switches - self.started_switches) / wall, 1),
                "load_avg_1m": None if load is None else round(load, 2), "cores": os.cpu_count(),
                "seconds": round(wall, 3), "contended": bool(reasons), "reasons": reasons}


# ----------------------------------------------------------------------------------------------------------------
# Rounds


@dataclass
class RoundsTiming:
    """What `time_in_rounds` measured: every call's latency per runner, the speed-ups against the baseline, how many
    rounds, whether every interval converged, and the contention seen.

    With `holdout`, the rounds alternate between two halves: the reported figures (`latency_ms`, `speedup`) come
    from the even rounds, and `selection` / `selection_latency_ms` from the odd ones, so whatever picks a variant
    on the odd rounds never scores on the numbers shown for it (a pick on the reported figure favours the variant
    whose figure was lucky)."""

    latency_ms: dict  # name -> {p50, p90, p99, mean, runs} (the reported rounds)
    speedup: dict  # name -> Speedup (the baseline has none)
    round_ms: dict  # name -> per-round median call time, ms (what the ratios are made of), every round
    rounds: int
    converged: bool
    stopped: bool
    elapsed_s: float
    contention: dict
    selection: dict = field(default_factory=dict)  # name -> Speedup of the held-out rounds (holdout only)
    selection_latency_ms: dict = field(default_factory=dict)  # name -> percentiles of the held-out rounds
    usage: dict = field(default_factory=dict)  # name -> {"calls", "busy_s", "cpu_s", "energy_j"}, every round
    calls_per_round: dict = field(default_factory=dict)  # name -> timed calls in each of its turns
    warmup_calls: dict = field(default_factory=dict)  # name -> untimed calls before the first round
    holdout: bool = False
    ratio_clock: str = "wall"  # what the per-round times (and so the ratios) are: "wall" or "thread CPU"
    call_s: dict = field(default_factory=dict)  # name -> per round, each timed call's (wall s, ratio-clock s)

    def speedup_dicts(self) -> dict:
        return {name: s.to_dict() for name, s in self.speedup.items()}


def _percentiles(seconds: Sequence[float]) -> dict | None:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if not ms.size:
        return None
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "runs": int(ms.size)}


def time_in_rounds(runners: Mapping[str, Callable[[], object]], baseline: str, *, warmup: int = 3,
                   min_rounds: int = MIN_ROUNDS, max_rounds: int = 10_000, max_seconds: float = 10.0,
                   target: float = TARGET_HALF_WIDTH, round_seconds: float = ROUND_SECONDS, threads: int = 1,
                   holdout: bool = False, max_calls_per_round: int | None = None, energy_counter=None,
                   should_stop: Callable[[], bool] = lambda: False,
                   on_progress: Callable[[float, str], None] | None = None,
                   clock: Callable[[], float] = time.perf_counter, cpu_clock: Callable[[], float] | None = None,
                   seed: int = 0) -> RoundsTiming:
    """Time `runners` (name -> a call to time) interleaved in rounds against `runners[baseline]`.

    Each runner is warmed up (`warmup` calls), then each round times every runner for about `round_seconds` of
    calls (at least one, at most `max_calls_per_round`) and keeps the median call of the round. Capped below
    `min_rounds` rounds (a smoke test, a quick look), the timing cannot reach an interval worth converging on, and
    its turns shrink in proportion (`round_seconds` x max_rounds / min_rounds), so it stays as quick as it asked. The order is a
    fixed cycle (round robin), so every runner's turn follows another runner's turn alike: a model that runs slower
    when its weights are cold in the cache pays that in every turn, the baseline too. (Rotating the order would let
    one runner follow itself at every other round boundary, and the per-round ratios then alternate.) Once the
    reported rounds number `min_rounds`, rounds stop as soon as every speed-up's interval is within ±`target` of
    its ratio, or at `max_rounds`, `max_seconds` (the whole timing, all runners) or `should_stop()`.

    Args:
        runners: name -> zero-argument callable; each call is one timed inference. Must contain `baseline`.
        baseline: the name every speed-up is against.
        holdout: alternate rounds between the reported figures and `selection` ones (see RoundsTiming); the
            target and `min_rounds` then apply to the reported half.
        max_calls_per_round: a cap on one turn's calls (a profiled session writes an event per node per call).
        energy_counter: a `core.measure.energy.EnergyCounter` read around every turn, or None.
        clock: seconds as a float (tests inject a synthetic clock): the latency percentiles, the caps.
        cpu_clock: the calling thread's CPU clock (`cpu_clock_for`), or None. When given, each call is also timed
            on it and the per-round times (so the ratios) come from it: a call the scheduler sets aside for another
            process's slice runs no longer on it, where on the wall clock a long call is set aside far more often
            than a short one and the ratio inflates (beside a busy loop on its core: 8.8x on the wall clock,
            2.3x on the CPU clock, for a pair at 2.4x on an idle core).
        seed: the bootstrap's seed, so a run's intervals are reproducible from its times.

    Returns:
        A RoundsTiming. Latency percentiles come from every timed call of the reported rounds (warm-up excluded);
        `usage` counts every round.
    """
    if baseline not in runners:
        raise ValueError(f"baseline {baseline!r} is not among the runners {sorted(runners)}")
    names = list(runners)
    if max_rounds < min_rounds:
        round_seconds *= max(1, max_rounds) / min_rounds
    probe = ContentionProbe(threads=threads).start()
    started = clock()
    per_call: dict[str, float] = {}
    warmed: dict[str, int] = {}
    stopped = False
    for name in names:
        times = []
        for _ in range(max(1, warmup)):
            t0 = clock()
            runners[name]()
            times.append(clock() - t0)
            if should_stop():
                stopped = True
                break
        warmed[name] = len(times)
        # The later half of the warm-up: the first call of a session (allocation, kernel choice) is many times a
        # steady call and would make every turn far shorter than `round_seconds`.
        per_call[name] = max(1e-9, float(np.median(times[len(times) // 2:])))
    calls = {name: max(1, int(round_seconds / per_call[name])) for name in names}
    if max_calls_per_round is not None:
        calls = {name: min(count, max(1, int(max_calls_per_round))) for name, count in calls.items()}
    turns: dict[str, list[list[float]]] = {name: [] for name in names}
    ratio_turns: dict[str, list[list[float]]] = {name: [] for name in names}
    per_round: dict[str, list[float]] = {name: [] for name in names}
    usage = {name: {"calls": 0, "busy_s": 0.0, "cpu_s": 0.0, "energy_j": 0.0 if energy_counter is not None
                    and energy_counter.available else None} for name in names}
    others = [n for n in names if n != baseline]

    def reported(values: list) -> list:
        return values[0::2] if holdout else values

    def reported_count(rounds_done: int) -> int:
        return (rounds_done + 1) // 2 if holdout else rounds_done

    converged, rounds = not others, 0
    deadline = started + max_seconds
    check_every = 1
    while not stopped and rounds < max_rounds:
        if should_stop():
            stopped = True
            break
        for name in names:
            times, on_cpu = [], []
            run = runners[name]
            cpu_before = _rusage()[0]
            energy_before = energy_counter.read() if usage[name]["energy_j"] is not None else None
            turn_started = clock()
            for _ in range(calls[name]):
                c0 = cpu_clock() if cpu_clock is not None else 0.0
                t0 = clock()
                run()
                t1 = clock()
                times.append(t1 - t0)
                if cpu_clock is not None:
                    on_cpu.append(cpu_clock() - c0)
            spent = usage[name]
            spent["busy_s"] += clock() - turn_started
            spent["cpu_s"] += _rusage()[0] - cpu_before
            spent["calls"] += len(times)
            if spent["energy_j"] is not None:
                joules = energy_counter.joules(energy_before, energy_counter.read())
                spent["energy_j"] = None if joules is None else spent["energy_j"] + joules
            turns[name].append(times)
            ratio_turns[name].append(on_cpu if cpu_clock is not None else times)
            per_round[name].append(float(np.median(ratio_turns[name][-1])))
        rounds += 1
        now = clock()
        if reported_count(rounds) >= min_rounds and (rounds % check_every == 0 or now >= deadline):
            converged = all(speedup_of(reported(per_round[baseline]), reported(per_round[n]), target=target,
                                       seed=seed).converged for n in others)
            # checking costs a bootstrap per variant: space the checks out as rounds accumulate
            check_every = max(1, rounds // 16)
            if converged:
                break
        if on_progress is not None:
            spent_share = (now - started) / max(1e-9, max_seconds)
            on_progress(min(1.0, max(spent_share, rounds / max_rounds)), f"round {rounds}")
        if now >= deadline and rounds >= (4 if holdout else 2):
            break
    speedups, selection = {}, {}
    enough = reported_count(rounds) >= min_rounds
    if rounds:
        for n in others:
            s = speedup_of(reported(per_round[baseline]), reported(per_round[n]), target=target, seed=seed)
            # An interval narrow after a few rounds is narrow by luck as often as not: not "converged".
            speedups[n] = Speedup(s.ratio, s.low, s.high, s.rounds, s.converged and enough)
        if holdout and rounds >= 2:
            selection = {n: speedup_of(per_round[baseline][1::2], per_round[n][1::2], target=target, seed=seed)
                         for n in others}
        converged = all(s.converged for s in speedups.values()) if others else enough
    latency, held_latency = {}, {}
    for name in names:
        figures = _percentiles([t for turn in reported(turns[name]) for t in turn])
        if figures is not None:
            latency[name] = figures
        if holdout:
            figures = _percentiles([t for turn in turns[name][1::2] for t in turn])
            if figures is not None:
                held_latency[name] = figures
    for spent in usage.values():
        spent["busy_s"], spent["cpu_s"] = round(spent["busy_s"], 6), round(spent["cpu_s"], 6)
    return RoundsTiming(latency_ms=latency, speedup=speedups,
                        round_ms={n: [t * 1000.0 for t in per_round[n]] for n in names}, rounds=rounds,
                        converged=converged, stopped=stopped, elapsed_s=round(clock() - started, 3),
                        contention=probe.read(), selection=selection, selection_latency_ms=held_latency,
                        usage=usage, calls_per_round=calls, warmup_calls=warmed, holdout=holdout,
                        ratio_clock="wall" if cpu_clock is None else "thread CPU",
                        call_s={n: [list(zip(w, c)) for w, c in zip(turns[n], ratio_turns[n])] for n in names})


def cpu_clock_for(threads: int) -> Callable[[], float] | None:
    """The clock a timing's ratios read: this thread's CPU time when the model runs on the calling thread alone
    (onnxruntime with one intra-op thread computes inline), else None (the wall clock: with a thread pool, the
    calling thread's CPU time misses the pool's work)."""
    # CLOCK_THREAD_CPUTIME_ID stays at microseconds in job workers, whose RLIMIT_CPU turns the process CPU clock
    # (time.process_time) into scheduler ticks: measured here, 0 of 2,000 thread-clock readings of a ~1 us loop
    # were stuck at zero under the limit, against 1,996 of 2,000 process-clock readings.
    return time.thread_time if int(threads) == 1 else None


# ----------------------------------------------------------------------------------------------------------------
# Cores: where a timing phase runs


# A core gate: (candidate cores in order of preference, how many are needed, should_stop, on_wait) -> a context
# manager that yields the cores it holds, or None when `should_stop` turned true while it waited. The job workers
# install the run store's cross-process lock (`core.jobs.store.RunStore.timing_cores`), so that only one timing
# phase runs on a core at a time; elsewhere (the CLI, tests) a phase takes its preferred cores without waiting.
CoreGate = Callable[[list, int, Callable[[], bool], Callable[[str], None] | None], ContextManager]
_core_gate: CoreGate | None = None


def set_core_gate(gate: CoreGate | None) -> CoreGate | None:
    """Install the gate every `timing_cores` goes through in this process; returns the one it replaces."""
    global _core_gate
    previous, _core_gate = _core_gate, gate
    return previous


@contextmanager
def _no_gate(candidates: list, count: int, should_stop, on_wait) -> Iterator[list]:
    yield list(candidates[:count])


def allowed_cores() -> list[int]:
    """The cores this thread may run on (sorted), or [] where the OS has no affinity interface."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []


def _current_cpu() -> int | None:
    """The core this thread last ran on (/proc's `processor` field), or None."""
    try:
        with open("/proc/thread-self/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2:].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def pin_to(cores) -> bool:
    """Pin this thread (and the threads it starts from now on) to `cores`; False where the OS does not allow it."""
    try:
        os.sched_setaffinity(0, set(cores))
        return True
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def timing_cores(threads: int = 1, *, should_stop: Callable[[], bool] = lambda: False,
                 on_wait: Callable[[str], None] | None = None) -> Iterator[list[int] | None]:
    """Hold `threads` cores for one timing phase and pin this thread to them; unpin and give them back after.

    Sessions made inside the block start their onnxruntime threads on those cores too (a new thread inherits the
    affinity of the thread that starts it). The cores go through the installed core gate (`set_core_gate`): in
    the dashboard's workers, a timing phase waits while another process is timing on its core. A process already
    pinned to enough cores (a job worker on its own core) prefers those; otherwise the core it is running on comes
    first.

    Yields:
        The cores held ([] where the OS has no affinity interface), or None when `should_stop` turned true while
        waiting for them.
    """
    allowed = allowed_cores()
    if not allowed:
        yield []
        return
    count = max(1, min(int(threads), os.cpu_count() or int(threads)))
    candidates = allowed if len(allowed) >= count else list(range(os.cpu_count() or count))
    current = _current_cpu()
    if current in candidates:
        candidates = [current] + [c for c in candidates if c != current]
    gate = _core_gate or _no_gate
    with gate(candidates, count, should_stop, on_wait) as cores:
        pinned = cores is not None and bool(cores) and pin_to(cores)
        try:
            yield cores
        finally:
            if pinned:
                pin_to(allowed)


__all__ = ["BOOTSTRAP_RESAMPLES", "CONFIDENCE", "ContentionProbe", "CoreGate", "MIN_ROUNDS", "ROUND_SECONDS",
           "RoundsTiming", "Speedup", "TARGET_HALF_WIDTH", "allowed_cores", "cpu_clock_for", "median_interval", "pin_to",
           "set_core_gate", "speedup_of", "time_in_rounds", "timing_cores", "within_target"]
