"""The tiny-lm sample: a few-million-parameter Llama decoder trained here on a procedurally generated corpus.

The corpus is made by a small stochastic grammar (agreement, arithmetic, copying names, counting), so the true
probability of every token of a held-out text is known exactly: each token reveals the generator's uniform
choices at that point, and ``-log p`` is the sum of their ``log(choices)``. The perplexity of the generator itself
on the held-out text, `heldout_floor()`, is the floor no model can beat; the trained model's perplexity sits a
little above it, and a quantized variant's distance from the fp32 one means something.

The checkpoint ships as a Hugging Face folder (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``) in ``sample_models/weights/tiny-lm/``, so it goes through exactly the path an uploaded
checkpoint takes. ``python -m sample_models.train tiny-lm`` rebuilds it deterministically: a rebuild (checked
2026-12-01) gives every tensor bit for bit; the file's bytes can differ only in the order safetensors writes the
metadata keys of its header.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import time

import numpy as np

from sample_models import WEIGHTS_DIR, SampleDataset, SampleModel, register_dataset, register_model

NAME = "tiny-lm"
DATASET = "tiny-lm-text"
EXTRA = "lm"
CHECKPOINT_DIR = WEIGHTS_DIR / NAME

# --------------------------------------------------------------------------------------------------------------
# The grammar

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
ADJECTIVES = ("red", "small", "old", "quiet", "happy", "green", "tall", "lazy")
NOUNS = (("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("fox", "foxes"), ("horse", "horses"),
         ("child", "children"), ("farmer", "farmers"), ("teacher", "teachers"), ("robot", "robots"),
         ("mouse", "mice"), ("sheep", "sheep_s"), ("baker", "bakers"))
VERBS = (("sees", "see"), ("likes", "like"), ("follows", "follow"), ("helps", "help"), ("finds", "find"),
         ("watches", "watch"), ("calls", "call"), ("feeds", "feed"))
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
FUNCTION_WORDS = ("the", "a", "plus", "is", "count", "from", ":", ".", "gave", "and", "thanked")
SPECIAL = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SENTENCE_KINDS = ("agreement", "arithmetic", "copy", "counting")
COUNT_STARTS = 16  # "count from N : N+1 N+2 N+3 ." with N in 0..15


def vocabulary() -> list[str]:
    """Every token, specials first (ids 0..3), in a fixed order."""
    words = list(SPECIAL) + list(FUNCTION_WORDS) + list(NUMBERS) + list(ADJECTIVES)
    words += [form for pair in NOUNS for form in pair] + [form for pair in VERBS for form in pair] + list(NAMES)
    assert len(words) == len(set(words)), "the vocabulary has a duplicate word"
    return words


def _sentence(rng: np.random.Generator) -> tuple[list[str], list[float]]:
    """One sentence and, per token, its exact ``-log p`` under this generator (nats)."""
    kind = int(rng.integers(len(SENTENCE_KINDS)))
    pick = math.log(len(SENTENCE_KINDS))  # the kind is revealed by the first token
    if kind == 0:  # the ADJ NOUN VERB the NOUN .   (the verb agrees with the subject's number)
        adjective = ADJECTIVES[rng.integers(len(ADJECTIVES))]
        noun, plural = NOUNS[rng.integers(len(NOUNS))], int(rng.integers(2))
        verb = VERBS[rng.integers(len(VERBS))][plural]
        obj, obj_plural = NOUNS[rng.integers(len(NOUNS))], int(rng.integers(2))
        words = ["the", adjective, noun[plural], verb, "the", obj[obj_plural], "."]
        costs = [pick, math.log(len(ADJECTIVES)), math.log(2 * len(NOUNS)), math.log(len(VERBS)), 0.0,
                 math.log(2 * len(NOUNS)), 0.0]
    elif kind == 1:  # A plus B is A+B .
        a, b = int(rng.integers(10)), int(rng.integers(10))
        words = [NUMBERS[a], "plus", NUMBERS[b], "is", NUMBERS[a + b], "."]
        costs = [pick + math.log(10), 0.0, math.log(10), 0.0, 0.0, 0.0]
    elif kind == 2:  # X gave Y a NOUN and Y thanked X .   (copying two names from earlier in the sentence)
        x = int(rng.integers(len(NAMES)))
        y = int(rng.integers(len(NAMES) - 1))
        y += y >= x  # any name but X
        noun = NOUNS[rng.integers(len(NOUNS))][0]
        words = [NAMES[x], "gave", NAMES[y], "a", noun, "and", NAMES[y], "thanked", NAMES[x], "."]
        costs = [pick + math.log(len(NAMES)), 0.0, math.log(len(NAMES) - 1), 0.0, math.log(len(NOUNS)), 0.0,
                 0.0, 0.0, 0.0, 0.0]
    else:  # count from N : N+1 N+2 N+3 .
        start = int(rng.integers(COUNT_STARTS))
        words = ["count", "from", NUMBERS[start], ":"] + [NUMBERS[start + i] for i in (1, 2, 3)] + ["."]
        costs = [pick, 0.0, math.log(COUNT_STARTS)] + [0.0] * 5
    return words, costs


def documents(count: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` token windows of `length` ids: ``<s>`` then whole sentences, cut at `length`.

    Returns:
        ``(ids, nll)``: int64 (count, length) token ids and float64 (count, length) exact ``-log p`` of each
        token given its prefix under the generator (0 for the ``<s>`` that every window starts with).
    """
    index = {w: i for i, w in enumerate(vocabulary())}
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, length), dtype=np.int64)
    nll = np.zeros((count, length), dtype=np.float64)
    for row in range(count):
        tokens, costs = [BOS_ID], [0.0]
        while len(tokens) < length:
            words, word_costs = _sentence(rng)
            tokens += [index[w] for w in words]
            costs += word_costs
        ids[row], nll[row] = tokens[:length], costs[:length]
    return ids, nll


