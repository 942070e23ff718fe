"""Side by side: a variant's and the baseline's predictions on the same test samples, flipped ones first, computed
in the sandbox when the models came from users (the run's model files are parsed there, never in the server)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import BadInputError, StepFailedError
from core.io.data import load_data
from core.io.graph import Model
from core.io.runtime import make_session, run_batched
from core.io.safety import validate_onnx_bytes
from core.io.sandbox import phase, run_isolated
from core.measure.quality import class_probabilities, prediction_changes
from core.results.compare import variant
from core.io.files import inside_run, prebuilt_path


# Side by side searches at most this many test samples (evenly spaced) for flips: every sample of the samples'
# test splits (digits 360, shapes 1,333), and a bound on the time a large model's comparison takes.
SIDE_BY_SIDE_SCAN = 2048


@dataclass
class SideBySide:
    """A few eval samples run through the baseline and a variant: a table, and the inputs when they are images."""

    table: pd.DataFrame
    images: list | None  # 2-D arrays (H, W) for single-channel image inputs, else None
    task: str
    flips: int | None = None  # classifiers: samples among the `scanned` whose top-1 differs from the baseline's
    scanned: int | None = None  # how many test samples were searched for flips


def _resolve_data_spec(spec: str | None, run_dir: Path) -> str | None:
    """Data specs of uploads point into the run's inputs/ folder; never follow a path outside the run."""
    if not spec or spec.startswith("sample:"):
        return spec
    path = Path(spec)
    candidate = inside_run(run_dir / "inputs", path.name)
    inputs = (run_dir / "inputs").resolve()
    if candidate is None or candidate.parent != inputs or not candidate.exists():
        raise FileNotFoundError(f"the run's data file {path.name!r} is no longer in {inputs}")
    return str(candidate)


def side_by_side(run_dir: str | Path, results: dict, name: str, count: int = 8) -> SideBySide:
    """Run the test split (up to SIDE_BY_SIDE_SCAN samples) through the baseline's and the variant's artifacts
    with onnxruntime and show `count` of them, the interesting ones first.

    Args:
        run_dir: the run's directory (artifacts are relative to it).
        results: the run's results.json.
        name: the variant to compare.
        count: how many samples to show: classifiers' flipped samples (top-1 differs from the baseline's) first,
            in sample order, then agreeing ones spread evenly over the split; other outputs lowest cosine first.

    Returns:
        A SideBySide: for classifiers, label / predictions / confidences / agreement per sample and the flip
        count over the searched samples; for other outputs, cosine and max absolute difference per sample.

    Raises:
        BadInputError / FileNotFoundError: the artifacts or the data are gone or unreadable.
    """

    run_dir = Path(run_dir)
    base = variant(results, "baseline")
    other = variant(results, name)
    if base is None or other is None or not base.get("artifact") or not other.get("artifact"):
        raise BadInputError(f"variant {name!r} has no model file to compare")

    def artifact_bytes(entry):
        path = inside_run(run_dir, entry["artifact"])
        if path is None:
            raise BadInputError(f"artifact {entry['artifact']!r} is outside the run directory")
        return path.read_bytes()

    base_bytes, other_bytes = artifact_bytes(base), artifact_bytes(other)
    model = Model(results.get("model") or "baseline", validate_onnx_bytes(base_bytes, what="baseline artifact"))
    splits = (results.get("dataset") or {}).get("splits") or {}
    # the run's own split: without a train split when it trained nothing, calibration as large as it asked
    dataset = load_data(_resolve_data_spec(results.get("data"), run_dir), model,
                        seed=(results.get("recipe") or {}).get("seed", 0),
                        train_needed=not splits or bool((splits.get("train") or {}).get("n")),
                        calibration_samples=(splits.get("calibration") or {}).get("asked"))
    n = len(dataset.eval)
    searched = np.unique(np.linspace(0, n - 1, num=min(SIDE_BY_SIDE_SCAN, n)).round().astype(int))
    scan_feed = {k: v[searched] for k, v in dataset.eval.x.items()}
    base_all = run_batched(make_session(base_bytes), scan_feed)[0]
    other_all = run_batched(make_session(other_bytes), scan_feed)[0]
    task = results.get("task") or "classification"
    flips = None
    if task == "classification":
        flipped = prediction_changes(other_all, base_all)["flipped"]
        flips = int(len(flipped))
        order = _flipped_first(flipped, len(searched), count)
    else:
        a_all = base_all.reshape(len(searched), -1).astype(np.float64)
        b_all = other_all.reshape(len(searched), -1).astype(np.float64)
        denominator = np.linalg.norm(a_all, axis=1) * np.linalg.norm(b_all, axis=1)
        cosine_all = np.where(denominator > 0, (a_all * b_all).sum(axis=1) / np.maximum(denominator, 1e-30), 1.0)
        order = np.argsort(cosine_all, kind="stable")[:count]  # the least faithful first
    picks = searched[order]
    feed = {k: v[order] for k, v in scan_feed.items()}
    labels = None if dataset.eval.y is None else dataset.eval.y[picks]
    base_out, other_out = base_all[order], other_all[order]
    rows = []
    if task == "classification":
        base_p, other_p = class_probabilities(base_out), class_probabilities(other_out)
        for i, index in enumerate(picks):
            b, o = int(base_p[i].argmax()), int(other_p[i].argmax())
            rows.append({"sample": int(index), "label": None if labels is None else int(labels[i]),
                         "baseline": b, "baseline_conf": float(base_p[i, b]), name: o,
                         f"{name}_conf": float(other_p[i, o]), "agree": b == o})
    else:
        a = base_out.reshape(len(picks), -1).astype(np.float64)
        b = other_out.reshape(len(picks), -1).astype(np.float64)
        for i, index in enumerate(picks):
            rows.append({"sample": int(index), "cosine": float(cosine_all[order[i]]),
                         "max_abs_diff": float(np.abs(a[i] - b[i]).max())})
    images = None
    first = next(iter(feed.values()))
    if first.ndim == 4 and first.shape[1] in (1, 3) and min(first.shape[2:]) >= 8:
        images = [np.asarray(img, dtype=np.float32).mean(axis=0) for img in first]
    elif first.ndim == 3 and min(first.shape[1:]) >= 8 and np.issubdtype(first.dtype, np.floating):
        images = [np.asarray(img, dtype=np.float32) for img in first]
    return SideBySide(pd.DataFrame(rows), images, task, flips, int(len(searched)))


