"""Results every session shares (Learn views, sample cards, side-by-side predictions, run estimates, profiles),
kept in the server process and keyed by what they depend on.

Not `st.cache_data`: Streamlit empties every cache_data table on a `clear_cache` message, which any websocket
client may send, without a cookie and as often as it likes (streamlit/runtime/app_session.py,
``_handle_clear_cache_request``, 1.67: no setting turns it off). A visitor's Learn reload then went from 3.5 s to
27.6 s while every view was recomputed in workers. This cache no client can empty.

Each caller gets its own deep copy, so no session can change what another reads. Two sessions asking for the same
missing entry compute it once (the second waits for the first). Entries beyond `max_entries` go least recently used
first.
"""

from __future__ import annotations

import collections
import copy
import functools
import inspect
import threading
from typing import Any, Callable

_ALL: list["ProcessCache"] = []


class ProcessCache:
    """A bounded, thread-safe memo of one function's results, keyed by its (hashable) arguments."""

    def __init__(self, name: str, max_entries: int):
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r} must be a positive integer")
        self.name = name
        self.max_entries = max_entries
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._computing: dict[Any, threading.Event] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_compute(self, key: Any, compute: Callable[[], Any]) -> Any:
        """The cached value for `key` (a copy), computing it with `compute()` once when it is missing.

        Raises:
            Whatever `compute` raises (a failure is not cached; a waiting caller then computes it itself).
        """
        while True:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return copy.deepcopy(self._entries[key])
                pending = self._computing.get(key)
                if pending is None:
                    pending = self._computing[key] = threading.Event()
                    self.misses += 1
                    break
            pending.wait()
        try:
            value = compute()
            with self._lock:
                self._entries[key] = value
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return copy.deepcopy(value)
        finally:
            with self._lock:
                self._computing.pop(key, None)
            pending.set()

    def clear(self) -> None:
        """Forget every entry (tests; an operator's reset). No client message reaches this."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def process_cached(max_entries: int = 128, *, name: str | None = None):
    """Decorate a function so that its results live in a `ProcessCache` keyed by its arguments; parameters whose
    names start with ``_`` are passed through but not part of the key (as with st.cache_data). The cache is the
    wrapper's ``cache`` attribute."""

    def decorate(fn: Callable) -> Callable:
        cache = ProcessCache(name or f"{fn.__module__}.{fn.__qualname__}", max_entries)
        _ALL.append(cache)
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            key = tuple((k, v) for k, v in bound.arguments.items() if not k.startswith("_"))
            return cache.get_or_compute(key, lambda: fn(*args, **kwargs))

        wrapper.cache = cache
        return wrapper

    return decorate


def clear_all() -> None:
    """Empty every process cache (tests)."""
    for cache in _ALL:
        cache.clear()


__all__ = ["ProcessCache", "clear_all", "process_cached"]
