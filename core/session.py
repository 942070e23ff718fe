"""What a dashboard session holds and does, without Streamlit: the chosen model and data, upload handling that
keeps what the user had when a file is bad, launching runs exactly once, and portable recipes for export.

The dashboard keeps these objects in ``st.session_state`` under the key constants below; tests drive the same
functions with a plain dict.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import BadInputError, FeatherweightError
from core.spec.recipe import Recipe
from core.io.files import write_atomic

# Session-state keys (one place, so pages and tests agree).
MODEL_KEY = "fw_model"  # ModelChoice | None
DATA_KEY = "fw_data"  # DataChoice | None
RECIPE_KEY = "fw_recipe"  # Recipe being edited on the Optimize page
RECIPE_VERSION_KEY = "fw_recipe_version"  # bumped when the recipe is replaced, so form widgets reset
PRESET_KEY = "fw_preset"  # (preset name, variants it left out) last applied on the Optimize page
RUN_KEY = "fw_run"  # run id open on the Compare page (and followed on the Optimize page)
OWNER_KEY = "fw_owner"  # who submits jobs: stable per browser where possible
UPLOAD_SEEN_KEY = "fw_upload_seen"  # file ids already handled, so a rerun does not re-process an upload
RECIPE_RESET_KEY = "fw_recipe_reset"  # the label of the model whose recipe a model change dropped (one notice)

MODEL_UPLOAD_TYPES = ("onnx", "pt", "pth", "safetensors", "zip")  # zip: a decoder checkpoint folder
TEXT_UPLOAD_TYPES = ("txt", "jsonl")  # held-out text for a decoder (core.io.text)
DATA_UPLOAD_TYPES = ("npz", "csv") + TEXT_UPLOAD_TYPES
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class ModelChoice:
    """The model a session works on: a sample or an uploaded file, with its card."""

    spec: str  # "sample:NAME" or "inputs/FILENAME" (the upload travels with the job)
    label: str
    card: dict = field(repr=False)
    filename: str | None = None
    content: bytes | None = field(default=None, repr=False)
    digest: str | None = None

    @property
    def is_upload(self) -> bool:
        return self.content is not None


@dataclass(frozen=True)
class DataChoice:
    """The data a session measures with: a sample, an uploaded NPZ / CSV, or none (synthetic inputs)."""

    spec: str | None
    label: str
    summary: dict | None = None
    filename: str | None = None
    content: bytes | None = field(default=None, repr=False)
    digest: str | None = None

    @property
    def is_upload(self) -> bool:
        return self.content is not None


NO_DATA = DataChoice(None, "none (synthetic inputs: fidelity only, no accuracy)")
# A language model without text of its own: scored on the bundled everyday sentences (core.io.text).
NO_TEXT = DataChoice(None, "the bundled sentences (no text of your own)")


def no_data_for(card: dict | None) -> DataChoice:
    """What "no data" means for a model: synthetic inputs, or for a language model the bundled sentences."""
    return NO_TEXT if (card or {}).get("task") == "text-generation" else NO_DATA


@dataclass(frozen=True)
class Outcome:
    """What an upload or a choice did: an error (nothing changed) and/or a notice (something else changed)."""

    error: str | None = None
    notice: str | None = None


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def safe_filename(name: str, allowed_suffixes: tuple[str, ...]) -> str:
    """A plain file name for an upload (no directories, only safe characters), keeping its extension.

    Raises:
        BadInputError: the extension is not one of `allowed_suffixes`.
    """
    base = Path(str(name).replace("\\", "/")).name
    suffix = Path(base).suffix.lower()
    if suffix.lstrip(".") not in allowed_suffixes:
        raise BadInputError(f"{base or 'the file'}: unsupported file type {suffix or '(none)'!r}; allowed: "
                            f"{', '.join('.' + s for s in allowed_suffixes)}")
    stem = "".join(c if c in _SAFE else "_" for c in Path(base).stem).strip("._") or "upload"
    return f"{stem[:80]}{suffix}"


# --------------------------------------------------------------------------------------------------------------
# Loading what a choice refers to


def sample_card(name: str) -> dict:
    """The model card of a bundled sample (loads it, which imports torch: cache the result)."""
    from core.io.model import load_model
    from core.measure.card import model_card

    return model_card(load_model(f"sample:{name}"))


def inspect_model_bytes(data: bytes, filename: str) -> dict:
    """Check an uploaded model and return its card, in an isolated worker (`core.jobs.entries.inspect_isolated`).

    Raises:
        FeatherweightError: the file is rejected (one line saying why).
    """
    # core.jobs.entries loads the pipeline and pandas: imported on the first upload, not with every page.
    from core.jobs.entries import inspect_isolated

    return inspect_isolated(data, filename)


def load_choice_model(choice: ModelChoice):
    """The `core.io.graph.Model` a choice refers to."""
    from core.io.model import load_model, load_model_bytes

    if choice.is_upload:
        return load_model_bytes(choice.content, choice.filename)
    return load_model(choice.spec)


def bind_data(model_choice: ModelChoice, spec: str | None, *, filename: str | None = None,
              content: bytes | None = None) -> dict:
    """Load data (a sample, uploaded bytes, or none) against the model and return the dataset summary.

    Uploaded files are parsed in an isolated worker (`core.jobs.entries.check_data_isolated`); samples load in this
    process.

    Raises:
        FeatherweightError: the data is unreadable or does not fit the model's inputs.
    """
    # core.jobs.entries loads the pipeline and pandas: imported on the first upload, not with every page.
    from core.jobs.entries import check_data_isolated

    if model_choice.is_upload or content is not None:
        return check_data_isolated(model_choice.content if model_choice.is_upload else model_choice.spec,
                                   content if content is not None else spec, model_filename=model_choice.filename,
                                   data_filename=filename)
    from core.io.data import load_data, load_data_bytes
    from core.io.decoder import DecoderCheckpoint
    from core.io.text import heldout_text

    model = load_choice_model(model_choice)
    if isinstance(model, DecoderCheckpoint):  # a sample decoder's text: its own, or another text sample
        return heldout_text(model, spec).summary
    trains = model.torch_module is not None  # an ONNX-only model's data is shown as a run splits it: no train
    if content is not None:
        return load_data_bytes(content, filename, model, train_needed=trains).summary()
    return load_data(spec, model, train_needed=trains).summary()


def default_data_for(model_choice: ModelChoice) -> str | None:
    """The sample dataset a sample model comes with; None (synthetic) for uploads."""
    if model_choice.spec.startswith("sample:"):
        from sample_models import SAMPLE_MODELS

        sample = SAMPLE_MODELS.get(model_choice.spec.split(":", 1)[1])
        return f"sample:{sample.dataset}" if sample else None
    return None


# --------------------------------------------------------------------------------------------------------------
# Changing the session's model and data; a failure leaves the state exactly as it was


def model_identity(choice: ModelChoice | None) -> str | None:
    """What makes two model choices the same model: the spec, and an upload's content digest."""
    return None if choice is None else f"{choice.spec}#{choice.digest or ''}"


