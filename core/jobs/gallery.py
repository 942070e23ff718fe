"""The reference gallery: every sample's presets run ahead of time (`make demo`, `featherweight gallery`) into the run
store under one reserved owner, with their Graph views and side-by-side predictions computed too, so any visitor
opens Compare, Graph, Cost, the summary and the report at once. Visitors read the gallery and never write it; their
own runs stay private."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.analysis.side_by_side import side_by_side_entry
from core.errors import BadInputError, FeatherweightError
from core.io.files import PREBUILT_DIR, prebuilt_path, write_atomic
from core.jobs.graph import build_graph_view
from core.jobs.store import GALLERY_OWNER, RunRecord, RunStore
from core.pipeline.run import run_recipe
from core.spec.presets import PRESETS, preset_recipe

GALLERY_FILE = "gallery.json"  # in a reference run: the sample, the preset and when it was built


@dataclass(frozen=True)
class GalleryEntry:
    """One reference run: what it is, where it is, and whether this build made it or found it already built."""

    sample: str
    preset: str
    run_id: str | None
    status: str  # "built", "kept" (an identical recipe was already built), "skipped" (with why), "failed"
    note: str = ""


def gallery_label(sample: str, preset: str) -> str:
    """How a reference run reads in every run picker: marked as a reference result."""
    return f"Reference · {sample} · {preset}"


def gallery_runs(store: RunStore, limit: int = 200) -> list[RunRecord]:
    """The completed reference runs, newest first."""
    return [r for r in store.list(GALLERY_OWNER, limit=limit) if r.status == "completed"]


def available_samples() -> list[str]:
    """Sample models this install can load (their extras installed)."""
    # the registry imports every sample module (torch): here, as core.io.data does, not with the job modules
    from sample_models import SAMPLE_MODELS, available

    return [name for name, sample in SAMPLE_MODELS.items() if available(sample)[0]]


def _card(sample: str) -> dict:
    # torch and onnx load with the model: imported here, when a gallery is built, not with the job modules
    from core.io.model import load_model
    from core.measure.card import model_card

    return model_card(load_model(f"sample:{sample}"))


def _dataset_of(sample: str) -> str:
    from sample_models import SAMPLE_MODELS  # see available_samples

    return f"sample:{SAMPLE_MODELS[sample].dataset}"


def _existing(store: RunStore, label: str, recipe_yaml: str) -> RunRecord | None:
    for record in gallery_runs(store):
        if record.label == label:
            try:
                same = (store.run_dir(record.id) / "recipe.yaml").read_text(encoding="utf-8") == recipe_yaml
            except OSError:
                same = False
            if same and (store.run_dir(record.id) / "results.json").exists():
                return record
    return None


def prebuild_views(run_dir: Path, results: dict, *, graph: bool = True,
                   on_message: Callable[[str], None] = lambda m: None) -> int:
    """Compute each measured variant's Graph view and side-by-side predictions into the run's prebuilt folder
    (what the pages read instead of starting a worker). Returns how many views were written."""
    written = 0
    for variant in (results.get("variants") or [])[1:]:
        if variant.get("status") != "ok" or not variant.get("artifact"):
            continue
        name = variant["name"]
        try:
            reply = side_by_side_entry(str(run_dir), name, 8)
            write_atomic(prebuilt_path(run_dir, "side_by_side", name), json.dumps({"count": 8, "reply": reply}))
            written += 1
        except (FeatherweightError, OSError, ValueError) as exc:
            on_message(f"  {name}: no side-by-side view ({exc})")
        if graph and results.get("task") != "text-generation":
            folder = prebuilt_path(run_dir, "graph", name)
            try:
                summary = build_graph_view(run_dir, name, folder)
                write_atomic(folder / "summary.json", json.dumps(summary))
                written += 1
            except (FeatherweightError, OSError, ValueError) as exc:
                on_message(f"  {name}: no Graph view ({exc})")
    return written


def _read_only(run_dir: Path) -> None:
    """Files of a reference run become read-only (its folders stay writable to the store, which may delete it)."""
    for path in run_dir.rglob("*"):
        if path.is_file():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def build_gallery(store: RunStore, *, samples: list[str] | None = None, presets: list[str] | None = None,
                  graph: bool = True, force: bool = False,
                  on_message: Callable[[str], None] = lambda m: None) -> list[GalleryEntry]:
    """Run every preset of every sample (or the ones named) as a reference run, unless an identical one is already
    in the gallery (`force` rebuilds it), then precompute its views and make its files read-only.

    Raises:
        FeatherweightError: an unknown sample or preset name (names the allowed ones).
    """
    known = available_samples()
    wanted = samples or known
    for name in wanted:
        if name not in known:
            raise BadInputError(f"sample {name!r} is not available here; available: {', '.join(known)}")
    for name in presets or []:
        if name not in PRESETS:
            raise BadInputError(f"preset {name!r} does not exist; presets: {', '.join(PRESETS)}")
    entries: list[GalleryEntry] = []
    for sample in wanted:
        try:
            card = _card(sample)
        except FeatherweightError as exc:
            entries.append(GalleryEntry(sample, "", None, "skipped", str(exc)))
            continue
        data = _dataset_of(sample)
        for preset in presets or list(PRESETS):
            recipe, left_out = preset_recipe(preset, card, model=f"sample:{sample}", data=data)
            label = gallery_label(sample, preset)
            if not recipe.variants:
                entries.append(GalleryEntry(sample, preset, None, "skipped", "no variant runs on this model: "
                                            + "; ".join(left_out)))
                on_message(f"{label}: skipped (no variant runs on this model)")
                continue
            recipe_yaml = recipe.to_yaml()
            found = _existing(store, label, recipe_yaml)
            if found is not None and not force:
                entries.append(GalleryEntry(sample, preset, found.id, "kept"))
                on_message(f"{label}: kept {found.id}")
                continue
            record = store.create(GALLERY_OWNER, recipe_yaml, label=label, model=recipe.model, data=recipe.data)
            run_dir = store.run_dir(record.id)
            store.set_status(record.id, "running", pid=os.getpid())
            started = time.monotonic()
            on_message(f"{label}: running {len(recipe.variants)} variant(s) into {record.id}")
            try:
                result = run_recipe(recipe, run_dir)
                views = prebuild_views(run_dir, result.to_dict(), graph=graph, on_message=on_message)
                write_atomic(run_dir / GALLERY_FILE, json.dumps({"sample": sample, "preset": preset,
                                                                 "built_at": time.time(), "left_out": left_out}))
            except (FeatherweightError, OSError) as exc:
                store.set_status(record.id, "failed", str(exc))
                entries.append(GalleryEntry(sample, preset, record.id, "failed", str(exc)))
                on_message(f"{label}: failed ({exc})")
                continue
            store.set_status(record.id, "completed")
            _read_only(run_dir)
            if found is not None:
                store.delete(found.id)
            entries.append(GalleryEntry(sample, preset, record.id, "built",
                                        f"{time.monotonic() - started:.0f} s, {views} prebuilt view(s)"))
            on_message(f"{label}: built in {time.monotonic() - started:.0f} s")
    return entries


__all__ = ["GALLERY_FILE", "GALLERY_OWNER", "GalleryEntry", "PREBUILT_DIR", "available_samples", "build_gallery",
           "gallery_label", "gallery_runs", "prebuild_views"]
