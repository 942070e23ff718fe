"""Datasets: sample data, uploaded NPZ / CSV, or synthetic inputs, bound to a model's inputs and split.

A `Dataset` holds four splits: train, calib (calibration), validation and eval (the held-out test split). Each
split maps the model's input names to arrays with the batch axis first, plus optional integer labels. Whatever
chooses (the sensitivity scan, the tuner, every recovery step) scores on `validation`; every number a run reports
comes from `eval`, which no choice has seen. Data that does not fit the model is refused with one line naming both
shapes.

A run with no step that trains (any ONNX model; a torch model under quantization only) has no train split: the
user's data goes to calibration (up to the `samples` the recipe asks for), validation and test
(`split_without_training`). An NPZ may name its splits (``calib``, ``validation``, ``test``, ``train``), and they are
used as given.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import BadInputError, FeatherweightError
from core.io.safety import LoadLimits, read_capped
from core.io.graph import Model, TensorSpec
from core.io.graph import vocab_size

SPLIT_FRACTIONS = {"train": 0.6, "calib": 0.1, "eval": 0.3}  # for uploads that come as one array
# Validation is a third of the held-out samples (the eval split as a loader or upload gives it), taken with a fixed
# seed; the other two thirds stay the test split that results report. Held-out, because the sample models were
# trained on `train`: a choice scored on training data would favour what the model memorised. The test split keeps
# the larger share because its numbers are the ones published, and one sample of it is the finest change a result
# can show: sample:digits 540 held out -> 180 validation (1 sample = 0.56 pt) / 360 test (0.28 pt); sample:shapes
# 2,000 -> 667 (0.15 pt) / 1,333 (0.075 pt); a one-array upload ends up 60/10/10/20.
VALIDATION_FRACTION = 1 / 3
VALIDATION_SEED = 0  # fixed, so a sample's validation / test split is the same in every run and process
# Synthetic inputs: validation is drawn last (seed + 3), so train / calib / eval are the inputs they always were.
SYNTHETIC_SIZES = {"train": 512, "calib": 128, "eval": 256, "validation": 128}
SPLIT_NAMES = {"train": "train", "calib": "calibration", "validation": "validation", "eval": "test"}
DATA_SUFFIXES = (".npz", ".csv")
# Without training, calibration takes up to the samples asked for but never more than half of the data, so the
# held-out half still divides into validation and test (a third / two thirds, as VALIDATION_FRACTION says):
# 256 samples with `samples: 128` -> 128 calibration, 43 validation, 85 test (the old 60/10/30 split gave 25
# calibration and 52 test samples, and left 153 training samples nothing used).
MAX_CALIBRATION_SHARE = 0.5
DEFAULT_CALIBRATION_SAMPLES = 128  # QuantizeConfig.samples' default
# NPZ split names: key prefixes and bare keys, in the order they are looked for.
NAMED_SPLITS = {"train": ("train",), "calib": ("calib", "calibration"), "validation": ("validation", "val"),
                "eval": ("test", "eval")}


@dataclass
class Split:
    """Inputs by model input name (batch axis first) and optional labels."""

    x: dict
    y: np.ndarray | None = None
    pairs: np.ndarray | None = None  # (P, 2) row indices of paraphrase pairs, for retrieval accuracy

    def __len__(self) -> int:
        return len(next(iter(self.x.values())))

    def take(self, count: int) -> "Split":
        pairs = None if self.pairs is None else self.pairs[(self.pairs < count).all(axis=1)]
        return Split({k: v[:count] for k, v in self.x.items()}, None if self.y is None else self.y[:count],
                     pairs if pairs is None or len(pairs) else None)

    @property
    def first(self) -> np.ndarray:
        """The first input's array (the only one for single-input models)."""
        return next(iter(self.x.values()))

    def empty(self) -> "Split":
        """A split with no samples and this one's inputs (the absent train split of a run that does not train)."""
        return Split({k: v[:0] for k, v in self.x.items()}, None if self.y is None else self.y[:0])

    def subset(self, rows) -> "Split":
        """The samples at `rows` (paraphrase pairs are not carried; only sentence data has them)."""
        return Split({k: v[rows] for k, v in self.x.items()}, None if self.y is None else self.y[rows])


