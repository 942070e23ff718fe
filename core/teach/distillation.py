"""Distillation for the Learn page: soft targets at a temperature, and a live two-student distillation."""

from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import pandas as pd

from core.errors import BadInputError, UnsupportedModelError
from core.io import runtime
from core.teach.pruning import labelled_eval
from core.teach.source import torch_threads
from core.io.graph import onnx_params, task_of
from core.spec.recipe import DistillConfig
from core.techniques import Candidate, StepContext
from core.techniques.distill import build_student, distillation_loss, model_inputs, param_count, predict

# Distillation


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) along the last axis (numerically stable).

    Raises:
        BadInputError: temperature <= 0.
    """
    if not temperature > 0:
        raise BadInputError(f"temperature={temperature!r} must be > 0")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy_bits(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits along the last axis: 0 for a one-hot label, log2(classes) for a uniform guess."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=-1)


def teacher_logits(model, split, limit: int | None = None) -> np.ndarray:
    """The model's logits on a split (the torch module when there is one, else onnxruntime).

    Raises:
        UnsupportedModelError: the model is not a classifier (one 2-D output).
    """
    if task_of(model) != "classification":
        raise UnsupportedModelError("soft targets need a classifier (one 2-D logits output)")
    inputs = model_inputs(split if limit is None else split.take(limit), [s.name for s in model.inputs])
    if model.torch_module is not None:
        return predict(model.torch_module, inputs)

    session = runtime.make_session(model.onnx_bytes(), 1)
    return runtime.run_batched(session, {s.name: a for s, a in zip(model.inputs, inputs)})[0].astype(np.float32)


def soft_target_facts(logits_row: np.ndarray, temperature: float) -> dict:
    """One sample's soft targets: probabilities, entropy (bits), the top class and the runner-up's share."""
    p = softmax(np.asarray(logits_row)[None, :], temperature)[0]
    order = np.argsort(-p)
    return {"probs": p, "entropy_bits": float(entropy_bits(p)), "top": int(order[0]),
            "top_prob": float(p[order[0]]), "runner_up": int(order[1]) if p.size > 1 else None,
            "runner_up_prob": float(p[order[1]]) if p.size > 1 else 0.0,
            "max_entropy_bits": float(np.log2(p.size))}


def temperature_curve(logits: np.ndarray, temperatures=(0.5, 1, 2, 3, 4, 6, 8, 12, 16, 20)) -> pd.DataFrame:
    """Mean entropy (bits) and mean top-class probability of the soft targets over many samples, per T."""
    rows = []
    for t in temperatures:
        p = softmax(logits, float(t))
        rows.append({"temperature": float(t), "mean_entropy_bits": float(entropy_bits(p).mean()),
                     "mean_top_prob": float(p.max(axis=-1).mean())})
    return pd.DataFrame(rows)


STUDENTS = ("with teacher", "labels only")


def distill_live(model, dataset, *, width: float = 0.25, temperature: float = 4.0, alpha: float = 0.7,
                 epochs: int = 15, train_samples: int = 300, lr: float = 1e-2, batch_size: int = 32,
                 seed: int = 0) -> Iterator[dict]:
    """Train two identical small students side by side, one on the teacher's soft targets (and the labels), one
    on the labels alone; yield a point per student after every epoch (and one before training).

    Each point: {"epoch", "student" ("with teacher" / "labels only"), "eval_loss" (cross-entropy on the eval
    labels, comparable between the two), "eval_accuracy", "agreement" (top-1 agreement with the teacher),
    "student_params", "teacher_params"}.

    Raises:
        BadInputError: no labels, or a parameter out of range.
        UnsupportedModelError: the model is not a classifier.
    """
    import torch
    import torch.nn.functional as F

    config = DistillConfig(width=width, temperature=temperature, alpha=alpha, epochs=max(1, epochs), lr=lr,
                           batch_size=batch_size)
    if train_samples < 2:
        raise BadInputError(f"train_samples={train_samples!r} must be at least 2")
    labelled_eval(dataset, "live distillation")
    names = [s.name for s in model.inputs]
    train = dataset.train.take(train_samples)
    x_train = model_inputs(train, names)
    y_train = train.y
    x_eval, y_eval = model_inputs(dataset.eval, names), dataset.eval.y
    with torch_threads():
        soft = teacher_logits(model, train)
        teacher_eval = teacher_logits(model, dataset.eval).argmax(axis=1)
        context = StepContext(dataset, model, seed=seed)
        student, _ = build_student(config, Candidate(architecture=model.architecture), context,
                                   x_train[0].shape[1:], int(soft.shape[1]))
    twin = copy.deepcopy(student)
    teacher_params = param_count(model.torch_module) if model.torch_module is not None else None
    if teacher_params is None:
        teacher_params = onnx_params(model.onnx_model)
    students = {"with teacher": (student, alpha), "labels only": (twin, 0.0)}
    optimizers = {k: torch.optim.Adam(m.parameters(), lr=lr) for k, (m, _) in students.items()}
    xs = [torch.from_numpy(np.ascontiguousarray(a)) for a in x_train]
    ys = torch.from_numpy(y_train)
    ts = torch.from_numpy(np.ascontiguousarray(soft, dtype=np.float32))
    eval_labels = torch.from_numpy(y_eval)

    def point(epoch: int, name: str, module) -> dict:
        logits = predict(module, x_eval)
        loss = float(F.cross_entropy(torch.from_numpy(logits), eval_labels))
        top = logits.argmax(axis=1)
        return {"epoch": epoch, "student": name, "eval_loss": loss, "eval_accuracy": float((top == y_eval).mean()),
                "agreement": float((top == teacher_eval).mean()), "student_params": param_count(module),
                "teacher_params": int(teacher_params)}

    def train_epoch(epoch: int, name: str, module, mix: float) -> None:
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)  # the same batches for both students
        order = torch.randperm(n, generator=generator)
        module.train()
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:  # a batch of one breaks BatchNorm's batch statistics
                continue
            optimizers[name].zero_grad()
            out = module(*[x[idx] for x in xs])
            loss = distillation_loss(out, ts[idx], ys[idx], alpha=mix, temperature=temperature)
            loss.backward()
            optimizers[name].step()
        module.eval()

    n = len(xs[0])
    for name, (module, _) in students.items():
        with torch_threads():
            first = point(0, name, module)
        yield first
    for epoch in range(1, config.epochs + 1):
        for name, (module, mix) in students.items():
            with torch_threads():  # per step, never across a yield: the caller runs between points
                train_epoch(epoch, name, module, mix)
                current = point(epoch, name, module)
            yield current


