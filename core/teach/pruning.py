"""Pruning for the Learn page: the masks each pattern keeps, and a quick accuracy-vs-sparsity sweep."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from core.errors import BadInputError
from core.io import runtime
from core.teach.source import torch_threads
from core.teach.weights import weight_tensors
from core.techniques import StepContext
from core.techniques.distill import accuracy, fit, model_inputs
from core.techniques.prune import magnitude_masks, prunable_layers, two_four_mask

# Pruning

PRUNE_PATTERNS = ("unstructured", "2:4", "channel")
SWEEP_PATTERNS = ("unstructured", "channel")
SWEEP_AMOUNTS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def out_first(weight: np.ndarray, axis: int) -> np.ndarray:
    """The weight with its output-channel axis first: (out, in, ...) for every layer type."""
    return np.moveaxis(np.asarray(weight), axis, 0)


def _smallest(scores: np.ndarray, count: int) -> np.ndarray:
    mask = np.zeros(scores.size, dtype=bool)
    if count > 0:
        mask[np.argsort(scores, kind="stable")[:count]] = True
    return mask


def pattern_mask(weight: np.ndarray, sparsity: float, pattern: str) -> np.ndarray | None:
    """Keep-mask (1 kept, 0 pruned) for an out-first weight.

    unstructured: the `sparsity` share of smallest |w| anywhere; 2:4: the two smallest of every four
    consecutive inputs (always 50%, `sparsity` ignored), None when the input dimension is not a multiple of 4;
    channel: whole output channels with the smallest L1 norm.

    Raises:
        BadInputError: unknown pattern or sparsity outside [0, 1).
    """
    if pattern not in PRUNE_PATTERNS:
        raise BadInputError(f"pattern={pattern!r} is not supported; allowed: {', '.join(PRUNE_PATTERNS)}")
    if not 0 <= sparsity < 1:
        raise BadInputError(f"sparsity={sparsity!r} is out of range; allowed: [0, 1)")
    w = np.asarray(weight, dtype=np.float32)
    if pattern == "2:4":
        return two_four_mask(w)
    if pattern == "unstructured":
        pruned = _smallest(np.abs(w).ravel(), int(round(sparsity * w.size)))
        return (~pruned).reshape(w.shape).astype(np.float32)
    norms = np.abs(w).reshape(w.shape[0], -1).sum(axis=1)
    dropped = _smallest(norms, int(round(sparsity * w.shape[0])))
    mask = np.ones_like(w, dtype=np.float32)
    mask[dropped] = 0.0
    return mask


def mask_facts(weight: np.ndarray, mask: np.ndarray) -> dict:
    """What a mask does to a weight: sparsity, the share of total |w| it keeps, and the relative error
    ||W - W*m|| / ||W|| (the part of the layer's signal removed)."""
    w = np.asarray(weight, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    total = float(np.abs(w).sum()) or 1.0
    norm = float(np.sqrt(np.sum(w ** 2))) or 1.0
    return {"sparsity": float(1 - m.mean()), "kept_magnitude": float(np.abs(w * m).sum() / total),
            "relative_error": float(np.sqrt(np.sum((w * (1 - m)) ** 2)) / norm),
            "zeroed": int(np.sum(m == 0)), "weights": int(m.size)}


def heatmap_matrix(weight: np.ndarray, mask: np.ndarray | None, max_rows: int = 32, max_cols: int = 96) \
        -> np.ndarray:
    """|w| of an out-first weight as a (rows, cols) matrix cropped to its top-left corner, NaN where pruned."""
    w = np.abs(np.asarray(weight, dtype=np.float32)).reshape(weight.shape[0], -1)
    if mask is not None:
        w = np.where(np.asarray(mask).reshape(w.shape) > 0, w, np.nan)
    return w[:max_rows, :max_cols]


def labelled_eval(dataset, what: str):
    if dataset.eval.y is None or dataset.train.y is None:
        raise BadInputError(f"{what} needs labelled data (accuracy), and this data has no labels")


def _torch_masks(module, amount: float, pattern: str) -> dict:
    """Parameter -> keep-mask tensor over every Conv / Linear layer: unstructured global magnitude, or whole
    output channels (weight and bias) per layer with the classifier head left whole."""
    import torch

    layers = prunable_layers(module)
    masks: dict = {}
    if amount <= 0:
        return masks
    if pattern == "unstructured":
        weights = {name: layer.weight.detach().numpy() for name, layer in layers}
        for (name, layer), keep in zip(layers, magnitude_masks(weights, amount, "global").values()):
            masks[layer.weight] = torch.from_numpy(keep)
        return masks
    for name, layer in layers[:-1]:  # the head keeps every output (one per class)
        w = layer.weight.detach().numpy()
        keep = pattern_mask(w, amount, "channel")
        masks[layer.weight] = torch.from_numpy(keep)
        if getattr(layer, "bias", None) is not None:
            masks[layer.bias] = torch.from_numpy(keep.reshape(w.shape[0], -1)[:, 0].copy())
    return masks


def sparsity_sweep(model, dataset, *, pattern: str = "unstructured", amounts=SWEEP_AMOUNTS,
                   finetune_epochs: int = 1, seed: int = 0, on_point=None) -> pd.DataFrame:
    """Eval accuracy of the model pruned to each amount, without and (torch models) with a short fine-tune.

    unstructured: global magnitude pruning over every Conv / Linear weight; channel: the smallest output
    channels of each layer (not the head) zeroed, which is what structured pruning removes.

    Args:
        finetune_epochs: epochs on the train split with the masks kept (0 = no fine-tuned curve).
        on_point: called with each row as it is measured.

    Returns:
        Columns amount, sparsity (of the Conv / Linear weights), accuracy, accuracy_finetuned (None without
        fine-tuning or a torch module).

    Raises:
        BadInputError: no labels, an unknown pattern or an amount outside [0, 1).
    """
    if pattern not in SWEEP_PATTERNS:
        raise BadInputError(f"pattern={pattern!r} is not supported; allowed: {', '.join(SWEEP_PATTERNS)}")
    if any(not 0 <= a < 1 for a in amounts):
        raise BadInputError(f"amounts={list(amounts)!r} must lie in [0, 1)")
    labelled_eval(dataset, "the accuracy-vs-sparsity sweep")
    names = [s.name for s in model.inputs]
    eval_x, eval_y = model_inputs(dataset.eval, names), dataset.eval.y
    rows = []
    if model.torch_module is None:
        for amount in amounts:
            rows.append(_onnx_sweep_point(model, dataset, pattern, float(amount)))
            if on_point:
                on_point(rows[-1])
        return pd.DataFrame(rows)
    train_x, train_y = model_inputs(dataset.train, names), dataset.train.y
    context = StepContext(dataset, model, seed=seed)
    for amount in amounts:
        with torch_threads():
            row = _torch_sweep_point(model, float(amount), pattern, finetune_epochs, seed, context, train_x, train_y,
                                     eval_x, eval_y)
        rows.append(row)
        if on_point:
            on_point(row)
    return pd.DataFrame(rows)


def _torch_sweep_point(model, amount: float, pattern: str, finetune_epochs: int, seed: int, context, train_x,
                       train_y, eval_x, eval_y) -> dict:
    """One sweep point for a torch model: a pruned copy's accuracy, then again after a masked fine-tune."""
    import torch

    module = copy.deepcopy(model.torch_module).eval()
    masks = _torch_masks(module, amount, pattern)
    with torch.no_grad():
        for param, mask in masks.items():
            param.mul_(mask)
    weights = [layer.weight.detach().numpy() for _, layer in prunable_layers(module)]
    sparsity = float(sum(int((w == 0).sum()) for w in weights) / max(1, sum(w.size for w in weights)))
    row = {"amount": amount, "sparsity": sparsity, "accuracy": accuracy(module, eval_x, eval_y),
           "accuracy_finetuned": None}
    if finetune_epochs > 0:
        fit(module, train_x, labels=train_y, teacher_logits=None, alpha=0.0, temperature=1.0,
            epochs=finetune_epochs, lr=1e-3, batch_size=64, seed=seed, context=context, masks=masks,
            what="fine-tune")
        row["accuracy_finetuned"] = accuracy(module, eval_x, eval_y)
    return row


def _onnx_sweep_point(model, dataset, pattern: str, amount: float) -> dict:
    """One sweep point for an ONNX-only model: the weight initializers masked, accuracy through onnxruntime."""
    from onnx import numpy_helper


    proto = copy.deepcopy(model.onnx_model)
    tensors = weight_tensors(proto)
    inits = {i.name: i for i in proto.graph.initializer}
    arrays = {t.name: numpy_helper.to_array(inits[t.name]).astype(np.float32) for t in tensors}
    if pattern == "unstructured" and amount > 0:
        flat = np.concatenate([np.abs(a).ravel() for a in arrays.values()])
        threshold_count = int(round(amount * flat.size))
        pruned = _smallest(flat, threshold_count)
        offset = 0
        for t in tensors:
            size = arrays[t.name].size
            arrays[t.name] = arrays[t.name] * (~pruned[offset:offset + size]).reshape(t.shape)
            offset += size
    elif pattern == "channel" and amount > 0:
        for t in tensors[:-1]:
            keep = pattern_mask(out_first(arrays[t.name], t.channel_axis), amount, "channel")
            arrays[t.name] = np.moveaxis(out_first(arrays[t.name], t.channel_axis) * keep, 0, t.channel_axis)
    for t in tensors:
        inits[t.name].CopyFrom(numpy_helper.from_array(arrays[t.name].astype(np.float32), t.name))
    total = sum(a.size for a in arrays.values())
    sparsity = float(sum(int((a == 0).sum()) for a in arrays.values()) / max(1, total))
    session = runtime.make_session(proto.SerializeToString(), 1)
    logits = runtime.run_batched(session, dataset.eval.x)[0]
    return {"amount": amount, "sparsity": sparsity,
            "accuracy": float((logits.argmax(axis=1) == dataset.eval.y).mean()), "accuracy_finetuned": None}


