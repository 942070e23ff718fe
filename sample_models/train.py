"""Train the bundled sample models deterministically and save their weights as safetensors.

Usage: python -m sample_models.train [NAME ...]   (default: every sample with a training recipe)
"""

from __future__ import annotations

import sys
import time

import numpy as np


def train_classifier(module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int = 64,
                     seed: int = 0, weight_decay: float = 0.0, on_epoch=None):
    """Plain seeded Adam training with cross-entropy; returns the module in eval mode."""
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        module.train()
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(module(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
        scheduler.step()
        if on_epoch:
            on_epoch(epoch + 1, float(loss))
    return module.eval()


def accuracy(module, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


# Epochs and learning rates chosen so each sample trains in seconds on 2 cores and reaches a stable accuracy.
TRAINING = {
    "digits-mlp": {"epochs": 40, "lr": 2e-3},
    "digits-cnn": {"epochs": 30, "lr": 2e-3},
}


def train_sample(name: str) -> float:
    import torch
    from safetensors.torch import save_file

    from sample_models import SAMPLE_DATASETS, SAMPLE_MODELS

    sample = SAMPLE_MODELS[name]
    if getattr(sample, "train", None) is not None:  # samples with their own training routine
        return sample.train()
    splits = SAMPLE_DATASETS[sample.dataset].load()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    module = sample.build(1.0)
    x, y = splits["train"]
    train_classifier(module, x, y, seed=0, **TRAINING[name])
    acc = accuracy(module, *splits["eval"])
    sample.weights_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(sample.weights_path),
              metadata={"architecture": name, "eval_accuracy": f"{acc:.4f}"})
    return acc


def main(argv: list[str]) -> int:
    from sample_models import SAMPLE_MODELS

    names = argv or [n for n, s in SAMPLE_MODELS.items() if n in TRAINING or getattr(s, "train", None)]
    for name in names:
        start = time.perf_counter()
        acc = train_sample(name)
        print(f"{name}: eval accuracy {acc:.4f} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
