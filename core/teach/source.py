"""The model and data a Learn explainer works on (a sample, a server path or uploaded bytes), and the torch
thread count the explainers train with."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field


from core.errors import BadInputError
from core.io.data import load_data, load_data_bytes
from core.io.decoder import DecoderCheckpoint
from core.io.model import load_model, load_model_bytes

# Torch threads for the explainers' training and inference. The models are tiny, and on a shared CPU more than
# one thread spin-waits: one epoch of digits-cnn took 0.36 s on one thread and 8.7 s on two under load.
TORCH_THREADS = 1


@contextlib.contextmanager
def torch_threads(count: int = TORCH_THREADS):
    """Run the block with `count` torch intra-op threads, restoring the previous setting afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# The model and data an explainer works on


@dataclass(frozen=True)
class LearnSource:
    """Where the explainers' model and data come from; `key` is a plain string that identifies both (for caches).

    A sample or a file path is named by its spec; an upload carries its bytes (and is keyed by their digest).
    """

    key: str
    label: str
    model_spec: str | None = None
    model_filename: str | None = None
    model_content: bytes | None = field(default=None, repr=False)
    data_spec: str | None = None
    data_filename: str | None = None
    data_content: bytes | None = field(default=None, repr=False)

    def load(self):
        """(Model, Dataset): the model (ONNX + torch module where there is one) and its data, freshly loaded.

        Raises:
            FeatherweightError: the model or data cannot be loaded, or the data does not fit the model.
        """
        if self.model_content is not None:
            model = load_model_bytes(self.model_content, self.model_filename or "model.onnx")
        elif self.model_spec:
            model = load_model(self.model_spec)
        else:
            raise BadInputError("no model to explain: pick a sample")
        if isinstance(model, DecoderCheckpoint):  # the decoder explainers read weights and shapes, not data
            return model, None
        if self.data_content is not None:
            dataset = load_data_bytes(self.data_content, self.data_filename or "data.npz", model)
        else:
            dataset = load_data(self.data_spec, model)
        return model, dataset


def sample_source(spec: str) -> LearnSource:
    """A sample model (``sample:NAME``) with its own dataset, or a model file path with synthetic inputs."""
    data = None
    if spec.startswith("sample:"):
        from sample_models import SAMPLE_MODELS

        sample = SAMPLE_MODELS.get(spec.split(":", 1)[1])
        if sample is None:
            raise BadInputError(f"unknown sample model {spec!r}; available: "
                                f"{', '.join('sample:' + n for n in sorted(SAMPLE_MODELS))}")
        data = f"sample:{sample.dataset}"
    return LearnSource(key=spec, label=spec.split(":", 1)[-1], model_spec=spec, data_spec=data)


def learnable_samples() -> list[str]:
    """Sample model specs usable offline right now (trained weights shipped, no extra needed; a decoder sample when
    the lm extra is installed)."""
    from sample_models import SAMPLE_MODELS

    def usable(sample) -> bool:
        if sample.extra == "lm":  # a decoder sample (tiny-lm): its checkpoint folder, with the lm extra installed
            return bool(sample.probe and sample.probe()) and sample.load_model is not None
        return sample.extra is None and getattr(sample, "load_model", None) is None and sample.weights_path.exists()

    return [f"sample:{name}" for name, sample in SAMPLE_MODELS.items() if usable(sample)]