def _set_model(state: MutableMapping, choice: ModelChoice) -> None:
    """Make `choice` the model; a different model drops the recipe made for the previous one (its variants,
    excluded node names and options fit that model, not this), so the Optimize page starts from a preset fitted to
    the new model and says why (RECIPE_RESET_KEY)."""
    previous = state.get(MODEL_KEY)
    if previous is not None and model_identity(previous) != model_identity(choice):
        if state.get(RECIPE_KEY) is not None:
            state[RECIPE_RESET_KEY] = previous.label
        state.pop(RECIPE_KEY, None)
        state.pop(PRESET_KEY, None)
        state[RECIPE_VERSION_KEY] = int(state.get(RECIPE_VERSION_KEY, 0) or 0) + 1  # the forms' widgets start over
    state[MODEL_KEY] = choice


def choose_sample_model(state: MutableMapping, name: str, *, card: dict | None = None,
                        data_summary=None) -> Outcome:
    """Make sample `name` the session's model, with its own dataset.

    Args:
        state: the session state.
        name: sample model name.
        card: its card when the caller has it cached (else it is computed).
        data_summary: a callable (model_choice, spec) -> summary, for cached sample data (else `bind_data`).
    """
    try:
        card = card if card is not None else sample_card(name)
        choice = ModelChoice(f"sample:{name}", name, card)
        data_spec = default_data_for(choice)
        summary = (data_summary or (lambda c, s: bind_data(c, s)))(choice, data_spec) if data_spec else None
    except FeatherweightError as exc:
        return Outcome(error=str(exc))
    _set_model(state, choice)
    state[DATA_KEY] = DataChoice(data_spec, data_spec, summary) if data_spec else no_data_for(card)
    return Outcome()