@dataclass
class Dataset:
    """Train / calibration / validation / eval (held-out test) splits bound to one model's inputs.

    `validation` is None only for a hand-built Dataset or held-out data too small to divide (one sample); then
    `selection` falls back to `eval` and `selection_name` says so."""

    source: str | None
    train: Split
    calib: Split
    eval: Split
    synthetic: bool = False
    validation: Split | None = None
    calibration_asked: int | None = None  # the calibration samples the run asked for (None: not known)

    @property
    def has_labels(self) -> bool:
        return self.eval.y is not None

    @property
    def selection(self) -> Split:
        """The split choices are scored on: validation, or eval when there is no validation split."""
        return self.validation if self.validation is not None and len(self.validation) else self.eval

    @property
    def selection_name(self) -> str:
        """Which split `selection` is, as results name it: "validation" or "test"."""
        return "validation" if self.selection is not self.eval else SPLIT_NAMES["eval"]

    @property
    def calibration_available(self) -> int:
        """How many calibration inputs a quantize step can use: the calibration split, then the train split."""
        return len(self.calib) + len(self.train)

    def warnings(self) -> list[str]:
        """One line per problem a user should hear about before trusting the numbers (a short calibration)."""
        asked = self.calibration_asked
        if asked and self.calibration_available < asked:
            return [f"calibration has {self.calibration_available} samples, fewer than the {asked} asked for: "
                    "ranges come from fewer examples (bring more data, or lower `samples`)"]
        return []

    def splits(self) -> dict:
        """results.json's per-split sizes: {split: {"n", "resolution_pt" (held-out splits), "asked" (calibration)}},
        with the split names results use (train, calibration, validation, test)."""
        out = {}
        for key, split in (("train", self.train), ("calib", self.calib), ("validation", self.validation),
                           ("eval", self.eval)):
            n = 0 if split is None else len(split)
            entry = {"n": n}
            if key in ("validation", "eval"):
                entry["resolution_pt"] = round(100.0 / n, 4) if n else None  # one sample, in points
            if key == "calib" and self.calibration_asked:
                entry["asked"] = self.calibration_asked
            out[SPLIT_NAMES[key]] = entry
        return out

    def summary(self) -> dict:
        return {"source": self.source or "synthetic", "synthetic": self.synthetic, "labels": self.has_labels,
                "train": len(self.train), "calib": len(self.calib), "eval": len(self.eval),
                "validation": 0 if self.validation is None else len(self.validation),
                "inputs": {k: list(v.shape[1:]) for k, v in self.eval.x.items()},
                "classes": None if self.eval.y is None else int(len(np.unique(self.eval.y))),
                "splits": self.splits(), "warnings": self.warnings()}

    def calibration_inputs(self, samples: int) -> dict:
        """Up to `samples` calibration inputs: the calibration split, topped up from train when it is short."""
        if len(self.calib) < samples and len(self.train):
            return {k: np.concatenate([v, self.train.x[k]])[:samples] for k, v in self.calib.x.items()}
        return self.calib.take(samples).x


def hold_out_validation(held_out: Split, seed: int = VALIDATION_SEED) -> tuple[Split | None, Split]:
    """Divide held-out samples into (validation, test): a seeded third to validation, each part in its original
    order. Paraphrase pairs move whole (a pair is never cut across the two), with their row indices renumbered.

    Returns:
        (validation, test); validation is None when there are fewer than two units (samples or pairs) to divide.
    """
    n = len(held_out)
    if held_out.pairs is not None and len(held_out.pairs):
        units = [np.asarray(p) for p in held_out.pairs]
    else:
        units = [np.array([i]) for i in range(n)]
    if len(units) < 2:
        return None, held_out
    order = np.random.default_rng(seed).permutation(len(units))
    count = max(1, int(round(len(units) * VALIDATION_FRACTION)))
    val_rows = np.sort(np.concatenate([units[i] for i in order[:count]]))
    test_rows = np.setdiff1d(np.arange(n), val_rows)  # sorted; rows of no pair stay in test

    def part(rows: np.ndarray) -> Split:
        pairs = None
        if held_out.pairs is not None:
            where = np.full(n, -1)
            where[rows] = np.arange(len(rows))
            kept = held_out.pairs[np.isin(held_out.pairs, rows).all(axis=1)]
            pairs = where[kept] if len(kept) else None
        return Split({k: v[rows] for k, v in held_out.x.items()}, None if held_out.y is None else held_out.y[rows],
                     pairs)

    return part(val_rows), part(test_rows)


