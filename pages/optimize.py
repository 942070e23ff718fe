"""Optimize page: presets, a form per technique and a sweep builder make a recipe (also editable as YAML); Run
starts a job in a worker process, and its progress, results and Pareto chart appear as each variant finishes."""

from __future__ import annotations

import dataclasses

import streamlit as st

from core.errors import FeatherweightError
from core.jobs.queue import CANCEL_FLAG
from core.spec.presets import (MIN_TIMED_RUNS, PRESETS, SLOW_BENCHMARK_S, benchmark_seconds, fitted_benchmark,
                               is_decoder_card, preset_recipe, presets_for, run_seconds, slow_batch_sizes)
from core.spec.labels import steps_label
from core.spec.recipe import MAX_SWEEP_VARIANTS, BenchmarkConfig, Recipe, Variant, expand_sweep, sweep_variant_count
from core.session import (DATA_KEY, MODEL_KEY, NO_DATA, PRESET_KEY, RECIPE_KEY, RECIPE_RESET_KEY, RECIPE_VERSION_KEY,
                          RUN_KEY, choose_sample_data, choose_sample_model, digest_of, live_elapsed_s, no_data_for)
from core.jobs.store import ACTIVE
from ui import forms, services
from ui.shell import ensure_app_shell
from ui.sidebar import remember_session
from ui.tables import results_table_ui

ensure_app_shell()

DEFAULT_PRESET = "Quick quantization"
PRESET_WIDGET_KEY = "preset_pills"
NEW_VARIANT_NAME_KEY = "new_variant_name"
NEW_VARIANT_TECHNIQUES_KEY = "new_variant_techniques"
MESSAGE_KEY = "optimize_message"  # one-shot message shown after a rerun
SWEEP_KEY = "sweep_builder"  # prefix of the sweep builder's widget keys (the variant forms use r{version}.{i}.*)
# Above this the builder warns (it refuses only above MAX_SWEEP_VARIANTS): every variant is a build and a benchmark,
# seconds each on the digits samples but minutes on shapes-cnn or minilm, and a shared server queues other runs.
LARGE_SWEEP_VARIANTS = 24
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
    _set_recipe(st.session_state[RECIPE_KEY].without_variant(index))


def _add_variant() -> None:
    recipe: Recipe = st.session_state[RECIPE_KEY]
    techniques = st.session_state.get(NEW_VARIANT_TECHNIQUES_KEY) or []
    name = (st.session_state.get(NEW_VARIANT_NAME_KEY) or "").strip()
    if not techniques:
        st.session_state[MESSAGE_KEY] = ("error", "Pick at least one technique for the new variant.")
        return
    name = name or "-".join(t for t in forms.TECHNIQUE_ORDER if t in techniques)
    try:
        model = st.session_state.get(MODEL_KEY)
        variant = Variant(name, forms.new_variant_steps(techniques, model.card if model else None))
        _set_recipe(recipe.add_variants(variant))
    except FeatherweightError as exc:
        st.session_state[MESSAGE_KEY] = ("error", str(exc))
        return
    st.session_state[NEW_VARIANT_NAME_KEY] = ""


def _variant_summary(variant: Variant, key: str | None = None, decoder: bool = False) -> str:
    """The variant's steps in a few words; with its form's `key`, as its widgets hold them now (the expander's
    title is drawn before them, and would otherwise show the previous run's values)."""
    steps = variant.steps if key is None else [
        forms.current_step(step, f"{key}.{i}.{step.technique}") for i, step in enumerate(variant.steps)]
    return steps_label(steps, " → ", decoder=decoder) if steps else "no steps"