def apply_model_upload(state: MutableMapping, filename: str, data: bytes) -> Outcome:
    """Check an uploaded model and make it the session's model; on any problem, change nothing.

    The current data is kept when it fits the new model, else replaced by synthetic inputs (with a notice).
    """
    try:
        name = safe_filename(filename, MODEL_UPLOAD_TYPES)
        card = inspect_model_bytes(data, name)
    except FeatherweightError as exc:
        return Outcome(error=str(exc))
    except MemoryError:
        return Outcome(error=f"{filename}: the model is too large to inspect on this server")
    choice = ModelChoice(f"inputs/{name}", name, card, filename=name, content=bytes(data), digest=digest_of(data))
    notice = None
    current = state.get(DATA_KEY)
    new_data = no_data_for(card)
    if current is not None and current.spec is not None:
        try:
            summary = bind_data(choice, current.spec, filename=current.filename, content=current.content)
            new_data = replace(current, summary=summary)
        except FeatherweightError as exc:
            notice = (f"The data {current.label} does not fit {name} ({exc}); "
                      + ("scoring on the bundled everyday sentences instead. Upload a .txt or .jsonl of your own "
                         "text to score the model on it." if card.get("task") == "text-generation" else
                         "measuring with synthetic inputs instead. Upload data that matches the model for "
                         "accuracy."))
    _set_model(state, choice)
    state[DATA_KEY] = new_data
    return Outcome(notice=notice)


def apply_data_upload(state: MutableMapping, filename: str, data: bytes) -> Outcome:
    """Check an uploaded NPZ / CSV against the session's model and use it; on any problem, change nothing."""
    model = state.get(MODEL_KEY)
    if model is None:
        return Outcome(error="choose a model first: data is checked against the model's inputs")
    try:
        name = safe_filename(filename, DATA_UPLOAD_TYPES)
        summary = bind_data(model, None, filename=name, content=data)
    except FeatherweightError as exc:
        return Outcome(error=str(exc))
    except MemoryError:
        return Outcome(error=f"{filename}: the data is too large for this server")
    state[DATA_KEY] = DataChoice(f"inputs/{name}", name, summary, filename=name, content=bytes(data),
                                 digest=digest_of(data))
    return Outcome()


def choose_sample_data(state: MutableMapping, name: str | None, *, data_summary=None) -> Outcome:
    """Use sample dataset `name` (or None: synthetic inputs); on a mismatch with the model, change nothing."""
    model = state.get(MODEL_KEY)
    if model is None:
        return Outcome(error="choose a model first")
    if name is None:
        state[DATA_KEY] = no_data_for(model.card)
        return Outcome()
    spec = f"sample:{name}"
    try:
        summary = (data_summary or (lambda c, s: bind_data(c, s)))(model, spec)
    except FeatherweightError as exc:
        return Outcome(error=str(exc))
    state[DATA_KEY] = DataChoice(spec, spec, summary)
    return Outcome()


# --------------------------------------------------------------------------------------------------------------
# Launching runs exactly once


def owner_from_cookie(cookie: str | None) -> str | None:
    """A stable, non-secret owner id from Streamlit's per-browser XSRF cookie.

    Tornado re-masks the cookie on every page load (``2|mask|masked_token|timestamp``), so the token is
    unmasked first; only a hash of it is kept.
    """
    if not isinstance(cookie, str) or not cookie:
        return None
    token = cookie.encode("utf-8")
    parts = cookie.split("|")
    if len(parts) == 4 and parts[0] == "2":
        try:
            mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
            token = bytes(b ^ mask[i % len(mask)] for i, b in enumerate(masked)) if mask else masked
        except ValueError:
            pass
    return "browser-" + hashlib.sha256(token).hexdigest()[:20]