def _with_validation(source: str | None, train: Split, calib: Split, held_out: Split, *, seed: int = VALIDATION_SEED,
                     synthetic: bool = False) -> Dataset:
    validation, test = hold_out_validation(held_out, seed)
    return Dataset(source, train, calib, test, synthetic=synthetic, validation=validation)


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
        if (not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_) or \
                np.issubdtype(array.dtype, np.complexfloating):
            raise BadInputError(f"{what} has dtype {array.dtype}, not real numbers")
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


def split_without_training(whole: Split, calibration_samples: int | None, seed: int) -> tuple[Split, Split]:
    """One set of samples for a run that does not train: (calibration, held out), from a seeded permutation.

    Calibration takes up to `calibration_samples` (default 128) but at most half (MAX_CALIBRATION_SHARE), so the
    held-out part, which `hold_out_validation` divides into validation and test, keeps at least half.

    Raises:
        BadInputError: fewer than 3 samples (one each for calibration, validation and test).
    """
    n = len(whole)
    if n < 3:
        raise BadInputError(f"the data holds {n} samples; at least 3 are needed (calibration, validation, test)")
    order = np.random.default_rng(seed).permutation(n)
    wanted = calibration_samples or DEFAULT_CALIBRATION_SAMPLES
    count = max(1, min(wanted, int(n * MAX_CALIBRATION_SHARE)))
    return whole.subset(np.sort(order[:count])), whole.subset(np.sort(order[count:]))


def _named_splits(arrays: dict) -> dict:
    """split -> (x, y) for the splits an NPZ names: ``x_<name>`` or ``<name>``, with ``y_<name>`` labels, for the
    names in NAMED_SPLITS (``x_val`` / ``x_eval``, the older names, included)."""
    found = {}
    for split, names in NAMED_SPLITS.items():
        for name in names:
            key = f"x_{name}" if f"x_{name}" in arrays else name if name in arrays else None
            if key is not None:
                found[split] = (arrays[key], arrays.get(f"y_{name}"))
                break
    return found


def _from_named(named: dict, name: str, model: Model, seed: int, train_needed: bool,
                calibration_samples: int | None) -> Dataset:
    """A Dataset from the splits an NPZ names; the missing ones are made from the others (see load_data_bytes)."""
    if "eval" not in named:
        raise BadInputError(f"{name} names split(s) {', '.join(SPLIT_NAMES[k] for k in named)} but no test split; "
                            "add 'test' (or 'x_test' with 'y_test')")
    bound = {split: _bind({"x": x}, y, model, f"{name} {SPLIT_NAMES[split]}") for split, (x, y) in named.items()}
    test = bound["eval"]
    train = bound.get("train")
    calib = bound.get("calib")
    if calib is None and train is not None:
        calib = train.take(min(len(train), max(calibration_samples or 0, 256)))
    if calib is None:  # neither calibration nor train given: calibration comes out of the test samples
        calib, test = split_without_training(test, calibration_samples, seed)
    if train is None or not train_needed:
        train = calib.empty()
    validation = bound.get("validation")
    if validation is None:
        return _with_validation(name, train, calib, test, seed=seed)
    return Dataset(name, train, calib, test, validation=validation)


MAX_NPZ_ARRAYS = 64  # an upload holds x / y or a few named inputs; thousands of members is a zip bomb shape


def _npz_members(archive: zipfile.ZipFile, name: str, limits: LoadLimits) -> None:
    """Read each member's .npy header (a literal dict, parsed without eval) and refuse object arrays and
    declared sizes that the member cannot hold, before numpy allocates anything."""
    from numpy.lib import format as npy

    infos = archive.infolist()
    if len(infos) > MAX_NPZ_ARRAYS:
        raise BadInputError(f"{name} holds {len(infos)} arrays; the limit is {MAX_NPZ_ARRAYS}")
    total = sum(info.file_size for info in infos)
    if total > limits.max_initializer_bytes:
        raise BadInputError(f"{name} unpacks to {total / 2**20:,.0f} MiB; the limit is "
                            f"{limits.max_initializer_bytes / 2**20:,.0f} MiB")
    for info in infos:
        member = info.filename
        if not member.endswith(".npy"):
            raise BadInputError(f"{name}: member {member[:80]!r} is not a .npy array; not an NPZ archive")
        try:
            with archive.open(info) as fh:
                version = npy.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = npy.read_array_header_1_0(fh)
                elif version in ((2, 0), (3, 0)):
                    shape, _, dtype = npy.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
                header_bytes = fh.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError, TypeError) as exc:
            raise BadInputError(f"{name}: array {member[:80]!r} is not a readable .npy array: "
                                f"{str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__}") from None
        if dtype.hasobject:
            raise BadInputError(f"{name} holds Python objects (pickled arrays) in {member[:80]!r}, which are "
                                "refused; store plain numeric arrays")
        count = 1
        for d in shape:
            count *= int(d)
        declared = count * dtype.itemsize
        if declared > info.file_size - header_bytes or declared > limits.max_initializer_bytes:
            raise BadInputError(f"{name}: array {member[:80]!r} declares shape {_shape_text(shape)} "
                                f"({declared / 2**20:,.1f} MiB) but holds {info.file_size / 2**20:,.1f} MiB")


