"""A private working directory for onnx / onnxruntime tools that leave files in the current one."""

from __future__ import annotations

import contextlib
import os
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


__all__ = ["scratch_cwd"]
