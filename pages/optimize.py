"""Optimize page: presets and a form per technique build a recipe (also editable as YAML); Run starts a job in a
worker process and its progress and results appear live."""

from __future__ import annotations

import streamlit as st

from core.errors import FeatherweightError
from core.jobs import CANCEL_FLAG
from core.presets import PRESETS, preset_recipe
from core.recipe import Recipe, Variant
from core.session import (DATA_KEY, MODEL_KEY, NO_DATA, PRESET_KEY, RECIPE_KEY, RECIPE_VERSION_KEY, RUN_KEY,
                          choose_sample_data, choose_sample_model, digest_of)
from core.store import ACTIVE
from ui import forms, services
from ui.shell import ensure_app_shell
from ui.tables import results_table_ui

ensure_app_shell()

DEFAULT_PRESET = "Quick quantization"
PRESET_WIDGET_KEY = "preset_pills"
NEW_VARIANT_NAME_KEY = "new_variant_name"
NEW_VARIANT_TECHNIQUES_KEY = "new_variant_techniques"
MESSAGE_KEY = "optimize_message"  # one-shot message shown after a rerun
# How often a session's progress view polls: every poll is a script run on the server and a redraw in the browser,
# times every session of a workshop; a queued job changes slowly.
PROGRESS_POLL_S = {"running": 1.0, "queued": 2.0}


def _bump_version() -> None:
    st.session_state[RECIPE_VERSION_KEY] = st.session_state.get(RECIPE_VERSION_KEY, 0) + 1


def _set_recipe(recipe: Recipe) -> None:
    st.session_state[RECIPE_KEY] = recipe
    _bump_version()


def _apply_preset() -> None:
    name = st.session_state.get(PRESET_WIDGET_KEY)
    model = st.session_state.get(MODEL_KEY)
    if not name or model is None:
        return
    current: Recipe = st.session_state.get(RECIPE_KEY) or Recipe()
    recipe, skipped = preset_recipe(name, model.card, benchmark=current.benchmark)
    st.session_state[PRESET_KEY] = (name, skipped)
    _set_recipe(recipe.replace(seed=current.seed))


def _remove_variant(index: int) -> None:
    recipe: Recipe = st.session_state[RECIPE_KEY]
    _set_recipe(recipe.replace(variants=tuple(v for i, v in enumerate(recipe.variants) if i != index)))


def _add_variant() -> None:
    recipe: Recipe = st.session_state[RECIPE_KEY]
    techniques = st.session_state.get(NEW_VARIANT_TECHNIQUES_KEY) or []
    name = (st.session_state.get(NEW_VARIANT_NAME_KEY) or "").strip()
    if not techniques:
        st.session_state[MESSAGE_KEY] = ("error", "Pick at least one technique for the new variant.")
        return
    name = name or "-".join(t for t in forms.TECHNIQUE_ORDER if t in techniques)
    taken = {v.name for v in recipe.variants}
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    try:
        variant = Variant(name, forms.new_variant_steps(techniques))
        _set_recipe(recipe.replace(variants=recipe.variants + (variant,)))
    except FeatherweightError as exc:
        st.session_state[MESSAGE_KEY] = ("error", str(exc))
        return
    st.session_state[NEW_VARIANT_NAME_KEY] = ""


def _variant_summary(variant: Variant) -> str:
    parts = []
    for s in variant.steps:
        if s.technique == "quantize":
            parts.append(f"quantize {s.mode}")
        elif s.technique == "prune":
            parts.append(f"prune {s.method} {s.amount:.0%}")
        elif s.technique == "distill":
            parts.append(f"distill ×{s.width:g} width")
    return " → ".join(parts) or "no steps"