def _read_npz(data: bytes, name: str, limits: LoadLimits) -> dict:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        _npz_members(archive, name, limits)
    except zipfile.BadZipFile:
        raise BadInputError(f"{name} is not an NPZ archive") from None
    except (ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise BadInputError(f"{name} is not a readable NPZ archive: {exc}") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise BadInputError(f"{name} holds Python objects (pickled arrays), which are refused; "
                                "store plain numeric arrays") from None
        raise BadInputError(f"{name} is not a readable NPZ archive: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError, NotImplementedError) as exc:
        raise BadInputError(f"{name} is not a readable NPZ archive: {exc}") from None


def _read_csv(data: bytes, name: str) -> dict:
    """Numeric feature columns and an optional 'label' column; every problem named with its row or column."""
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(data))
    except pd.errors.ParserError as exc:
        text = str(exc)
        import re

        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
        if found:
            want, line, got = found.groups()
            raise BadInputError(f"{name}: line {line} has {got} fields but the header has {want}; every row needs "
                                "the same columns as the header") from None
        raise BadInputError(f"{name} is not a readable CSV file: {text.splitlines()[0][:200] if text else ''}") \
            from None
    except Exception as exc:  # noqa: BLE001 - pandas raises many parser errors
        first = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
        raise BadInputError(f"{name} is not a readable CSV file: {first}") from None
    if frame.empty:
        raise BadInputError(f"{name} holds no rows")
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: ")]
    if unnamed:
        raise BadInputError(f"{name}: {len(unnamed)} column(s) have no name in the header (extra separators?); "
                            "name every column")
    label = frame.pop("label") if "label" in frame.columns else None
    if frame.shape[1] == 0:
        raise BadInputError(f"{name} has a 'label' column but no feature columns")
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) or
           pd.api.types.is_complex_dtype(frame[c])]
    if bad:
        raise BadInputError(f"{name}: column(s) {[str(c)[:40] for c in bad[:5]]} are not numeric; a CSV holds "
                            "numeric feature columns and an optional 'label' column")
    values = frame.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        rows = np.where(~np.isfinite(values).all(axis=1))[0]
        raise BadInputError(f"{name} has missing, NaN or infinite values (first at data row {rows[0] + 1})")
    out = {"x": values.astype(np.float32)}
    if label is not None:
        if label.isna().any():
            raise BadInputError(f"{name}: the 'label' column has empty cells (first at data row "
                                f"{int(np.where(label.isna().to_numpy())[0][0]) + 1})")
        out["y"] = label.to_numpy()
    return out


def _check_csv_columns(arrays: dict, model: Model, name: str) -> None:
    """A CSV row is one flat sample: name the column counts when they cannot fill the model's input."""
    inputs = model.inputs
    if len(inputs) != 1:
        raise BadInputError(f"{name}: a CSV can feed a single-input model; this model has inputs "
                            f"{[s.name for s in inputs]}; use an NPZ with one array per input")
    dims = inputs[0].shape[1:]
    if all(isinstance(d, int) and d > 0 for d in dims):
        want = int(np.prod(dims)) if dims else 1
        got = arrays["x"].shape[1]
        if got != want:
            raise BadInputError(f"{name} has {got} feature column(s) but the model input {inputs[0].name!r} "
                                f"expects {want} values per sample (shape {_shape_text(inputs[0].shape)})")