@dataclass(frozen=True)
class Launch:
    """The result of asking for a run: its id, whether it was already running, and a message for the user."""

    run_id: str
    reused: bool
    message: str | None = None


class RunLauncher:
    """Submits runs to a JobRunner so that a rerun, a double click or a second tab never starts one twice.

    Identical requests from one owner (same recipe, model, data and uploaded bytes) while one is queued or
    running attach to it; a second different run from the same owner is refused by the JobRunner's admission and the caller is
    pointed at the run in progress.
    """

    def __init__(self, runner):
        self.runner = runner
        self.store = runner.store
        self._lock = threading.Lock()
        self._fingerprints: dict[str, str] = {}

    @staticmethod
    def fingerprint(owner: str, recipe_yaml: str, model: ModelChoice, data: DataChoice | None) -> str:
        """What makes two requests the same run: the owner (a workshop's identical recipes from different people
        are different runs, each visible only to its owner), the recipe, the model and the data."""
        parts = [owner, recipe_yaml, model.spec, model.digest or "", (data or NO_DATA).spec or "",
                 (data or NO_DATA).digest or ""]
        return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()

    def active_run_of(self, owner: str) -> str | None:
        """The owner's queued or running run, if any (newest first)."""
        from core.jobs.store import ACTIVE

        return next((r.id for r in self.store.list(owner) if r.status in ACTIVE), None)

    def launch(self, owner: str, recipe: Recipe, model: ModelChoice, data: DataChoice | None) -> Launch:
        """Start `recipe` on the model and data, or return the identical run already in progress.

        Raises:
            BadInputError: the server's queue is full.
        """
        from core.jobs.store import ACTIVE

        data = data or NO_DATA
        recipe = recipe.replace(model=model.spec, data=data.spec)
        recipe_yaml = recipe.to_yaml()
        key = self.fingerprint(owner, recipe_yaml, model, data)
        with self._lock:
            for run_id, fingerprint in list(self._fingerprints.items()):
                if fingerprint != key:
                    continue
                try:
                    if self.store.get(run_id).status in ACTIVE:
                        return Launch(run_id, True, "This exact run is already in progress; showing it.")
                except BadInputError:
                    pass
                self._fingerprints.pop(run_id, None)
            inputs = {}
            if model.is_upload:
                inputs[model.filename] = model.content
            if data.is_upload:
                inputs[data.filename] = data.content
            label = f"{model.label} · {len(recipe.variants)} variant{'s' if len(recipe.variants) != 1 else ''}"
            try:
                run_id = self.runner.submit(owner, recipe_yaml, model.spec, data.spec, label=label, inputs=inputs)
            except BadInputError:
                active = self.active_run_of(owner)
                if active is None:
                    raise
                return Launch(active, True, "You already have a run in progress (perhaps in another tab); "
                                            "showing it. Cancel it to start a different one.")
            self._fingerprints[run_id] = key
            return Launch(run_id, False)


def live_elapsed_s(progress: dict | None, now: float | None = None) -> float:
    """Seconds since the run started, as of now: the last progress event's elapsed time plus the time since it was
    sent (a long step sends no event for minutes, and the elapsed time shown must still tick)."""
    if not progress:
        return 0.0
    elapsed = float(progress.get("elapsed_s") or 0.0)
    emitted = progress.get("emitted_at")
    if isinstance(emitted, (int, float)) and emitted > 0:
        elapsed += max(0.0, (time.time() if now is None else now) - float(emitted))
    return elapsed


# --------------------------------------------------------------------------------------------------------------
# What survives a reload and a server restart: the session's model, data and recipe, saved per owner

SESSIONS_DIR = "sessions"  # under the run store's root: sessions/<owner>/state.json and sessions/<owner>/inputs/
# A session's state.json: its model card (core.measure.card keeps it to a few hundred KiB), data summary and
# recipe (at most 256 KiB of text). A bigger file is neither written whole nor read back: a 300k-tensor checkpoint
# once made a 63 MB one, parsed again at every reload.
MAX_STATE_BYTES = 2**20
SAVED_KEY = "fw_saved_fingerprint"  # what was last written, so an unchanged rerun writes nothing
RESTORED_KEY = "fw_session_restored"  # set once per browser session: restore only on its first run


