"""Model page: pick a sample or upload a model (and optionally data), then read its card."""

from __future__ import annotations

import streamlit as st

from core.format import MISSING
from core.session import (DATA_KEY, DATA_UPLOAD_TYPES, MODEL_KEY, MODEL_UPLOAD_TYPES, NO_DATA, TEXT_UPLOAD_TYPES,
                          UPLOAD_SEEN_KEY, Outcome, apply_data_upload, apply_model_upload, choose_sample_data,
                          choose_sample_model)
from core.results.table import split_sizes_text
from ui import services
from ui.forms import escape_markdown
from ui.shell import ensure_app_shell
from ui.sidebar import remember_session

ensure_app_shell()

SOURCE_KEY = "model_source"
MODEL_UPLOADER_KEY = "model_uploader"
DATA_UPLOADER_KEY = "data_uploader"
SAMPLE_MESSAGE_KEY = "model_sample_message"
SOURCES = ["Sample", "Upload"]
DATA_SOURCES = ["Sample dataset", "Upload NPZ / CSV", "None"]


def handle_upload(uploader_key: str, uploaded, apply) -> Outcome | None:
    """Run `apply(state, name, bytes)` once per uploaded file (reruns reuse the outcome); None without a file."""
    if uploaded is None:
        return None
    seen = st.session_state.setdefault(UPLOAD_SEEN_KEY, {})
    previous = seen.get(uploader_key)
    if previous is not None and previous[0] == uploaded.file_id:
        return previous[1]
    with st.spinner(f"Checking {uploaded.name}…"):
        outcome = apply(st.session_state, uploaded.name, uploaded.getvalue())
    seen[uploader_key] = (uploaded.file_id, outcome)
    if not outcome.error:
        remember_session()
        st.rerun()  # the sidebar is drawn before this page: redraw it with the new model / data (same outcome)
    return outcome


def show_outcome(outcome: Outcome | None, success: str | None = None) -> None:
    if outcome is None:
        return
    # Messages name files and Python objects (`__main__.MyCNN`): shown as written, not as markdown.
    if outcome.error:
        st.error(escape_markdown(outcome.error), icon=":material/error:")
    elif success:
        st.success(escape_markdown(success), icon=":material/check_circle:")
    if outcome.notice:
        st.warning(escape_markdown(outcome.notice), icon=":material/info:")


def upload_ui(label: str, types, key: str, apply, help_text: str) -> None:
    """A file uploader whose file goes through `apply` once; its error, notice or success shown below it."""
    uploaded = st.file_uploader(label, type=list(types), key=key, help=help_text)
    outcome = handle_upload(key, uploaded, apply)
    show_outcome(outcome, f"Using {uploaded.name}" if uploaded is not None and outcome and not outcome.error
                 else None)


def sample_gallery_ui(current_spec: str | None) -> str | None:
    """One card per sample model with a 'Use' button; returns the sample clicked, if any."""
    from sample_models import SAMPLE_MODELS, available

    clicked = None
    columns = st.columns(min(3, max(1, len(SAMPLE_MODELS))))
    for i, sample in enumerate(SAMPLE_MODELS.values()):
        ok, note = available(sample)
        # The button under the name: buttons line up across cards, and a long description (shapes-mobile's)
        # only makes its card taller (in a fixed-height card it pushed the button out, clipped).
        with columns[i % len(columns)].container(border=True):
            st.markdown(f"**{sample.name}**")
            in_use = current_spec == f"sample:{sample.name}"
            if st.button(f"Use {sample.name}" if not in_use else f"{sample.name} in use", key=f"use_{sample.name}",
                         type="primary" if not in_use else "secondary", disabled=not ok or in_use,
                         help=note, width="stretch"):
                clicked = sample.name
            st.caption(sample.description)
            st.caption(f"data: sample:{sample.dataset}")
    return clicked