def recipe_form_ui(recipe: Recipe, model) -> tuple[Recipe, list[str]]:
    """Every variant's options, the boxes that add a variant or a sweep, and the benchmark settings; returns the
    edited recipe and any errors."""
    version = st.session_state.get(RECIPE_VERSION_KEY, 0)
    node_names = [layer["name"] for layer in model.card.get("layers") or [] if not layer.get("summary")]
    variants, errors = [], []
    if not recipe.variants:
        st.info("No variants yet: choose a preset above or add one below.", icon=":material/add_circle:")
    for i, variant in enumerate(recipe.variants):
        key = f"r{version}.{i}"
        shown_name = st.session_state.get(f"{key}.name", variant.name)
        # Keyed expanders keep their open / closed state when a message above them comes or goes.
        doomed = forms.doomed_reason(variant, model.card)
        summary = _variant_summary(variant, key, decoder=is_decoder_card(model.card))
        with st.expander(f"**{shown_name}** · {summary}" + (" · cannot run" if doomed else ""),
                         expanded=len(recipe.variants) <= 2 or bool(doomed), key=f"{key}.open",
                         icon=":material/warning:" if doomed else None):
            edited, error = forms.variant_ui(variant, key, node_names, model.card.get("format") == "torch+onnx",
                                             decoder=is_decoder_card(model.card))
            if doomed:
                st.warning(f"This variant cannot run on {model.label}: {doomed}.", icon=":material/warning:")
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
        c2.multiselect("Techniques (run in this order: prune, distill, quantize)", forms.techniques_for(model.card),
                       key=NEW_VARIANT_TECHNIQUES_KEY, format_func=forms.TECHNIQUE_TITLES.get,
                       help="A language model takes one quantize step (int4 or int8 weight-only)."
                       if is_decoder_card(model.card) else None)
        c3.button("Add", on_click=_add_variant, icon=":material/add:", width="stretch")
    room = max(0, services.launcher().runner.max_variants - len(recipe.variants))
    swept = sweep_builder_ui(node_names, room, forms.techniques_for(model.card))

    with st.expander("Benchmark settings", expanded=False, key=f"r{version}.bench.open"):
        if is_decoder_card(model.card):
            st.caption("A language model is timed at batch 1 (its decode tokens/s), every variant interleaved in "
                       "rounds: the time cap × the number of models bounds the timing (it grows when one round of "
                       "every model needs more); batch sizes, warm-up and timed runs do not apply.")
        sequence = any(isinstance(d, str) for t in model.card.get("inputs", []) for d in t["shape"][1:])
        bench = forms.benchmark_ui(recipe.benchmark, f"r{version}.bench", sequence_inputs=sequence)
        seed = st.number_input("Seed", 0, 2**32 - 1, recipe.seed, key=f"r{version}.seed",
                               help="Seeds data splits, fine-tuning and distillation, so a run reproduces.")
    try:
        edited = recipe.replace(variants=tuple(variants), benchmark=bench, seed=int(seed))
    except FeatherweightError as exc:
        errors.append(str(exc))
        edited = recipe
    if swept:
        _add_swept(edited if not errors else recipe, swept)
    return edited, errors


def sweep_builder_ui(node_names: list[str], room: int = MAX_SWEEP_VARIANTS,
                     techniques: list[str] | None = None) -> tuple[Variant, ...]:
    """Several values per option, one variant per combination; returns the variants when "Add sweep" is pressed.

    `room`: how many more variants one run of this server takes (its FEATHERWEIGHT_MAX_VARIANTS less the recipe's
    variants), so that a sweep too big to run is refused here, not after Run. `techniques`: those the model takes
    (a language model: quantize only)."""
    variants: tuple[Variant, ...] = ()
    # A key gives the expander an identity of its own, so it stays open when a one-shot message above it comes
    # or goes (without one, a shifted position makes it a new, collapsed expander).
    with st.expander("**Add a sweep** · several values per option, one variant per combination",
                     key=f"{SWEEP_KEY}.open"):
        sweep, errors = forms.sweep_ui(SWEEP_KEY, node_names, techniques)
        for error in errors:
            st.error(error, icon=":material/error:")
        if sweep is None:
            st.caption("Pick the techniques to sweep, then give several values to the options to vary: every "
                       "combination becomes a variant, named after the values it takes.")
        elif not errors:
            count = sweep_variant_count(sweep)
            if count > MAX_SWEEP_VARIANTS:
                st.error(f"This sweep makes {count} variants; the limit is {MAX_SWEEP_VARIANTS}. Give fewer values.",
                         icon=":material/error:")
            elif count > room:
                st.error(f"This sweep makes {count} variants, but one run on this server takes at most "
                         f"{services.launcher().runner.max_variants} and the recipe has room for {room} more. "
                         "Give fewer values, or remove variants.", icon=":material/error:")
            else:
                try:
                    variants = expand_sweep(sweep)
                except FeatherweightError as exc:
                    st.error(str(exc), icon=":material/error:")
        if variants:
            count = len(variants)
            text = f"This sweep makes **{count} variant{'s' if count != 1 else ''}**, named like `{variants[0].name}`."
            same = count - forms.distinct_variant_count(variants)
            if same:
                text += (f" {same} of them {'differs' if same == 1 else 'differ'} from another only in options "
                         "that do not apply to them, so they build the same model.")
            if count > LARGE_SWEEP_VARIANTS:
                text += " Each variant is built and benchmarked: a run this large takes a while."
            (st.warning if same or count > LARGE_SWEEP_VARIANTS else st.caption)(text)
        clicked = st.button("Add sweep", key=f"{SWEEP_KEY}.add", icon=":material/add:", disabled=not variants)
    return variants if clicked else ()


