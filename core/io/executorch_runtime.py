"""ExecuTorch's runtime: load a .pte program from bytes and run it on the CPU (its XNNPACK delegate) with a fixed
thread count."""

from __future__ import annotations

import numpy as np

from core.errors import UnsupportedModelError


def set_threads(threads: int) -> None:
    """Size ExecuTorch's one process-wide thread pool (XNNPACK's kernels run on it) to `threads`."""
    from executorch.extension.pybindings import portable_lib  # heavy: imports torch and torchao

    if portable_lib._threadpool_get_thread_count() != int(threads):
        portable_lib._unsafe_reset_threadpool(int(threads))


class ExecuTorchRunner:
    """A .pte program loaded from bytes; `run(feed)` returns every output of its `forward` as numpy arrays.

    The program was exported with its batch axis bounded (`core.techniques.edge`): batches up to that bound run.
    """

    runtime = "executorch"

    def __init__(self, program_bytes: bytes, threads: int = 1, input_names: list[str] | None = None):
        import torch  # heavy; ExecuTorch's Python runtime takes and returns torch tensors
        from executorch.extension.pybindings import portable_lib

        set_threads(threads)
        try:
            self.module = portable_lib._load_for_executorch_from_buffer(program_bytes)
        except Exception as exc:  # noqa: BLE001 - the loader raises RuntimeError with an error code
            raise UnsupportedModelError(f"ExecuTorch cannot load this program: {str(exc)[:300]}") from None
        self.input_names = list(input_names or [])
        self._torch = torch

    def bind(self, feed: dict):
        """One inference on `feed` as a zero-argument call, for the timing rounds: the program's `forward` on
        tensors made once."""
        names = self.input_names or list(feed)
        inputs = tuple(self._torch.from_numpy(np.ascontiguousarray(feed[name])) for name in names)
        module = self.module
        return lambda: module.forward(inputs)

    def run(self, feed: dict) -> list[np.ndarray]:
        """One inference (inputs in `input_names` order)."""
        names = self.input_names or list(feed)
        inputs = tuple(self._torch.from_numpy(np.ascontiguousarray(feed[name])) for name in names)
        outputs = self.module.forward(inputs)
        return [o.detach().numpy().copy() if hasattr(o, "detach") else np.asarray(o) for o in outputs]


__all__ = ["ExecuTorchRunner", "set_threads"]