def text_ui(model) -> None:
    """A language model's held-out text: its sample's own, the user's .txt / .jsonl, or the bundled sentences."""
    from core.io.text import summary_text, text_datasets

    current = st.session_state.get(DATA_KEY) or NO_DATA
    samples = text_datasets()
    choices = samples + ["Upload .txt / .jsonl", "Bundled sentences"]
    default = (current.spec if current.spec in samples else "Upload .txt / .jsonl" if current.is_upload
               else "Bundled sentences" if model.is_upload or not samples else samples[0])
    source = st.segmented_control("Held-out text", choices, default=default, key=f"text_source.{model.spec}",
                                  help="Perplexity, KL and next-token agreement are scored on this text, tokenized "
                                       "with the model's own tokenizer.") or default
    if source in samples and current.spec != source:
        outcome = choose_sample_data(st.session_state, source.split(":", 1)[1], data_summary=services.data_summary)
        if outcome.error:
            show_outcome(outcome)
        else:
            remember_session()
            st.rerun()
    elif source == "Upload .txt / .jsonl":
        upload_ui("Upload text", TEXT_UPLOAD_TYPES, DATA_UPLOADER_KEY, apply_data_upload,
                  "Plain UTF-8 text (.txt), or JSON Lines with a \"text\" field per line (.jsonl); up to 16 MiB, "
                  "checked and tokenized in a worker. The first 24 windows of 128 tokens are scored.")
    elif source == "Bundled sentences" and current.spec is not None:
        choose_sample_data(st.session_state, None)
        remember_session()
        st.rerun()
    data = st.session_state.get(DATA_KEY) or NO_DATA
    if data.summary:
        st.caption(escape_markdown(summary_text(data.summary)))
    else:
        st.caption("The bundled everyday sentences (sample_models/data/sentences.json), tokenized with this model's "
                   "tokenizer; no perplexity floor is known for them.")


def data_ui(model) -> None:
    """Choose the data the run measures with; the current choice stays until a new one is valid."""
    from sample_models import SAMPLE_DATASETS

    if model.card.get("task") == "text-generation":
        text_ui(model)
        return
    current = st.session_state.get(DATA_KEY) or NO_DATA
    default = ("Sample dataset" if current.spec and current.spec.startswith("sample:")
               else "Upload NPZ / CSV" if current.is_upload else "None")
    source = st.segmented_control("Data source", DATA_SOURCES, default=default, key=f"data_source.{model.spec}",
                                  help="Labelled data gives accuracy; without data, inputs are synthetic and only "
                                       "fidelity to the baseline is measured.") or default
    if source == "Sample dataset":
        names = list(SAMPLE_DATASETS)
        current_name = current.spec.split(":", 1)[1] if current.spec and current.spec.startswith("sample:") else None
        pick = st.selectbox("Sample dataset", names, index=names.index(current_name) if current_name in names else 0,
                            key=f"data_sample.{model.spec}",
                            format_func=lambda n: f"{n} — {SAMPLE_DATASETS[n].description}")
        if pick and current.spec != f"sample:{pick}":
            with st.spinner(f"Loading sample:{pick}…"):
                outcome = choose_sample_data(st.session_state, pick, data_summary=services.data_summary)
            if outcome.error:
                show_outcome(outcome)
            else:
                remember_session()
                st.rerun()  # redraw the sidebar with the new data
    elif source == "Upload NPZ / CSV":
        upload_ui("Upload data", [t for t in DATA_UPLOAD_TYPES if t not in TEXT_UPLOAD_TYPES], DATA_UPLOADER_KEY,
                  apply_data_upload,
                  "NPZ: 'x' (or one array per input name) and optional integer labels 'y', or named splits "
                  "'test' and any of 'calib', 'validation', 'train' (labels 'y_test', ...; a missing validation "
                  "split is a third of test). A model that no step trains gets no train split: its data is "
                  "calibration, validation and test. CSV: numeric feature columns and an optional 'label' column.")
    elif current.spec is not None:
        choose_sample_data(st.session_state, None)
        remember_session()
        st.rerun()
    data = st.session_state.get(DATA_KEY) or NO_DATA
    summary = data.summary
    if summary:
        inputs = ", ".join(f"{k} {tuple(v)}" for k, v in (summary.get("inputs") or {}).items())
        classes = f", {summary['classes']} classes" if summary.get("classes") else ""
        sizes = split_sizes_text(summary.get("splits")) or (
            f"{summary['train']:,} train / {summary['calib']:,} calibration / {summary.get('validation', 0):,} "
            f"validation / {summary['eval']:,} test samples")
        st.caption(f"**{data.label}** · {escape_markdown(sizes)} · "
                   f"labels: {'yes' if summary['labels'] else 'no'}{classes} · "
                   f"per-sample shape: {escape_markdown(inputs)}")
        for warning in summary.get("warnings") or []:
            st.warning(warning, icon=":material/warning:")
    else:
        st.caption("Synthetic inputs drawn from the model's input spec: the run reports fidelity to the baseline "
                   "(agreement, cosine), not accuracy.")