def _add_swept(recipe: Recipe, swept: tuple[Variant, ...]) -> None:
    """Append a sweep's variants (renamed where a name is taken) and redraw the page with them as forms."""
    _set_recipe(recipe.add_variants(*swept))
    st.session_state[MESSAGE_KEY] = ("success", f"Added {len(swept)} variant{'s' if len(swept) != 1 else ''} "
                                                f"from the sweep.")
    st.rerun()


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
            st.session_state.pop(RECIPE_RESET_KEY, None)  # this recipe is the one the user chose for that model
            st.session_state.pop(PRESET_KEY, None)  # its "left out" note described the recipe this one replaced
            st.session_state[MESSAGE_KEY] = message or ("success", "Recipe applied.")
            st.rerun()
    c2.download_button("Download recipe", data=text, file_name="recipe.yaml", mime="application/x-yaml",
                       icon=":material/download:", on_click="ignore")


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
    """The run's live state (which variant and step, elapsed time, Cancel), then the variants finished so far."""
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
    results_at_render = services.results_mtime(run_id)

    # Every poll of every session is a script run on a shared server: the fragment only reads the status and stats
    # results.json; the chart and the table are drawn outside it, once per finished variant.
    @st.fragment(run_every=PROGRESS_POLL_S.get(state_at_render))
    def live() -> None:
        status = runner.status(run_id)
        if status.state != state_at_render:
            st.rerun()  # started or finished: redraw the page once, with the poll rate of the new state
        if status.state in ACTIVE and services.results_mtime(run_id) != results_at_render:
            st.rerun()  # a variant finished: redraw the page once, with it on the chart and in the table
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
            elif progress.get("variant") == "timing":  # the run's timing phase: every variant together
                label = (f"Timing the baseline and every variant together — {progress.get('message')} · "
                         f"{live_elapsed_s(progress):.0f} s elapsed")
            else:
                label = (f"Variant {index} of {count}: **{progress.get('variant') or 'finishing'}** — "
                         f"{progress.get('message')} · {live_elapsed_s(progress):.0f} s elapsed")
            if cancelling:
                label = f"Stopping… {label}"
            st.progress(min(1.0, float(progress.get("fraction") or 0.0)), text=label)
        else:
            _final_status_ui(status, record)
        if active and mine:
            # A callback, not `if st.button(...)`: it runs before the fragment does, so a click is never lost to
            # the st.rerun() above (results.json changes every batch size during the timing phase).
            st.button("Cancel run", icon=":material/stop_circle:", key=f"cancel.{run_id}",
                      disabled=status.state not in ACTIVE, on_click=cancel_run)

    def cancel_run() -> None:
        runner.cancel(run_id, services.owner_id())
        st.toast("Cancelling: the worker stops at its next check (at most 10 s).", icon=":material/stop:")

    live()
    finished_variants_ui(run_id, active)