def _owner_dir(root: str | Path, owner: str) -> Path:
    if not isinstance(owner, str) or not owner or set(owner) - _SAFE or owner.startswith("."):
        raise BadInputError(f"invalid owner id {owner!r}")
    return Path(root) / SESSIONS_DIR / owner


def _choice_dict(choice) -> dict | None:
    if choice is None:
        return None
    out = {"spec": choice.spec, "label": choice.label, "filename": choice.filename, "digest": choice.digest}
    out["card" if isinstance(choice, ModelChoice) else "summary"] = (
        choice.card if isinstance(choice, ModelChoice) else choice.summary)
    return out


def session_fingerprint(state: MutableMapping) -> str:
    """A digest of what `save_session` writes (model, data, recipe), to skip writes when nothing changed."""
    model, data, recipe = state.get(MODEL_KEY), state.get(DATA_KEY), state.get(RECIPE_KEY)
    parts = [model.spec if model else "", model.digest or "" if model else "", data.spec or "" if data else "",
             data.digest or "" if data else "", recipe.to_yaml() if isinstance(recipe, Recipe) else "",
             json.dumps(state.get(PRESET_KEY), default=str)]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def save_session(state: MutableMapping, root: str | Path, owner: str) -> bool:
    """Write the session's model, data and recipe for `owner` (uploads as files next to them), atomically.

    Returns:
        True when something was written (False: unchanged since the last save of this session).
    """
    fingerprint = session_fingerprint(state)
    if state.get(SAVED_KEY) == fingerprint:
        return False
    directory = _owner_dir(root, owner)
    model, data, recipe = state.get(MODEL_KEY), state.get(DATA_KEY), state.get(RECIPE_KEY)
    keep = set()
    for choice in (model, data):
        if choice is not None and choice.is_upload:
            target = directory / "inputs" / choice.filename
            keep.add(choice.filename)
            if not target.exists() or digest_of(target.read_bytes()) != choice.digest:
                write_atomic(target, choice.content)
    preset = state.get(PRESET_KEY)
    saved = {"version": 1, "model": _choice_dict(model), "data": _choice_dict(data),
             "recipe": recipe.to_yaml() if isinstance(recipe, Recipe) else None,
             "preset": [preset[0], list(preset[1])] if preset else None}
    text = json.dumps(saved, indent=1, default=str)
    for bulky in (("model", "card"), ("data", "summary")):  # kept small: the card's tables, then the summary
        if len(text) <= MAX_STATE_BYTES:
            break
        if saved[bulky[0]]:
            saved[bulky[0]][bulky[1]] = {k: v for k, v in (saved[bulky[0]][bulky[1]] or {}).items()
                                         if isinstance(v, (str, int, float, bool)) or v is None}
            text = json.dumps(saved, indent=1, default=str)
    if len(text) > MAX_STATE_BYTES:
        return False  # not saved: a reload starts afresh rather than carry megabytes
    write_atomic(directory / "state.json", text)
    inputs = directory / "inputs"
    if inputs.is_dir():
        for old in inputs.iterdir():  # an upload the session replaced
            if old.name not in keep and not old.name.startswith("."):
                old.unlink(missing_ok=True)
    state[SAVED_KEY] = fingerprint
    return True


def forget_saved_session(root: str | Path, owner: str) -> None:
    """Delete the owner's saved model, data and recipe (a workshop teacher's reset); their runs are untouched."""
    import shutil

    shutil.rmtree(_owner_dir(root, owner), ignore_errors=True)