def recipe_form_ui(recipe: Recipe, model) -> tuple[Recipe, list[str]]:
    """Every variant's options and the benchmark settings; returns the edited recipe and any errors."""
    version = st.session_state.get(RECIPE_VERSION_KEY, 0)
    node_names = [layer["name"] for layer in model.card.get("layers") or []]
    variants, errors = [], []
    if not recipe.variants:
        st.info("No variants yet: choose a preset above or add one below.", icon=":material/add_circle:")
    for i, variant in enumerate(recipe.variants):
        key = f"r{version}.{i}"
        shown_name = st.session_state.get(f"{key}.name", variant.name)
        with st.expander(f"**{shown_name}** · {_variant_summary(variant)}", expanded=len(recipe.variants) <= 2):
            edited, error = forms.variant_ui(variant, key, node_names)
            st.button("Remove this variant", key=f"{key}.remove", on_click=_remove_variant, args=(i,),
                      icon=":material/delete:", type="tertiary")
        if error:
            errors.append(f"{shown_name}: {error}")
            variants.append(variant)
        else:
            variants.append(edited)

    with st.container(border=True):
        st.markdown("**Add a variant**")
        c1, c2, c3 = st.columns([2, 3, 1], vertical_alignment="bottom")
        c1.text_input("Name", key=NEW_VARIANT_NAME_KEY, placeholder="e.g. pruned-int8")
        c2.multiselect("Techniques (run in this order: prune, distill, quantize)", list(forms.TECHNIQUE_ORDER),
                       key=NEW_VARIANT_TECHNIQUES_KEY, format_func=forms.TECHNIQUE_TITLES.get)
        c3.button("Add", on_click=_add_variant, icon=":material/add:", width="stretch")

    with st.expander("Benchmark settings", expanded=False):
        sequence = any(isinstance(d, str) for t in model.card.get("inputs", []) for d in t["shape"][1:])
        bench = forms.benchmark_ui(recipe.benchmark, f"r{version}.bench", sequence_inputs=sequence)
        seed = st.number_input("Seed", 0, 2**32 - 1, recipe.seed, key=f"r{version}.seed",
                               help="Seeds data splits, fine-tuning and distillation, so a run reproduces.")
    try:
        edited = recipe.replace(variants=tuple(variants), benchmark=bench, seed=int(seed))
    except FeatherweightError as exc:
        errors.append(str(exc))
        edited = recipe
    return edited, errors


def yaml_ui(recipe: Recipe, model, data) -> None:
    """The recipe as YAML: edit and apply (a bad recipe is reported and nothing changes), or download."""
    shown = recipe.replace(model=model.spec if not model.is_upload else model.filename,
                           data=data.spec if not data.is_upload else data.filename)
    text = shown.to_yaml()
    edited = st.text_area("Recipe (YAML)", value=text, height=340, key=f"yaml.{digest_of(text.encode())}",
                          help="Edit and press Apply. `model` and `data` follow the Model page; a different "
                               "sample:NAME here switches to it.")
    c1, c2, _ = st.columns([1, 1, 3])
    if c1.button("Apply YAML", icon=":material/check:", disabled=edited == text):
        try:
            parsed = Recipe.from_text(edited)
        except FeatherweightError as exc:
            st.error(f"Recipe not applied: {exc}", icon=":material/error:")
        else:
            message = _switch_model_from_yaml(parsed, model)
            _set_recipe(parsed.replace(model=None, data=None))
            st.session_state[MESSAGE_KEY] = message or ("success", "Recipe applied.")
            st.rerun()
    c2.download_button("Download recipe", data=text, file_name="recipe.yaml", mime="application/x-yaml",
                       icon=":material/download:")


def _switch_model_from_yaml(parsed: Recipe, model) -> tuple[str, str] | None:
    """Follow a YAML that names another sample model or sample dataset."""
    if parsed.model and parsed.model.startswith("sample:") and parsed.model != model.spec:
        name = parsed.model.split(":", 1)[1]
        try:
            card = services.sample_card(name)
        except FeatherweightError as exc:
            return ("error", f"Recipe applied, but its model could not be loaded: {exc}")
        outcome = choose_sample_model(st.session_state, name, card=card, data_summary=services.data_summary)
        if outcome.error:
            return ("error", outcome.error)
    if parsed.data and parsed.data.startswith("sample:"):
        current = st.session_state.get(DATA_KEY) or NO_DATA
        if current.spec != parsed.data:
            outcome = choose_sample_data(st.session_state, parsed.data.split(":", 1)[1],
                                         data_summary=services.data_summary)
            if outcome.error:
                return ("error", f"Recipe applied, but its data does not fit: {outcome.error}")
    return None


def progress_ui(run_id: str) -> None:
    """The run's live state: which variant and step, elapsed time, Cancel, and the variants finished so far."""
    from core.results import batch_sizes_of, results_frame

    runner = services.launcher().runner
    if not services.can_view(run_id):
        return
    try:
        status = runner.status(run_id)
        record = runner.store.get(run_id)
    except FeatherweightError:
        st.info("That run is no longer in the store.")
        return
    active = status.state in ACTIVE
    mine = record.owner == services.owner_id()
    state_at_render = status.state

    @st.fragment(run_every=PROGRESS_POLL_S.get(state_at_render))
    def live() -> None:
        status = runner.status(run_id)
        if status.state != state_at_render:
            st.rerun()  # started or finished: redraw the page once, with the poll rate of the new state
        progress = status.progress or {}
        if status.state == "queued":
            ahead = (status.queue_position or 1) - 1
            busy = f" · {runner.running_count()} of {runner.max_workers} workers busy"
            st.info(f"Queued{f' — {ahead} job(s) ahead of yours' if ahead else ' — starting'}{busy}…",
                    icon=":material/schedule:")
        elif status.state == "running":
            count = progress.get("variant_count") or 1
            index = min(count, (progress.get("variant_index") or 0) + 1)
            cancelling = (runner.store.run_dir(run_id) / CANCEL_FLAG).exists()
            if not progress:
                label = "Starting the worker process (loading the model and data)…"
            else:
                label = (f"Variant {index} of {count}: **{progress.get('variant') or 'finishing'}** — "
                         f"{progress.get('message')} · {progress.get('elapsed_s', 0.0):.1f} s elapsed")
            if cancelling:
                label = f"Stopping… {label}"
            st.progress(min(1.0, float(progress.get("fraction") or 0.0)), text=label)
        else:
            _final_status_ui(status, record)
        if active and mine:
            if st.button("Cancel run", icon=":material/stop_circle:", key=f"cancel.{run_id}",
                         disabled=status.state not in ACTIVE):
                runner.cancel(run_id, services.owner_id())
                st.toast("Cancelling: the worker stops at its next check (at most 10 s).", icon=":material/stop:")
        results = runner.store.results(run_id)
        if results and results.get("variants"):
            frame = results_frame(results)
            results_table_ui(frame, batch_sizes_of(results), key=f"progress_table.{run_id}.{len(frame)}")

    live()