def load_data_bytes(data: bytes, filename: str, model: Model, *, seed: int = 0,
                    limits: LoadLimits | None = None, train_needed: bool = True,
                    calibration_samples: int | None = None) -> Dataset:
    """Parse an uploaded NPZ or CSV and bind it to the model.

    NPZ: ``x`` (or one array per model input name) and optional ``y``; or named splits: ``test`` (or ``x_test``,
    ``x_eval``) and any of ``calib``, ``validation`` (``x_val``), ``train``, each with optional ``y_<name>`` labels.
    Named splits are used as given; a missing validation split is a seeded third of the test split, a missing
    calibration split comes from train, else from the test samples. CSV: numeric feature columns and an optional
    ``label`` column.

    One array is split by what the run does with it. With `train_needed` (a step trains): 60/10/30 (train /
    calibration / held out). Without: calibration takes up to `calibration_samples` (at most half), and the rest
    is held out. The held-out part is then a third validation, two thirds test. Arrays are never unpickled. Any
    bytes give either a Dataset or a FeatherweightError with one line saying why, never another exception.

    Raises:
        BadInputError: unreadable, unsafe, over a cap, or data that does not fit the model.
    """
    limits = limits or LoadLimits.from_env()
    name = Path(filename).name
    try:
        dataset = _load_data_bytes(data, filename, model, seed, limits, train_needed, calibration_samples)
        dataset.calibration_asked = calibration_samples
        return dataset
    except FeatherweightError:
        raise
    except MemoryError:
        raise BadInputError(f"{name} needs more memory to load than this process may use") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes must give our error, never a traceback
        first = str(exc).splitlines()[0][:200] if str(exc).strip() else ""
        raise BadInputError(f"{name} could not be read ({exc.__class__.__name__}: {first})") from None


def _load_data_bytes(data: bytes, filename: str, model: Model, seed: int, limits: LoadLimits, train_needed: bool,
                     calibration_samples: int | None) -> Dataset:
    name = Path(filename).name
    suffix = Path(filename).suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise BadInputError(f"{name}: unsupported data file type {suffix or '(none)'!r}; "
                            f"allowed: {', '.join(DATA_SUFFIXES)}")
    if not data:
        raise BadInputError(f"{name} is empty")
    if len(data) > limits.max_file_bytes:
        raise BadInputError(f"{name} is over the {limits.max_file_bytes / 2**20:,.0f} MiB limit")
    if suffix == ".npz":
        arrays = _read_npz(data, name, limits)
    else:
        arrays = _read_csv(data, name)
        _check_csv_columns(arrays, model, name)
    for key, array in arrays.items():
        if array.ndim == 0:
            raise BadInputError(f"{name}: array {key!r} is a single value; arrays need a sample axis first")
    named = _named_splits(arrays) if suffix == ".npz" else {}
    if named:
        dataset = _from_named(named, name, model, seed, train_needed, calibration_samples)
        dataset.source = filename
        return dataset
    y = arrays.pop("y", None)
    if "x" in arrays:
        arrays = {"x": arrays["x"]}
    elif not arrays:
        raise BadInputError(f"{name} holds no arrays; expected 'x' and optional 'y', or named splits "
                            "('calib', 'validation', 'test')")
    if not train_needed:
        calib, held_out = split_without_training(_bind(arrays, y, model, name), calibration_samples, seed)
        return _with_validation(filename, calib.empty(), calib, held_out, seed=seed)
    splits = _split(arrays, y, model, name, seed)
    return _with_validation(filename, splits["train"], splits["calib"], splits["eval"], seed=seed)


