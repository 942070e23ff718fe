"""Datasets: sample data, uploaded NPZ / CSV, or synthetic inputs, bound to a model's inputs and split.

A `Dataset` holds three splits (train, calib, eval). Each split maps the model's input names to arrays with the
batch axis first, plus optional integer labels. Data that does not fit the model is refused with one line
naming both shapes.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import BadInputError
from core.models import LoadLimits, Model, TensorSpec, read_capped

SPLIT_FRACTIONS = {"train": 0.6, "calib": 0.1, "eval": 0.3}  # for uploads that come as one array
SYNTHETIC_SIZES = {"train": 512, "calib": 128, "eval": 256}
DATA_SUFFIXES = (".npz", ".csv")


@dataclass
class Split:
    """Inputs by model input name (batch axis first) and optional labels."""

    x: dict
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.x.values())))

    def take(self, count: int) -> "Split":
        return Split({k: v[:count] for k, v in self.x.items()}, None if self.y is None else self.y[:count])

    @property
    def first(self) -> np.ndarray:
        """The first input's array (the only one for single-input models)."""
        return next(iter(self.x.values()))


@dataclass
class Dataset:
    """Train / calibration / eval splits bound to one model's inputs."""

    source: str | None
    train: Split
    calib: Split
    eval: Split
    synthetic: bool = False

    @property
    def has_labels(self) -> bool:
        return self.eval.y is not None

    def summary(self) -> dict:
        return {"source": self.source or "synthetic", "synthetic": self.synthetic, "labels": self.has_labels,
                "train": len(self.train), "calib": len(self.calib), "eval": len(self.eval),
                "inputs": {k: list(v.shape[1:]) for k, v in self.eval.x.items()},
                "classes": None if self.eval.y is None else int(len(np.unique(self.eval.y)))}


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def fit_to_input(array: np.ndarray, spec: TensorSpec, what: str) -> np.ndarray:
    """Cast and, where only the layout differs, reshape per-sample data to a model input.

    Raises:
        BadInputError: the per-sample shape cannot match the input; names both shapes.
    """
    want = spec.shape[1:]
    got = array.shape[1:]
    fixed = [d if isinstance(d, int) else None for d in want]
    matches = len(got) == len(want) and all(f is None or f == g for f, g in zip(fixed, got))
    if not matches:
        if all(f is not None for f in fixed) and int(np.prod(got)) == int(np.prod(fixed)) and len(got) >= 1:
            array = array.reshape((array.shape[0], *fixed))
        else:
            raise BadInputError(f"{what} has per-sample shape {_shape_text(got)} but the model input "
                                f"{spec.name!r} expects {_shape_text(want)} (full shape {_shape_text(spec.shape)})")
    if spec.dtype.startswith("float"):
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise BadInputError(f"{what} has dtype {array.dtype}, not numbers")
        array = array.astype(spec.dtype, copy=False)
        if not np.isfinite(array).all():
            raise BadInputError(f"{what} contains NaN or infinite values")
    elif spec.dtype.startswith(("int", "uint")):
        if not np.issubdtype(array.dtype, np.integer):
            if np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() and \
                    np.all(array == np.round(array)):
                array = array.astype(spec.dtype)
            else:
                raise BadInputError(f"{what} must hold integers for input {spec.name!r} ({spec.dtype})")
        array = array.astype(spec.dtype, copy=False)
    return np.ascontiguousarray(array)