def card_ui(model) -> None:
    """The model card: headline numbers, inputs/outputs, op types and the per-layer table."""
    import pandas as pd

    from core import format as fmt
    from core.views import charts as viz

    card = model.card
    cols = st.columns(5)
    cols[0].metric("Parameters", fmt.format_count(card.get("params")), help=f"{card.get('params', 0):,} weights")
    cols[1].metric("File size", fmt.format_bytes(card.get("size_bytes")),
                   help=f"{card.get('size_bytes', 0):,} bytes as ONNX")
    cols[2].metric("Nodes", f"{card.get('nodes', 0):,}")
    cols[3].metric("Format", card.get("format", "–"), help=f"opset {card.get('opset')}, IR {card.get('ir_version')}")
    cols[4].metric("Task", card.get("task", "–"))

    left, right = st.columns(2)
    with left:
        st.markdown("###### Inputs and outputs")
        rows = [{"kind": kind, "name": t["name"], "shape": " × ".join(str(d) for d in t["shape"]), "dtype": t["dtype"]}
                for kind, key in (("input", "inputs"), ("output", "outputs")) for t in card.get(key, [])]
        st.dataframe(pd.DataFrame(rows), hide_index=True, placeholder=MISSING, width="stretch")
        st.markdown("###### What applies")
        for technique, text in (card.get("capabilities") or {}).items():
            icon = ":material/check_circle:" if text.startswith("yes") else ":material/info:"
            st.markdown(f"{icon} **{technique}**: {text}")
    with right:
        st.markdown("###### Op types")
        st.plotly_chart(viz.op_types_figure(card, height=260), theme=None, key="op_types_chart",
                        config={"displayModeBar": False})

    st.markdown("###### Layers with weights")
    layers = pd.DataFrame(card.get("layers") or [], columns=["name", "type", "params", "bytes", "share"])
    if layers.empty:
        st.info("No node of this graph stores weights.")
        return
    if (card.get("layers_total") or 0) > len(layers):
        st.caption(f"The {len(layers) - 1:,} layers with the most weight bytes of {card['layers_total']:,}; the last "
                   "row sums the rest.")
    left, right = st.columns([3, 2])
    with left:
        st.dataframe(
            layers, hide_index=True, placeholder=MISSING, width="stretch", height=min(420, 38 + 35 * len(layers)),
            column_config={
                "name": st.column_config.TextColumn("Layer"), "type": st.column_config.TextColumn("Op type"),
                "params": st.column_config.NumberColumn("Params", format="localized"),
                "bytes": st.column_config.NumberColumn("Weight bytes", format="bytes"),
                "share": st.column_config.ProgressColumn("Share of size", format="percent", min_value=0.0,
                                                         max_value=1.0)})
    with right:
        st.plotly_chart(viz.layer_share_figure(card, height=260), theme=None, key="layer_share_chart",
                        config={"displayModeBar": False})


st.title("Model")
st.caption("Pick a sample or upload your own model, optionally with data; then head to **Optimize**.")

model = st.session_state.get(MODEL_KEY)
source = st.segmented_control("Source", SOURCES, default="Upload" if model is not None and model.is_upload
                              else "Sample", key=SOURCE_KEY) or "Sample"
if source == "Sample":
    picked = sample_gallery_ui(model.spec if model else None)
    if picked:
        with st.spinner(f"Loading sample:{picked}…"):
            outcome = choose_sample_model(st.session_state, picked, card=services.sample_card(picked),
                                          data_summary=services.data_summary)
        st.session_state[SAMPLE_MESSAGE_KEY] = outcome
        st.rerun()
    show_outcome(st.session_state.pop(SAMPLE_MESSAGE_KEY, None))
else:
    upload_ui("Upload a model", MODEL_UPLOAD_TYPES, MODEL_UPLOADER_KEY, apply_model_upload,
              "ONNX (single file, no external data), PyTorch weights (.pt / .pth / .safetensors state dicts) of a "
              "bundled architecture, or a language model: a zipped Hugging Face folder (config.json, *.safetensors, "
              "tokenizer.json) of a Llama, Mistral, Qwen2/3, Phi / Phi-3, Gemma, SmolLM, Granite or OLMo. Pickled "
              "modules, TorchScript and checkpoint code are refused.")

model = st.session_state.get(MODEL_KEY)
if model is None:
    st.info("No model yet. Choose a sample above — **digits-cnn** is a good first one — or upload your own.",
            icon=":material/arrow_upward:")
    st.stop()

st.divider()
st.subheader("Data")
data_ui(model)

st.divider()
st.subheader(f"Model card · {escape_markdown(model.label)}")
card_ui(model)
st.page_link("pages/optimize.py", label="Optimize this model", icon=":material/arrow_forward:")
remember_session()
