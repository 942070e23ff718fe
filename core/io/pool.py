"""One pool of worker slots per process: every worker a server starts takes a slot, so at most
``FEATHERWEIGHT_WORKERS`` job workers plus ``FEATHERWEIGHT_INTERACTIVE_WORKERS`` interactive ones (upload checks,
Graph builds, side-by-side predictions, Learn views, profiles) are alive at once, whatever the visitors do.

Jobs take the job lane (`core.jobs.queue.JobRunner` asks with `try_acquire_job`); every isolated call
(`core.io.sandbox.run_isolated`) takes the interactive lane and waits for a free slot in a fair line: when a slot
frees, it goes to the waiter whose client address (or, without one, owner) holds the fewest slots and was served
longest ago (round robin), earliest first, so four tabs of one visitor queue behind each other, not in front of
everyone else. A requester (set per script
run by the dashboard with `acting_for`) may hold or wait for at most ``FEATHERWEIGHT_INTERACTIVE_PER_SESSION``
slots, and an address at most ``FEATHERWEIGHT_INTERACTIVE_PER_ADDRESS``; beyond that a request is refused in one
line. While a request waits, its requester's `on_wait` is told its place in the line.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

from core.errors import BadInputError

JOB_LANE, INTERACTIVE_LANE = "jobs", "interactive"
WAIT_REPORT_S = 0.5  # how often a waiting request hears its place in the line


def _setting(var: str, default: int, *, allow_zero: bool = False) -> int:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or (int(raw) == 0 and not allow_zero):
        raise BadInputError(f"{var}={raw!r} must be a {'whole' if allow_zero else 'positive whole'} number")
    return int(raw)


@dataclass(frozen=True)
class PoolLimits:
    """The pool's sizes and per-visitor caps."""

    job_workers: int = 1
    interactive_workers: int = 1
    per_session: int = 2  # a page's request and one from another tab of the same browser
    per_address: int = 8  # 0 = no cap; a room behind one NAT is one address: raise it to the room's size
    wait_s: float = 600.0  # the longest a request waits in line before it is refused ("the server is busy")

    def __post_init__(self):
        for name in ("job_workers", "interactive_workers", "per_session"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"PoolLimits.{name}={value!r} must be a positive integer")
        if isinstance(self.per_address, bool) or not isinstance(self.per_address, int) or self.per_address < 0:
            raise BadInputError(f"PoolLimits.per_address={self.per_address!r} must be 0 (no cap) or more")

    @classmethod
    def from_env(cls) -> "PoolLimits":
        """FEATHERWEIGHT_WORKERS (1), FEATHERWEIGHT_INTERACTIVE_WORKERS (the cores left by the job workers, at least
        1), FEATHERWEIGHT_INTERACTIVE_PER_SESSION (2), FEATHERWEIGHT_INTERACTIVE_PER_ADDRESS (8; 0 = no cap) and
        FEATHERWEIGHT_INTERACTIVE_WAIT_S (600).

        Raises:
            BadInputError: a variable that is not a whole number (named).
        """
        jobs = _setting("FEATHERWEIGHT_WORKERS", 1)
        # Each worker keeps one core busy (1 thread); the dashboard's own thread gets what is left.
        interactive = _setting("FEATHERWEIGHT_INTERACTIVE_WORKERS", max(1, (os.cpu_count() or 2) - jobs))
        return cls(job_workers=jobs, interactive_workers=interactive,
                   per_session=_setting("FEATHERWEIGHT_INTERACTIVE_PER_SESSION", 2),
                   per_address=_setting("FEATHERWEIGHT_INTERACTIVE_PER_ADDRESS", 8, allow_zero=True),
                   wait_s=float(_setting("FEATHERWEIGHT_INTERACTIVE_WAIT_S", 600)))


@dataclass(frozen=True)
class Requester:
    """Who an interactive request serves: the session's owner and client address (None: loopback / unknown), and
    what to call with its place in the line while it waits."""

    owner: str | None = None
    address: str | None = None
    on_wait: Callable[[int, int], None] | None = None  # (place in line, 1 = next, 0 = its turn now; slots busy)


@dataclass
class _Ticket:
    seq: int
    owner: str | None
    address: str | None

    @property
    def share(self) -> str:
        """What fairness counts slots by: the address, else the owner, else this request alone."""
        return f"address:{self.address}" if self.address else f"owner:{self.owner}" if self.owner \
            else f"request:{self.seq}"