def _labels(y, n: int, what: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape != (n,):
        raise BadInputError(f"{what} labels have shape {_shape_text(y.shape)}; expected ({n},), one per sample")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise BadInputError(f"{what} labels must be integer class indices")
    if (y < 0).any():
        raise BadInputError(f"{what} labels must be class indices >= 0")
    return y.astype(np.int64)


def _bind(arrays: dict, y, model: Model, what: str) -> Split:
    """Map raw arrays onto the model's inputs (by name, or positionally for one input)."""
    inputs = model.inputs
    if len(inputs) == 1 and len(arrays) == 1:
        (array,) = arrays.values()
        bound = {inputs[0].name: fit_to_input(np.asarray(array), inputs[0], what)}
    else:
        missing = [s.name for s in inputs if s.name not in arrays]
        if missing:
            raise BadInputError(f"{what} has arrays {sorted(arrays)} but the model needs inputs "
                                f"{[s.name for s in inputs]}; missing {missing}")
        bound = {s.name: fit_to_input(np.asarray(arrays[s.name]), s, f"{what} {s.name!r}") for s in inputs}
    sizes = {len(v) for v in bound.values()}
    if len(sizes) != 1:
        raise BadInputError(f"{what}: inputs have different sample counts {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise BadInputError(f"{what} holds no samples")
    return Split(bound, _labels(y, n, what))


def _split(arrays: dict, y, model: Model, what: str, seed: int) -> dict:
    """Split one set of arrays into train / calib / eval with a seeded permutation."""
    whole = _bind(arrays, y, model, what)
    n = len(whole)
    if n < 3:
        raise BadInputError(f"{what} holds {n} samples; at least 3 are needed (train, calibration, eval)")
    order = np.random.default_rng(seed).permutation(n)
    n_train = max(1, int(n * SPLIT_FRACTIONS["train"]))
    n_calib = max(1, int(n * SPLIT_FRACTIONS["calib"]))
    parts = {"train": order[:n_train], "calib": order[n_train:n_train + n_calib],
             "eval": order[n_train + n_calib:]}
    return {name: Split({k: v[idx] for k, v in whole.x.items()}, None if whole.y is None else whole.y[idx])
            for name, idx in parts.items()}


def _read_npz(data: bytes, name: str, limits: LoadLimits) -> dict:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        total = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise BadInputError(f"{name} is not an NPZ archive") from None
    if total > limits.max_initializer_bytes:
        raise BadInputError(f"{name} unpacks to {total / 2**20:,.0f} MiB; the limit is "
                            f"{limits.max_initializer_bytes / 2**20:,.0f} MiB")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise BadInputError(f"{name} holds Python objects (pickled arrays), which are refused; "
                                "store plain numeric arrays") from None
        raise BadInputError(f"{name} is not a readable NPZ archive: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInputError(f"{name} is not a readable NPZ archive: {exc}") from None


def _read_csv(data: bytes, name: str) -> dict:
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - pandas raises many parser errors
        raise BadInputError(f"{name} is not a readable CSV file: {str(exc).splitlines()[0][:200]}") from None
    if frame.empty:
        raise BadInputError(f"{name} holds no rows")
    label = frame.pop("label") if "label" in frame.columns else None
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise BadInputError(f"{name}: column(s) {bad[:5]} are not numeric; a CSV holds numeric feature "
                            "columns and an optional 'label' column")
    values = frame.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        rows = np.where(~np.isfinite(values).all(axis=1))[0]
        raise BadInputError(f"{name} has missing, NaN or infinite values (first at data row {rows[0] + 1})")
    out = {"x": values.astype(np.float32)}
    if label is not None:
        if label.isna().any():
            raise BadInputError(f"{name}: the 'label' column has empty cells")
        out["y"] = label.to_numpy()
    return out


def load_data_bytes(data: bytes, filename: str, model: Model, *, seed: int = 0,
                    limits: LoadLimits | None = None) -> Dataset:
    """Parse an uploaded NPZ or CSV and bind it to the model.

    NPZ: ``x`` (or one array per model input name) and optional ``y``; or explicit splits ``x_train``,
    ``y_train``, ``x_eval``, ``y_eval`` (calibration then comes from train). CSV: numeric feature columns and an
    optional ``label`` column. Arrays are never unpickled.
    """
    limits = limits or LoadLimits.from_env()
    name = Path(filename).name
    suffix = Path(filename).suffix.lower()
    if not data:
        raise BadInputError(f"{name} is empty")
    if len(data) > limits.max_file_bytes:
        raise BadInputError(f"{name} is over the {limits.max_file_bytes / 2**20:,.0f} MiB limit")
    if suffix == ".npz":
        arrays = _read_npz(data, name, limits)
    elif suffix == ".csv":
        arrays = _read_csv(data, name)
    else:
        raise BadInputError(f"{name}: unsupported data file type {suffix or '(none)'!r}; "
                            f"allowed: {', '.join(DATA_SUFFIXES)}")
    if "x_train" in arrays and "x_eval" in arrays:
        train = _bind({"x": arrays["x_train"]}, arrays.get("y_train"), model, f"{name} x_train")
        evaluation = _bind({"x": arrays["x_eval"]}, arrays.get("y_eval"), model, f"{name} x_eval")
        return Dataset(filename, train, train.take(min(len(train), 256)), evaluation)
    y = arrays.pop("y", None)
    if "x" in arrays:
        arrays = {"x": arrays["x"]}
    elif not arrays:
        raise BadInputError(f"{name} holds no arrays; expected 'x' and optional 'y'")
    splits = _split(arrays, y, model, name, seed)
    return Dataset(filename, splits["train"], splits["calib"], splits["eval"])


def _vocab_size(model: Model, input_name: str) -> int | None:
    """For token-id inputs: the row count of the embedding table they index (Gather on an initializer)."""
    inits = {i.name: i for i in model.onnx_model.graph.initializer}
    for node in model.onnx_model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == input_name \
                and node.input[0] in inits:
            return int(inits[node.input[0]].dims[0])
    return None


def synthetic_inputs(model: Model, count: int, *, seed: int = 0, sequence_length: int = 128) -> dict:
    """Random inputs respecting each input's dtype and range: floats in [0, 1), token ids in the vocabulary,
    masks all ones; symbolic axes after the batch take `sequence_length`."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in model.inputs:
        shape = (count, *[d if isinstance(d, int) and d > 0 else sequence_length for d in spec.shape[1:]])
        lowered = spec.name.lower()
        if spec.dtype.startswith("float"):
            out[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        elif spec.dtype == "bool":
            out[spec.name] = np.ones(shape, dtype=bool)
        elif "mask" in lowered:
            out[spec.name] = np.ones(shape, dtype=spec.dtype)
        elif "type" in lowered or "segment" in lowered:
            out[spec.name] = np.zeros(shape, dtype=spec.dtype)
        else:
            high = _vocab_size(model, spec.name) or 1000
            out[spec.name] = rng.integers(0, high, size=shape).astype(spec.dtype)
    return out


def synthetic_dataset(model: Model, *, seed: int = 0, sequence_length: int = 128) -> Dataset:
    """No data: calibration and fidelity inputs drawn from the model's input spec (no labels, no accuracy)."""
    splits = {name: Split(synthetic_inputs(model, size, seed=seed + i, sequence_length=sequence_length))
              for i, (name, size) in enumerate(SYNTHETIC_SIZES.items())}
    return Dataset(None, splits["train"], splits["calib"], splits["eval"], synthetic=True)


def load_sample_dataset(name: str, model: Model) -> Dataset:
    from sample_models import SAMPLE_DATASETS

    if name not in SAMPLE_DATASETS:
        raise BadInputError(f"unknown sample dataset {name!r}; available: {', '.join(sorted(SAMPLE_DATASETS))}")
    sample = SAMPLE_DATASETS[name]
    splits = sample.load()
    bound = {}
    for split_name, (x, y) in splits.items():
        arrays = x if isinstance(x, dict) else {"x": x}
        bound[split_name] = _bind(arrays, y, model, f"sample:{name} ({split_name})")
    return Dataset(f"sample:{name}", bound["train"], bound["calib"], bound["eval"])


def load_data(spec: str | None, model: Model, *, seed: int = 0, sequence_length: int = 128,
              limits: LoadLimits | None = None) -> Dataset:
    """Load ``sample:NAME``, an .npz / .csv path, or None (synthetic inputs), bound to the model.

    Raises:
        BadInputError: unreadable or unsafe file, unknown sample, or data that does not fit the model.
    """
    if spec is None or spec == "":
        return synthetic_dataset(model, seed=seed, sequence_length=sequence_length)
    if spec.startswith("sample:"):
        return load_sample_dataset(spec.split(":", 1)[1], model)
    limits = limits or LoadLimits.from_env()
    path = Path(spec)
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise BadInputError(f"{path.name}: unsupported data file type {path.suffix or '(none)'!r}; "
                            f"allowed: {', '.join(DATA_SUFFIXES)}")
    return load_data_bytes(read_capped(path, limits), spec, model, seed=seed, limits=limits)