def restore_saved_session(state: MutableMapping, root: str | Path, owner: str) -> bool:
    """Put the owner's saved model, data and recipe back into a fresh session (a reload, a server restart).

    Only fills what the session does not hold yet; an upload whose saved bytes are missing or altered is skipped
    (with its data), never trusted. Returns whether a model came back.
    """
    if state.get(RESTORED_KEY):
        return False
    state[RESTORED_KEY] = True
    if state.get(MODEL_KEY) is not None:
        return False
    directory = _owner_dir(root, owner)
    try:
        if (directory / "state.json").stat().st_size > MAX_STATE_BYTES:
            return False  # an old version's oversized file: not parsed at every reload
        saved = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False

    def content(entry: dict) -> bytes | None:
        name = entry.get("filename")
        if not name:
            return None
        path = directory / "inputs" / Path(str(name)).name
        try:
            data = path.read_bytes()
        except OSError:
            raise BadInputError(f"the saved upload {name} is gone") from None
        if digest_of(data) != entry.get("digest"):
            raise BadInputError(f"the saved upload {name} changed on disk")
        return data

    try:
        m = saved.get("model")
        if not m:
            return False
        model_bytes = content(m)
        model = ModelChoice(str(m["spec"]), str(m["label"]), dict(m.get("card") or {}), filename=m.get("filename"),
                            content=model_bytes, digest=m.get("digest"))
        d = saved.get("data")
        data = no_data_for(model.card)
        if d and d.get("spec"):
            data_bytes = content(d)
            data = DataChoice(str(d["spec"]), str(d["label"]), d.get("summary"), filename=d.get("filename"),
                              content=data_bytes, digest=d.get("digest"))
        recipe = Recipe.from_text(saved["recipe"]) if saved.get("recipe") else None
    except (FeatherweightError, KeyError, TypeError, ValueError):
        return False
    state[MODEL_KEY] = model
    state[DATA_KEY] = data
    if recipe is not None and RECIPE_KEY not in state:
        state[RECIPE_KEY] = recipe
        if saved.get("preset"):
            state[PRESET_KEY] = (saved["preset"][0], list(saved["preset"][1]))
    state[SAVED_KEY] = session_fingerprint(state)
    return True


def learn_sources(state: Mapping, *, spec_key: str, default: str) -> tuple[dict, str | None, list[str]]:
    """What the Learn explainers can explain for this session: every source keyed by a plain cache key (the
    session's current model first, then the samples, `default` first among them), the key of the current model
    (from the Model page, or a spec under `spec_key`) if any, and warnings about a spec that cannot be used.

    The key names the model and the data it is explained on (an upload by its digest), so two sessions with the
    same choice share cached views and a different dataset never reuses another's.
    """
    # Here, not at the top: the teach sources pull in onnx and the samples, which the dashboard's first render and the
    # workers that import this module do not need.
    from core.teach.source import LearnSource, learnable_samples, sample_source

    out: dict[str, LearnSource] = {}
    warnings: list[str] = []
    spec = state.get(spec_key)
    if isinstance(spec, str) and spec.strip():
        try:
            out[spec.strip()] = sample_source(spec.strip())
        except FeatherweightError as exc:
            warnings.append(f"Ignoring the model {spec!r}: {exc}")
    choice = state.get(MODEL_KEY)
    if choice is not None:
        data = state.get(DATA_KEY)
        data_spec = getattr(data, "spec", None)
        data_upload = bool(getattr(data, "is_upload", False))
        data_id = (getattr(data, "digest", None) if data_upload else data_spec) or "synthetic"
        if choice.is_upload:
            model_fields = {"model_filename": choice.filename, "model_content": choice.content}
            key = f"upload:{choice.digest}:{data_id}"
        else:
            model_fields = {"model_spec": choice.spec}
            sample_default = sample_source(choice.spec)
            key = choice.spec if data is None or (not data_upload and data_spec == sample_default.data_spec) \
                else f"{choice.spec}|{data_id}"
        if data is None and not choice.is_upload:
            data_fields = {"data_spec": sample_source(choice.spec).data_spec}
        elif data_upload:
            data_fields = {"data_filename": data.filename, "data_content": data.content}
        else:
            data_fields = {"data_spec": data_spec}
        out.setdefault(key, LearnSource(key=key, label=f"{choice.label} (current model)", **model_fields,
                                        **data_fields))
    current = next(iter(out), None)
    samples = learnable_samples()
    samples.sort(key=lambda s: s != default)
    for sample in samples:
        out.setdefault(sample, sample_source(sample))
    return out, current, warnings