# Splits: each from its own seed. 64-token windows hold about 8 sentences.
SEQUENCE_LENGTH = 64
SPLITS = {"train": (6000, 2000), "calib": (64, 2001), "eval": (64, 2002)}


@functools.lru_cache(maxsize=4)
def split(name: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's ``(ids, nll)`` (see `documents`); 'eval' is the held-out text every perplexity is scored on."""
    count, seed = SPLITS[name]
    return documents(count, SEQUENCE_LENGTH, seed)


def heldout_floor() -> float:
    """The generator's own perplexity on the held-out split (tokens after ``<s>``): the floor for any model."""
    _, nll = split("eval")
    return float(math.exp(nll[:, 1:].mean()))


def text_splits() -> dict:
    """``sample:tiny-lm-text`` as the pipeline's split dict: token ids, no labels."""
    return {name: (split(name)[0], None) for name in SPLITS}


def decode(ids) -> str:
    """Token ids back to words (for prompts shown in the report)."""
    words = vocabulary()
    return " ".join(words[int(i)] for i in ids)


# --------------------------------------------------------------------------------------------------------------
# The tokenizer and the model


def build_tokenizer():
    """A word-level tokenizer over `vocabulary()`, in the Hugging Face `tokenizers` format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return tokenizer


# Sizes: 6 layers of width 192 give 2.4M parameters, enough to learn the grammar in a few minutes on one core.
CONFIG = {"hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 6, "num_attention_heads": 6,
          "num_key_value_heads": 2, "max_position_embeddings": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
          "tie_word_embeddings": False}


def model_config():
    """The LlamaConfig of the sample."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(vocabulary()), bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                       **CONFIG)


def build(width: float = 1.0):
    """A freshly initialised LlamaForCausalLM of the sample's shape (width scales hidden and MLP sizes)."""
    import torch
    from transformers import LlamaForCausalLM

    config = model_config()
    if width != 1.0:
        heads = config.num_attention_heads
        config.hidden_size = max(heads, int(round(config.hidden_size * width / heads)) * heads)
        config.intermediate_size = max(16, int(round(config.intermediate_size * width / 16)) * 16)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def extra_installed() -> bool:
    """Whether the ``lm`` extra (onnxruntime-genai, transformers, tokenizers) is importable."""
    return all(importlib.util.find_spec(n) is not None for n in ("onnxruntime_genai", "transformers", "tokenizers"))


def load_model():
    """``sample:tiny-lm`` as a checked checkpoint folder (core.io.decoder.DecoderCheckpoint)."""
    from core.errors import BadInputError
    from core.io.decoder import open_folder

    if not extra_installed():
        raise BadInputError(f"sample:{NAME} needs the '{EXTRA}' extra, which is not installed: "
                            f"pip install -e '.[{EXTRA}]'")
    if not (CHECKPOINT_DIR / "model.safetensors").exists():
        raise BadInputError(f"sample:{NAME} has no trained weights at {CHECKPOINT_DIR}; "
                            f"run: python -m sample_models.train {NAME}")
    return open_folder(CHECKPOINT_DIR, f"sample:{NAME}")


def save_checkpoint(module, folder, metadata: dict | None = None) -> None:
    """Write `module` and the tokenizer as a Hugging Face folder (safetensors, no pickle)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = module.config.to_dict()
    config["architectures"] = ["LlamaForCausalLM"]
    config["torch_dtype"] = "float32"
    for key in ("transformers_version", "_name_or_path", "dtype"):
        config.pop(key, None)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt", **(metadata or {})})
    build_tokenizer().save(str(folder / "tokenizer.json"))
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                        "unk_token": "<unk>", "pad_token": "<pad>", "model_max_length": CONFIG[
                            "max_position_embeddings"], "add_bos_token": False, "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    generation = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")


def perplexity_torch(module, ids: np.ndarray) -> float:
    """Perplexity of a torch causal LM on token windows (tokens after the first of each window)."""
    import torch

    with torch.no_grad():
        logits = module(input_ids=torch.from_numpy(ids)).logits
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                torch.from_numpy(ids[:, 1:]).reshape(-1))
    return float(math.exp(float(nll)))


# Training: AdamW, cosine schedule with warm-up, batch 24 x 64 tokens. 600 steps took 12 min on one thread of a
# shared 2-core machine and brought held-out perplexity to 2.713 against the generator's floor of 2.696.
TRAIN_STEPS = 600
BATCH = 24
LR = 3e-3
WARMUP = 50


def train(steps: int = TRAIN_STEPS, threads: int = 1, folder=None, log=print) -> float:
    """Train the sample deterministically and save the checkpoint; returns held-out perplexity."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    module = build().train()
    ids, _ = split("train")
    inputs = torch.from_numpy(ids)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(module.parameters(), lr=LR, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    started = time.perf_counter()
    order = torch.randperm(len(inputs), generator=generator)
    cursor = 0
    for step in range(steps):
        if cursor + BATCH > len(order):
            order, cursor = torch.randperm(len(inputs), generator=generator), 0
        batch = inputs[order[cursor:cursor + BATCH]]
        cursor += BATCH
        loss = module(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if log and (step % 100 == 0 or step == steps - 1):
            log(f"step {step}: loss {float(loss):.4f} ({time.perf_counter() - started:.0f} s)")
    module.eval()
    heldout = perplexity_torch(module, split("eval")[0])
    floor = heldout_floor()
    save_checkpoint(module, folder or CHECKPOINT_DIR,
                    {"heldout_perplexity": f"{heldout:.4f}", "heldout_floor": f"{floor:.4f}", "steps": str(steps)})
    if log:
        log(f"tiny-lm: held-out perplexity {heldout:.3f} (floor {floor:.3f}), "
            f"{sum(p.numel() for p in module.parameters()):,} params")
    return heldout


register_dataset(SampleDataset(
    DATASET, text_splits,
    "Procedurally generated sentences (agreement, arithmetic, copied names, counting) as 64-token windows; "
    "the generator's own perplexity on the held-out split is the floor", extra=EXTRA,
    perplexity_floor=heldout_floor))
register_model(SampleModel(
    NAME, DATASET, build, (SEQUENCE_LENGTH,),
    "A 2.4M-parameter Llama decoder trained here on a generated corpus: perplexity, greedy agreement and "
    "tokens/s for int4 / int8 weight-only variants built with onnxruntime-genai.",
    extra=EXTRA, load_model=load_model, train=train, probe=extra_installed))