class WorkerPool:
    """A process's worker slots in two lanes (see the module docstring). Thread-safe."""

    def __init__(self, limits: PoolLimits | None = None):
        self.limits = limits or PoolLimits.from_env()
        self._lock = threading.Condition()
        self._jobs = 0
        self._running: list[_Ticket] = []
        self._waiting: list[_Ticket] = []
        self._seq = itertools.count(1)
        self._served = itertools.count(1)
        self._last_served: dict[str, int] = {}  # share -> when it last got a slot (round robin between shares)
        self.started = {JOB_LANE: 0, INTERACTIVE_LANE: 0}
        self.peak_alive = 0

    # ---- the job lane

    def try_acquire_job(self) -> bool:
        """Take a job slot if one is free (the job runner's dispatcher asks before it starts a worker)."""
        with self._lock:
            if self._jobs >= self.limits.job_workers:
                return False
            self._jobs += 1
            self.started[JOB_LANE] += 1
            self._note_alive()
            return True

    def release_job(self) -> None:
        with self._lock:
            self._jobs = max(0, self._jobs - 1)
            self._lock.notify_all()

    # ---- the interactive lane

    @contextlib.contextmanager
    def interactive_slot(self, requester: Requester | None = None):
        """Hold an interactive slot for the block, waiting in the fair line for one. Re-entrant: a block inside
        another of the same thread (an upload check writes its temporary files, then starts its worker) uses the
        slot it already holds.

        Raises:
            BadInputError: the requester or its address already holds or waits for its share, or no slot came
                within the pool's wait limit.
        """
        held = getattr(_LOCAL, "held", {})
        if held.get(id(self)):
            held[id(self)] += 1
            try:
                yield
            finally:
                held[id(self)] -= 1
            return
        requester = requester or Requester()
        ticket = self._enter(requester)
        try:
            self._wait_turn(ticket, requester)
            _LOCAL.held = {**held, id(self): 1}
            yield
        finally:
            getattr(_LOCAL, "held", {}).pop(id(self), None)
            with self._lock:
                if ticket in self._running:
                    self._running.remove(ticket)
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._lock.notify_all()

    def _enter(self, requester: Requester) -> _Ticket:
        with self._lock:
            mine = self._running + self._waiting
            if requester.owner is not None:
                held = sum(t.owner == requester.owner for t in mine)
                if held >= self.limits.per_session:
                    raise BadInputError(f"you already have {held} request(s) using or waiting for a worker (at most "
                                        f"{self.limits.per_session} per session, FEATHERWEIGHT_INTERACTIVE_PER_SESSION)"
                                        "; wait for them to finish, perhaps in another tab")
            if requester.address is not None and self.limits.per_address:
                held = sum(t.address == requester.address for t in mine)
                if held >= self.limits.per_address:
                    raise BadInputError(f"your address {requester.address} already has {held} request(s) using or "
                                        f"waiting for a worker (at most {self.limits.per_address} per address, "
                                        "FEATHERWEIGHT_INTERACTIVE_PER_ADDRESS); wait for one to finish")
            ticket = _Ticket(next(self._seq), requester.owner, requester.address)
            self._waiting.append(ticket)
            return ticket

    def _line(self) -> list[_Ticket]:
        """The waiting requests in the order they will get slots (call with the lock held)."""
        held: dict[str, int] = {}
        for ticket in self._running:
            held[ticket.share] = held.get(ticket.share, 0) + 1
        return sorted(self._waiting, key=lambda t: (held.get(t.share, 0), self._last_served.get(t.share, 0), t.seq))

    def _wait_turn(self, ticket: _Ticket, requester: Requester) -> None:
        deadline = time.monotonic() + self.limits.wait_s
        waited = False
        while True:
            with self._lock:
                line = self._line()
                if len(self._running) < self.limits.interactive_workers and line and line[0] is ticket:
                    self._waiting.remove(ticket)
                    self._running.append(ticket)
                    if len(self._last_served) > 10_000:  # forget old shares; the order only needs recent ones
                        self._last_served.clear()
                    self._last_served[ticket.share] = next(self._served)
                    self.started[INTERACTIVE_LANE] += 1
                    self._note_alive()
                    self._lock.notify_all()
                    busy = len(self._running)
                    break
                place, busy = line.index(ticket) + 1, len(self._running)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BadInputError(f"the server is busy: no worker was free within {self.limits.wait_s:g} s; "
                                        "try again shortly")
                self._lock.wait(min(WAIT_REPORT_S, remaining))
            if requester.on_wait is not None:
                waited = True
                requester.on_wait(place, busy)  # outside the lock: it may draw (and a rerun may stop the wait)
        if waited:
            requester.on_wait(0, busy)  # its turn: the page clears its note

    def _note_alive(self) -> None:
        self.peak_alive = max(self.peak_alive, self._jobs + len(self._running))

    def stats(self) -> dict:
        """Slots in use and waiting now, workers started per lane and the most alive at once (for operators)."""
        with self._lock:
            return {"jobs_running": self._jobs, "interactive_running": len(self._running),
                    "interactive_waiting": len(self._waiting), "started": dict(self.started),
                    "peak_alive": self.peak_alive, "job_workers": self.limits.job_workers,
                    "interactive_workers": self.limits.interactive_workers}


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()


def process_pool() -> WorkerPool:
    """This process's pool, made on first use from the environment (`PoolLimits.from_env`)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = WorkerPool()
        return _POOL


def reset_process_pool(limits: PoolLimits | None = None) -> WorkerPool:
    """Replace this process's pool (tests and operators changing the limits; requests in flight keep theirs)."""
    global _POOL
    with _POOL_LOCK:
        _POOL = WorkerPool(limits)
        return _POOL


def current_requester() -> Requester | None:
    """Who the calling thread serves (set by `acting_for`), or None."""
    return getattr(_LOCAL, "requester", None)


def acting_for(requester: Requester | None) -> None:
    """Say whom this thread's isolated calls serve from now on (the dashboard sets it at the start of each script
    run; None clears it)."""
    _LOCAL.requester = requester


__all__ = ["INTERACTIVE_LANE", "JOB_LANE", "PoolLimits", "Requester", "WorkerPool", "acting_for",
           "current_requester", "process_pool", "reset_process_pool"]
