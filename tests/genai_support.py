"""Running an exported decoder folder the way a user of the export would: onnxruntime-genai on the CPU, greedy."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def greedy(folder: Path | str, prompt: list[int], count: int) -> tuple[list[int], np.ndarray]:
    """`count` greedy token ids after `prompt` (ids: tiny-lm's word-level tokenizer is read by the tokenizers
    library, not onnxruntime-genai's), and the logits at the prompt's last position."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.clear_providers()
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + count, min_length=len(prompt) + count, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray([prompt], dtype=np.int32))
    logits = np.asarray(generator.get_output("logits"), dtype=np.float64)[0, -1]
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens, logits
