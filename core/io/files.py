"""Files: atomic writes (every writer of results, manifests and progress uses `write_atomic`), the one check that a
file a run names lies inside the run (`inside_run`), and a private working
directory for onnx / onnxruntime tools that leave files in the current one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Iterator

# The working directory is one per process: the lock keeps two guarded calls (threads of one server) from
# changing it under each other (re-entrant: a guarded call may make another).
_CWD_LOCK = threading.RLock()


@contextlib.contextmanager
def scratch_cwd(directory: str | Path | None = None) -> Iterator[Path]:
    """Run the block with the working directory set to `directory` (default: a new temporary directory,
    deleted afterwards), then go back.

    For library calls that write into the current directory: onnxruntime's symbolic shape inference saves the
    model as ``sym_shape_infer_temp.onnx`` plus a ``<uuid>.data`` file there whenever it cannot infer every
    shape, and ``quant_pre_process`` runs it. The block must not use relative paths of its own: they would
    resolve inside the scratch directory. Other threads see the changed directory while the block runs.

    Yields:
        The (absolute) directory the block runs in.
    """
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="featherweight-scratch-"))
        directory = Path(directory).resolve()
        with _CWD_LOCK:
            previous = os.getcwd()
            os.chdir(directory)
            try:
                yield directory
            finally:
                os.chdir(previous)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a uniquely named temporary file beside `path`, fsync it, then rename it over `path`.

    Safe against concurrent writers of the same path (threads or processes): each has its own temporary file
    and the last rename wins whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def inside_run(run_dir: str | Path, relative: str | Path) -> Path | None:
    """`relative` resolved against `run_dir` (symlinks followed first), or None when the result is not inside
    `run_dir`: the one check before reading a file a results.json names (it may have been edited by hand)."""
    root = Path(run_dir).resolve()
    path = (root / relative).resolve()
    return path if root in path.parents else None


PREBUILT_DIR = "prebuilt"  # in a reference (gallery) run: views computed when the gallery was built


def prebuilt_path(run_dir: str | Path, kind: str, variant: str) -> Path:
    """Where a reference run keeps a view of one variant computed ahead (`kind`: "graph" a folder, "side_by_side"
    a JSON file), so a visitor opens it at once. Named by a digest: variant names may hold any character."""
    digest = hashlib.sha256(variant.encode("utf-8")).hexdigest()[:20]
    return Path(run_dir) / PREBUILT_DIR / kind / (digest + (".json" if kind == "side_by_side" else ""))


__all__ = ["PREBUILT_DIR", "inside_run", "prebuilt_path", "scratch_cwd", "write_atomic"]