def finished_variants_ui(run_id: str, active: bool) -> None:
    """The Pareto chart and the table of the variants finished so far (cached on results.json's mtime)."""
    from core.views import charts as viz
    from core.results.compare import chart_caption, is_decoder_run, ok_rows
    from core.results.table import batch_sizes_of

    results = services.run_results(run_id)
    frame = services.run_frame(run_id)
    if not results or frame is None or frame.empty:
        return
    sizes = batch_sizes_of(results)
    if sizes and not ok_rows(frame).empty:
        batch_size = sizes[-1]
        st.plotly_chart(viz.pareto_figure(frame, batch_size, height=420), theme=None,
                        key=f"progress_pareto.{run_id}.{len(frame)}.{batch_size}", config={"displaylogo": False})
        st.caption(chart_caption(results) if is_decoder_run(results) else
                   f"Size vs p50 latency at batch {batch_size}; lower-left is better; error bars: the speed-up's "
                   "95% interval.")
    elif not ok_rows(frame).empty:
        st.caption("Each variant's size and quality appear below as it finishes; the chart and the speed-ups come "
                   "when all are built, timed together in one phase (so every speed-up is a same-round ratio).")
    results_table_ui(frame, sizes, key=f"progress_table.{run_id}.{len(frame)}.{len(sizes)}")


def _use_lighter_batches(sizes: tuple) -> None:
    _set_recipe(st.session_state[RECIPE_KEY].with_batch_sizes(sizes))


def slow_benchmark_ui(recipe: Recipe, model) -> None:
    """Before Run: warn when the benchmark alone will take minutes on this CPU (a batch of 256 large images), and
    offer the lighter batch sizes."""
    seconds = benchmark_seconds(model.card, recipe.benchmark, len(recipe.variants))
    slow = slow_batch_sizes(model.card, recipe.benchmark)
    if seconds is None or seconds < SLOW_BENCHMARK_S or not slow:
        return
    per_run = run_seconds(model.card, max(slow), recipe.benchmark.threads) or 0.0
    lighter = tuple(b for b in recipe.benchmark.batch_sizes if b not in slow) or (1,)
    light = fitted_benchmark(model.card, dataclasses.replace(recipe.benchmark, batch_sizes=BenchmarkConfig().batch_sizes))
    lighter = tuple(sorted(set(lighter) | set(light[0].batch_sizes)))
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.warning(f"The benchmark alone may take about **{seconds / 60:.0f} min** on this CPU: one run at batch "
               f"{max(slow)} takes about {per_run:.0f} s here, and each batch size is warmed up "
               f"{recipe.benchmark.warmup}× and timed at least {MIN_TIMED_RUNS}×, for the baseline and every variant.",
               icon=":material/hourglass_top:")
    c2.button(f"Use batch sizes {', '.join(map(str, lighter))}", on_click=_use_lighter_batches, args=(lighter,),
              key="lighter_batches", width="stretch")


def kept_text(results: dict) -> str:
    """What a stopped run kept, in words: the variants it finished, or that nothing finished."""
    variants = results.get("variants") or []
    done = [v["name"] for v in variants if v.get("status") == "ok" and v.get("name") != "baseline"]
    if not any(v.get("status") == "ok" for v in variants):
        return ("Nothing was kept: it stopped while the baseline was still being measured, so no variant was "
                "built. Try smaller batch sizes or fewer timed runs (Benchmark settings).")
    if not done:
        return "Only the baseline was measured; no variant finished."
    kept = f"Kept: the baseline and {len(done)} finished variant{'s' if len(done) != 1 else ''} ({', '.join(done)})."
    batches = (results.get("timing") or {}).get("batches") or {}
    timed = [bs for bs, entry in batches.items() if entry.get("rounds") and not entry.get("stopped")]
    if any(entry.get("stopped") for entry in batches.values()) or not timed:
        kept += (f" The timing stopped early: speeds are measured at batch {', '.join(timed)} only." if timed
                 else " It stopped before any batch size was timed: sizes and quality only.")
    return kept


