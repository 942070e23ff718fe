"""Bundled sample models and datasets: small architectures, their deterministic data, and trained weights.

Weights ship as safetensors in ``sample_models/weights/``; ``python -m sample_models.train`` rebuilds them
deterministically. Nothing here downloads anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class SampleModel:
    """A bundled model: its architecture builder, dataset and what it is for."""

    name: str
    dataset: str
    build: Callable  # build(width: float = 1.0) -> torch.nn.Module
    input_shape: tuple  # per-sample shape, without the batch axis
    description: str
    extra: str | None = None  # pip extra that must be installed to use it
    load_model: Callable | None = None  # () -> core.io.graph.Model, for samples with their own loader
    train: Callable | None = None  # () -> None: rebuild the shipped weights (python -m sample_models.train)
    probe: Callable | None = None  # () -> bool: whether the extra is installed

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"


@dataclass(frozen=True)
class SampleDataset:
    """A bundled dataset: a loader returning fixed train / calibration / eval splits."""

    name: str
    load: Callable  # load() -> dict of split name -> (x, y)
    description: str
    extra: str | None = None
    perplexity_floor: Callable | None = None  # held-out text: () -> the generator's own perplexity, where known


def _digits_splits() -> dict:
    """sklearn's bundled 8x8 digits, scaled to [0, 1], with a fixed stratified 60/10/30 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_rest, x_eval, y_rest, y_eval = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    x_train, x_calib, y_train, y_calib = train_test_split(x_rest, y_rest, test_size=1 / 7, stratify=y_rest,
                                                          random_state=0)
    return {"train": (x_train, y_train), "calib": (x_calib, y_calib), "eval": (x_eval, y_eval)}


def _build_digits_mlp(width: float = 1.0):
    from sample_models.architectures import DigitsMLP

    return DigitsMLP(width)


def _build_digits_cnn(width: float = 1.0):
    from sample_models.architectures import DigitsCNN

    return DigitsCNN(width)


SAMPLE_MODELS: dict[str, SampleModel] = {}
SAMPLE_DATASETS: dict[str, SampleDataset] = {}


def register_model(sample: SampleModel) -> None:
    SAMPLE_MODELS[sample.name] = sample


def register_dataset(dataset: SampleDataset) -> None:
    SAMPLE_DATASETS[dataset.name] = dataset


register_dataset(SampleDataset("digits", _digits_splits,
                               "sklearn's bundled 8x8 handwritten digits (1,797 images, 10 classes)"))
register_model(SampleModel("digits-mlp", "digits", _build_digits_mlp, (1, 8, 8),
                           "A two-layer MLP on 8x8 digits: the fast model for tests."))
register_model(SampleModel("digits-cnn", "digits", _build_digits_cnn, (1, 8, 8),
                           "A small CNN on 8x8 digits: shows static-int8 gains and the dynamic-int8-on-Conv trap."))

# Further samples register themselves here (shapes, text) when their modules exist.
for _module in ("sample_models.shapes", "sample_models.text", "sample_models.tiny_lm", "sample_models.vision"):
    try:
        __import__(_module)
    except ModuleNotFoundError as _exc:  # the module itself absent; a missing extra is handled inside it
        if _exc.name != _module:
            raise


def _build_shapes_mobile(width: float = 1.0):
    from sample_models.architectures import ShapesMobileNet

    return ShapesMobileNet(width)


def _train_shapes_mobile() -> float:
    from sample_models.shapes import train_shapes_mobile

    return train_shapes_mobile()


register_model(SampleModel(
    "shapes-mobile", "shapes", _build_shapes_mobile, (1, 32, 32),
    "A MobileNetV2-style CNN (inverted residuals, depthwise 3x3 convs, BN, ReLU6; 0.16M parameters) trained here "
    "on 32x32 shapes. Small and briefly trained, its channels are alike: make bench measures plain per-tensor "
    "int8 within 0.1 pt of fp32, so there is little to recover (sample:effnet-lite1 is the depthwise net with "
    "much to recover); the recovery steps never leave it below plain int8 on validation.",
    train=_train_shapes_mobile))


def available(sample: SampleModel) -> tuple[bool, str | None]:
    """Whether a sample can be used here; if not, the install hint."""
    if sample.extra is None:
        return True, None
    probe = getattr(sample, "probe", None)
    ok = probe() if callable(probe) else True
    return (True, None) if ok else (False, f"install the '{sample.extra}' extra: pip install -e '.[{sample.extra}]'")