def _flipped_first(flipped: np.ndarray, n: int, count: int) -> np.ndarray:
    """Positions to show: the flipped ones first (sample order), then agreeing ones spread evenly, `count` in all."""
    shown = list(flipped[:count])
    rest = np.setdiff1d(np.arange(n), flipped)
    room = count - len(shown)
    if room > 0 and len(rest):
        shown += list(rest[np.unique(np.linspace(0, len(rest) - 1, num=min(room, len(rest))).round().astype(int))])
    return np.asarray(shown, dtype=int)


def side_by_side_isolated(run_dir: str | Path, name: str, count: int = 8) -> SideBySide:
    """`side_by_side` in a worker process with the inspect limits: the artifacts derive from a user's upload, and
    a model that crashes or exhausts onnxruntime must take down a worker, never the dashboard.

    Raises:
        FeatherweightError: the comparison failed (one line), or the worker crashed or ran out of time.
    """

    value = _prebuilt_reply(run_dir, name, count)
    if value is None:
        value = run_isolated("core.analysis.side_by_side:side_by_side_entry", str(run_dir), name, int(count))
    if not isinstance(value, dict) or not isinstance(value.get("rows"), list):

        raise StepFailedError("the side-by-side worker sent a malformed reply")
    table = pd.DataFrame([r for r in value["rows"] if isinstance(r, dict)], columns=value.get("columns"))
    images = value.get("images")
    images = [np.asarray(img, dtype=np.float32) for img in images] if isinstance(images, list) else None
    flips, scanned = value.get("flips"), value.get("scanned")
    return SideBySide(table, images, str(value.get("task") or "classification"),
                      flips if isinstance(flips, int) else None, scanned if isinstance(scanned, int) else None)


def _prebuilt_reply(run_dir: str | Path, name: str, count: int) -> dict | None:
    """The worker's reply computed when a reference run was built (core.jobs.gallery), or None."""
    try:
        saved = json.loads(prebuilt_path(run_dir, "side_by_side", name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved.get("reply") if isinstance(saved, dict) and saved.get("count") == count else None


def side_by_side_entry(run_dir: str, name: str, count: int) -> dict:
    """In the worker: read the run's results.json and compare; reply with JSON types only."""


    phase("reading the run's models")
    results = json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))
    result = side_by_side(run_dir, results, name, count)
    table = result.table.astype(object).where(result.table.notna(), None)
    return {"rows": table.to_dict("records"), "columns": [str(c) for c in result.table.columns],
            "images": None if result.images is None else [img.tolist() for img in result.images],
            "task": result.task, "flips": result.flips, "scanned": result.scanned}