def _final_status_ui(status, record) -> None:
    results = services.run_results(record.id) or {}
    duration = results.get("duration_s")  # the worker's own measuring time
    waited = record.updated_at - record.created_at  # from Run to the end: what the user waited
    took = f" in {duration:.1f} s" if duration else ""
    if duration and waited > duration + 1.0:  # it said 17.1 s for a run the user waited 25.7 s for
        took = (f" in {waited:.1f} s ({duration:.1f} s measuring; the rest in the queue and starting the "
                "worker)")
    if status.state == "completed":
        st.success(f"Run completed{took}.", icon=":material/check_circle:")
    elif status.state == "cancelled":
        st.warning(f"Run cancelled{took}: {status.error or 'stopped by the user'}. {kept_text(results)}",
                   icon=":material/stop_circle:")
    elif status.state == "interrupted":
        st.warning(f"Run interrupted: {status.error}. {kept_text(results)}", icon=":material/warning:")
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
    data_label = data.label if data.spec else (no_data_for(model.card).label if is_decoder_card(model.card)
                                               else "synthetic inputs")
    st.caption(f"Optimizing **{model.label}** with data **{data_label}**.")
    fitting = presets_for(model.card)
    if RECIPE_KEY not in st.session_state:
        st.session_state[PRESET_WIDGET_KEY] = DEFAULT_PRESET
        _apply_preset()
    reset_from = st.session_state.pop(RECIPE_RESET_KEY, None)
    if reset_from:
        st.info(f"New model, new recipe: the one you had was made for **{reset_from}** (its variants, options and "
                f"excluded nodes fit that model), so the form starts again from a preset fitted to {model.label}.",
                icon=":material/restart_alt:")
    if st.session_state.get(PRESET_WIDGET_KEY) not in fitting + [None]:
        st.session_state[PRESET_WIDGET_KEY] = None  # a preset of the previous model that does not apply here
    st.pills("Preset", fitting, key=PRESET_WIDGET_KEY, on_change=_apply_preset,
             help="A starting recipe for a goal, fitted to this model; edit anything below."
             + (" The other presets (static int8, pruning, distillation) do not apply to a language model."
                if len(fitting) < len(PRESETS) else ""))
    preset = st.session_state.get(PRESET_KEY)
    if preset and preset[0] in PRESETS:
        st.caption(PRESETS[preset[0]].describe(model.card)
                   + (f" · left out: {'; '.join(preset[1])}" if preset[1] else ""))
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
    runnable = sum(forms.doomed_reason(v, model.card) is None for v in recipe.variants)
    too_many = count > launcher.runner.max_variants
    if too_many:
        st.error(f"The recipe has {count} variants; one run on this server takes at most "
                 f"{launcher.runner.max_variants}. Remove some, or split the sweep into several runs.",
                 icon=":material/error:")
    slow_benchmark_ui(recipe, model)
    # A variant this model cannot run would fail in the worker: say so here, offer to drop it, and hold Run.
    doomed = [i for i, v in enumerate(recipe.variants) if forms.doomed_reason(v, model.card)]
    if doomed:
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.warning(f"{len(doomed)} variant{'s' if len(doomed) != 1 else ''} cannot run on {model.label} ("
                   + ", ".join(recipe.variants[i].name for i in doomed) + "): see above, change "
                   + ("them" if len(doomed) != 1 else "it") + " or remove " + ("them" if len(doomed) != 1 else "it")
                   + ".", icon=":material/warning:")
        if c2.button("Remove them" if len(doomed) != 1 else "Remove it", key="remove_doomed", width="stretch"):
            for index in reversed(doomed):
                recipe = recipe.without_variant(index)
            _set_recipe(recipe)
            st.rerun()
    c1, c2 = st.columns([1, 3], vertical_alignment="center")
    clicked = c1.button(f"Run {count} variant{'s' if count != 1 else ''}", type="primary", icon=":material/play_arrow:",
                        disabled=bool(active_mine) or bool(errors) or count == 0 or too_many or bool(doomed),
                        key="run_button", width="stretch",
                        help="Each variant, and the baseline measured first, is built and timed.")
    c2.caption(("None of these variants can run on this model (each says why above): choose a preset or change "
                "them. " if count and runnable == 0 else "")
               + "Runs in a worker process: this page stays responsive and you can switch pages. "
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

remember_session()  # the recipe as edited in this run survives a reload

run_id = st.session_state.get(RUN_KEY)
if run_id:
    st.subheader("Run")
    progress_ui(run_id)