def synthetic_inputs(model: Model, count: int, *, seed: int = 0, sequence_length: int = 128) -> dict:
    """Random inputs respecting each input's dtype and range: floats in [0, 1), token ids in the vocabulary,
    masks all ones; symbolic axes after the batch take `sequence_length`."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in model.inputs:
        shape = (count, *[d if isinstance(d, int) and d > 0 else sequence_length for d in spec.shape[1:]])
        lowered = spec.name.lower()
        if spec.dtype == "object" or spec.dtype.startswith("onnx:"):
            raise BadInputError(f"input {spec.name!r} has type {spec.dtype}; synthetic inputs are numeric only, "
                                "so upload data for this model")
        if spec.dtype == "bool" or "mask" in lowered:  # masks (int, float or bool): every position attended
            out[spec.name] = np.ones(shape, dtype=spec.dtype)
        elif spec.dtype.startswith("float"):
            out[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        elif "type" in lowered or "segment" in lowered:
            out[spec.name] = np.zeros(shape, dtype=spec.dtype)
        else:
            # token ids index an embedding table; without one, small non-negative integers the dtype can hold
            high = min(vocab_size(model, spec.name) or 1000, int(np.iinfo(spec.dtype).max) + 1)
            out[spec.name] = rng.integers(0, high, size=shape).astype(spec.dtype)
    return out


def synthetic_dataset(model: Model, *, seed: int = 0, sequence_length: int = 128, train_needed: bool = True) \
        -> Dataset:
    """No data: calibration and fidelity inputs drawn from the model's input spec (no labels, no accuracy); no
    train split when nothing trains."""
    sizes = SYNTHETIC_SIZES if train_needed else {**SYNTHETIC_SIZES, "train": 0}
    splits = {name: Split(synthetic_inputs(model, size, seed=seed + i, sequence_length=sequence_length))
              for i, (name, size) in enumerate(sizes.items())}
    return Dataset(None, splits["train"], splits["calib"], splits["eval"], synthetic=True,
                   validation=splits["validation"])


def _pairs(pairs, n: int, what: str) -> np.ndarray | None:
    if pairs is None:
        return None
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
        raise BadInputError(f"{what}: pair indices must be rows in [0, {n})")
    return pairs


def load_sample_dataset(name: str, model: Model, *, sequence_length: int = 128) -> Dataset:
    """A bundled dataset bound to the model. Loaders return split -> (x, y) or (x, y, pairs); x may be a dict of
    arrays by input name; loaders that take `sequence_length` (tokenized text) get the benchmark's. A loader's
    own "validation" split is used as is; otherwise a fixed-seed third of its eval split becomes validation. A
    sample's splits are its own whatever the run does (its model may have been trained on the train split, which
    must then never be held out); a loader without a train split (sample:photos) gives an empty one."""
    import inspect

    from sample_models import SAMPLE_DATASETS

    if name not in SAMPLE_DATASETS:
        raise BadInputError(f"unknown sample dataset {name!r}; available: {', '.join(sorted(SAMPLE_DATASETS))}")
    sample = SAMPLE_DATASETS[name]
    takes_length = "sequence_length" in inspect.signature(sample.load).parameters
    splits = sample.load(sequence_length=sequence_length) if takes_length else sample.load()
    bound = {}
    for split_name, (x, y, *rest) in splits.items():
        arrays = x if isinstance(x, dict) else {"x": x}
        what = f"sample:{name} ({split_name})"
        bound[split_name] = _bind(arrays, y, model, what)
        bound[split_name].pairs = _pairs(rest[0] if rest else None, len(bound[split_name]), what)
    train = bound["train"] if "train" in bound else bound["calib"].empty()  # a pretrained net's data: no train split
    if "validation" in bound:
        return Dataset(f"sample:{name}", train, bound["calib"], bound["eval"], validation=bound["validation"])
    return _with_validation(f"sample:{name}", train, bound["calib"], bound["eval"])


def load_data(spec: str | None, model: Model, *, seed: int = 0, sequence_length: int = 128,
              limits: LoadLimits | None = None, train_needed: bool = True,
              calibration_samples: int | None = None) -> Dataset:
    """Load ``sample:NAME``, an .npz / .csv path, or None (synthetic inputs), bound to the model.

    Args:
        train_needed: whether a step of the run trains (`training_needed`); without one an upload has no train
            split (see `load_data_bytes`).
        calibration_samples: the calibration samples the run asks for (`calibration_samples`); a short
            calibration split is reported by `Dataset.warnings`.

    Raises:
        BadInputError: unreadable or unsafe file, unknown sample, or data that does not fit the model.
    """
    if spec is None or spec == "":
        dataset = synthetic_dataset(model, seed=seed, sequence_length=sequence_length, train_needed=train_needed)
    elif spec.startswith("sample:"):
        dataset = load_sample_dataset(spec.split(":", 1)[1], model, sequence_length=sequence_length)
    else:
        limits = limits or LoadLimits.from_env()
        path = Path(spec)
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise BadInputError(f"{path.name}: unsupported data file type {path.suffix or '(none)'!r}; "
                                f"allowed: {', '.join(DATA_SUFFIXES)}")
        return load_data_bytes(read_capped(path, limits), spec, model, seed=seed, limits=limits,
                               train_needed=train_needed, calibration_samples=calibration_samples)
    dataset.calibration_asked = calibration_samples
    return dataset