def _final_status_ui(status, record) -> None:
    results = services.run_results(record.id) or {}
    duration = results.get("duration_s")
    took = f" in {duration:.1f} s" if duration else ""
    if status.state == "completed":
        st.success(f"Run completed{took}.", icon=":material/check_circle:")
    elif status.state == "cancelled":
        st.warning(f"Run cancelled{took}: {status.error or 'stopped by the user'}. Finished variants are kept.",
                   icon=":material/stop_circle:")
    elif status.state == "interrupted":
        st.warning(f"Run interrupted: {status.error}. Finished variants are kept.", icon=":material/warning:")
    else:
        st.error(f"Run failed: {status.error}", icon=":material/error:")
    st.page_link("pages/compare.py", label="Open in Compare", icon=":material/scatter_plot:")


st.title("Optimize")
model = st.session_state.get(MODEL_KEY)
data = st.session_state.get(DATA_KEY) or NO_DATA
message = st.session_state.pop(MESSAGE_KEY, None)

if model is None:
    st.info("Pick a model first: the forms adapt to what the model can do.", icon=":material/deployed_code:")
    st.page_link("pages/model.py", label="Choose a model", icon=":material/arrow_forward:")
else:
    st.caption(f"Optimizing **{model.label}** with data **{data.label if data.spec else 'synthetic inputs'}**.")
    if RECIPE_KEY not in st.session_state:
        st.session_state[PRESET_WIDGET_KEY] = DEFAULT_PRESET
        _apply_preset()
    st.pills("Preset", list(PRESETS), key=PRESET_WIDGET_KEY, on_change=_apply_preset,
             help="A starting recipe for a goal, fitted to this model; edit anything below.")
    preset = st.session_state.get(PRESET_KEY)
    if preset:
        st.caption(PRESETS[preset[0]].description + (f" · left out: {'; '.join(preset[1])}" if preset[1] else ""))
    if message:
        kind, text = message
        {"error": st.error, "info": st.info}.get(kind, st.success)(text)

    recipe: Recipe = st.session_state[RECIPE_KEY]
    form_tab, yaml_tab = st.tabs(["Form", "YAML"])
    with form_tab:
        edited, errors = recipe_form_ui(recipe, model)
        if not errors:
            st.session_state[RECIPE_KEY] = edited
            recipe = edited
        for error in errors:
            st.error(error, icon=":material/error:")
    with yaml_tab:
        yaml_ui(recipe, model, data)

    st.divider()
    launcher = services.launcher()
    owner = services.owner_id()
    active_mine = launcher.active_run_of(owner)
    count = len(recipe.variants)
    c1, c2 = st.columns([1, 3], vertical_alignment="center")
    clicked = c1.button(f"Run {count} variant{'s' if count != 1 else ''}", type="primary", icon=":material/play_arrow:",
                        disabled=bool(active_mine) or bool(errors) or count == 0, key="run_button", width="stretch")
    c2.caption("Runs in a worker process: this page stays responsive and you can switch pages. "
               + ("A run of yours is in progress; cancel it or wait to start another." if active_mine else
                  "The baseline is measured first, in the same run, so every ratio is a same-run ratio."))
    if clicked:
        try:
            launch = launcher.launch(owner, recipe, model, data)
        except FeatherweightError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            services.open_run(launch.run_id)
            if launch.message:
                st.session_state[MESSAGE_KEY] = ("info", launch.message)
            st.rerun()  # redraw everything (sidebar, disabled Run button) with the job in place

run_id = st.session_state.get(RUN_KEY)
if run_id:
    st.subheader("Run")
    progress_ui(run_id)
