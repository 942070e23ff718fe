"""Knowledge distillation into a smaller student, and the seeded training loop that fine-tuning shares."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from core.errors import BadInputError, UnsupportedModelError
from core.io.graph import onnx_params, task_of
from core.spec.recipe import DistillConfig
from core.techniques import Candidate, StepContext, register
from core.io import runtime

INFERENCE_BATCH = 512
# Student templates for ONNX uploads (no architecture to scale): the smallest hidden size / channel count tried.
MIN_TEMPLATE_SIZE = 4


# --------------------------------------------------------------------------------------------------------------
# The training loop (distillation, the control student, and pruning's fine-tuning)


def model_inputs(split, input_names) -> list[np.ndarray]:
    """A split's arrays in the model's input order (positional arguments of the torch module)."""
    return [split.x[name] for name in input_names]


def predict(module, inputs: list[np.ndarray], batch: int = INFERENCE_BATCH) -> np.ndarray:
    """Run a torch module over arrays in batches (eval mode, no grad) and return its one output as an array.

    Raises:
        UnsupportedModelError: the module returns something other than one tensor.
    """
    import torch

    module.eval()
    n = len(inputs[0])
    chunks = []
    with torch.no_grad():
        for start in range(0, n, batch):
            out = module(*[torch.from_numpy(np.ascontiguousarray(a[start:start + batch])) for a in inputs])
            if not isinstance(out, torch.Tensor):
                raise UnsupportedModelError(f"the torch module returns {type(out).__name__}, not one tensor; "
                                            "training needs a single output")
            chunks.append(out.float().numpy())
    return np.concatenate(chunks)


def distillation_loss(student_logits, teacher_logits, labels, *, alpha: float, temperature: float):
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels) (Hinton et al., 2015).

    The T^2 factor keeps the soft-target gradients on the scale of the label loss as T changes. With
    alpha == 0 this is plain cross-entropy; with alpha == 1 (or no labels) pure soft-target distillation.
    """
    import torch.nn.functional as F

    loss = 0.0
    if alpha > 0:
        soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                        F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean")
        loss = alpha * temperature ** 2 * soft
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, labels)
    return loss


def accuracy(module, inputs: list[np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy of a classifier module on arrays."""
    return float((predict(module, inputs).argmax(axis=1) == labels).mean())


def fit(module, inputs: list[np.ndarray], *, labels: np.ndarray | None, teacher_logits: np.ndarray | None,
        alpha: float, temperature: float, epochs: int, lr: float, batch_size: int, seed: int,
        context: StepContext, masks: dict | None = None, eval_inputs: list[np.ndarray] | None = None,
        eval_labels: np.ndarray | None = None, what: str = "training", progress: tuple = (0.0, 1.0)) -> list[dict]:
    """Train `module` in place with Adam and a cosine learning-rate schedule, seeded; report every epoch.

    Args:
        module: the torch module to train (left in eval mode).
        inputs: training arrays, one per model input, batch axis first.
        labels: integer class labels, or None (then alpha must be 1).
        teacher_logits: the teacher's outputs for `inputs`, precomputed, or None (then alpha must be 0).
        alpha / temperature: the distillation loss mix (see `distillation_loss`).
        masks: parameter -> 0/1 tensor of the same shape, re-applied after every optimizer step so pruned
            weights stay zero.
        eval_inputs / eval_labels: when given, eval accuracy is recorded after every epoch.
        what / progress: how progress messages name this run, and the slice of the step's fraction it fills.

    Returns:
        The training curve: one {"epoch", "loss", "eval_accuracy"} per epoch.

    Raises:
        Cancelled: the user stopped the run (checked once per epoch).
    """
    import torch

    if alpha < 1 and labels is None:
        raise BadInputError(f"{what} needs labels for its label loss (alpha < 1), and the data has none")
    if alpha > 0 and teacher_logits is None:
        raise BadInputError(f"{what} needs teacher outputs for its distillation loss (alpha > 0)")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xs = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    ys = torch.from_numpy(labels.astype(np.int64)) if labels is not None else None
    ts = torch.from_numpy(np.ascontiguousarray(teacher_logits, dtype=np.float32)) if teacher_logits is not None \
        else None
    n = len(xs[0])
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    mask_pairs = [(p, m) for p, m in (masks or {}).items()]
    curve = []
    start, span = progress
    for epoch in range(epochs):
        context.check_stop()
        module.train()
        order = torch.randperm(n, generator=generator)
        total, seen = 0.0, 0
        for begin in range(0, n, batch_size):
            idx = order[begin:begin + batch_size]
            if len(idx) == 1 and n > 1:  # a batch of one breaks BatchNorm's batch statistics
                continue
            optimizer.zero_grad()
            out = module(*[x[idx] for x in xs])
            loss = distillation_loss(out, ts[idx] if ts is not None else None,
                                     ys[idx] if ys is not None else None, alpha=alpha, temperature=temperature)
            loss.backward()
            optimizer.step()
            if mask_pairs:
                with torch.no_grad():
                    for param, mask in mask_pairs:
                        param.mul_(mask)
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        scheduler.step()
        point = {"epoch": epoch + 1, "loss": round(total / max(1, seen), 6), "eval_accuracy": None}
        if eval_inputs is not None and eval_labels is not None:
            point["eval_accuracy"] = round(accuracy(module, eval_inputs, eval_labels), 6)
        curve.append(point)
        shown = f", eval accuracy {point['eval_accuracy']:.4f}" if point["eval_accuracy"] is not None else ""
        context.report(f"{what} epoch {epoch + 1}/{epochs}: loss {point['loss']:.4f}{shown}",
                       start + span * (epoch + 1) / epochs)
    module.eval()
    return curve


def param_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


# --------------------------------------------------------------------------------------------------------------
# Teacher and student


def teacher_outputs(context: StepContext, inputs: list[np.ndarray]) -> np.ndarray:
    """The baseline's logits for `inputs`: from its torch module when there is one, else through onnxruntime."""
    baseline = context.baseline
    if baseline.torch_module is not None:
        return predict(baseline.torch_module, inputs)
    import torch


    session = runtime.make_session(baseline.onnx_bytes(), max(1, torch.get_num_threads()))
    feed = {spec.name: array for spec, array in zip(baseline.inputs, inputs)}
    return runtime.run_batched(session, feed, INFERENCE_BATCH)[0].astype(np.float32)


def _mlp_template(features: int, hidden: int, classes: int):
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(),
                         nn.Linear(hidden, max(1, hidden // 2)), nn.ReLU(), nn.Linear(max(1, hidden // 2), classes))


def _cnn_template(channels: int, size: tuple, base: int, classes: int):
    """Three conv/BN/ReLU blocks (base, 2*base, 4*base channels), pooling while the image is large, global
    average pooling, one linear layer: the parameter count depends on `base` only, not on the image size."""
    from torch import nn

    layers, c_in, height, width = [], channels, size[0], size[1]
    for c_out in (base, 2 * base, 4 * base):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        if min(height, width) >= 8:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes)]
    return nn.Sequential(*layers)


def build_student(config: DistillConfig, candidate: Candidate, context: StepContext, sample_shape: tuple,
                  classes: int):
    """The student: the sample architecture at `width`, or, for an ONNX upload, a template sized so its
    parameter count is about width^2 of the teacher's (scaling every layer's width by w scales weights by w^2).

    Returns:
        (module, description)
    """
    import torch

    from sample_models import SAMPLE_MODELS

    torch.manual_seed(context.seed)
    architecture = candidate.architecture or context.baseline.architecture
    if architecture in SAMPLE_MODELS:
        return SAMPLE_MODELS[architecture].build(config.width), f"{architecture} at width {config.width:g}"
    budget = config.width ** 2 * max(1, onnx_params(context.baseline.onnx_model))
    image = len(sample_shape) == 3 and min(sample_shape[1:]) >= 4
    if image:
        def make(size):
            return _cnn_template(sample_shape[0], sample_shape[1:], size, classes)
    else:
        features = int(np.prod(sample_shape))

        def make(size):
            return _mlp_template(features, size, classes)
    size = MIN_TEMPLATE_SIZE
    while param_count(make(size * 2)) <= budget and size < 4096:
        size *= 2
    # refine between size and 2*size in steps of an eighth
    step = max(1, size // 8)
    while param_count(make(size + step)) <= budget and size < 8192:
        size += step
    torch.manual_seed(context.seed)
    module = make(size)
    kind = f"small CNN template (channels {size}/{2 * size}/{4 * size})" if image else \
        f"MLP template (hidden {size}/{max(1, size // 2)})"
    return module, kind


def _check_classifier(context: StepContext) -> None:
    if task_of(context.baseline) != "classification":
        outs = ", ".join(f"{o.name} {list(o.shape)}" for o in context.baseline.outputs)
        raise UnsupportedModelError(f"distillation needs a classifier (one 2-D logits output); this model "
                                    f"outputs {outs}")


@register(DistillConfig)
def distill(config: DistillConfig, candidate: Candidate, context: StepContext) -> Candidate:
    """Train a width-scaled student on the baseline's soft targets (and labels, when there are any).

    The teacher is always the baseline, even when earlier steps changed the candidate. With ``control``, the
    identical student (same initial weights, same epochs) is also trained on labels alone and added as the
    variant "<name> (control)".

    Raises:
        BadInputError: the train split is empty.
        UnsupportedModelError: the model is not a classifier, or (ONNX-only) has inputs no template can take.
    """
    _check_classifier(context)
    dataset = context.dataset
    if dataset.train is None or len(dataset.train) == 0:
        raise BadInputError("distillation needs training inputs, and the train split is empty")
    names = [spec.name for spec in context.baseline.inputs]
    inputs = model_inputs(dataset.train, names)
    labels = dataset.train.y
    notes = []
    if candidate.info or candidate.notes:  # an earlier step (e.g. pruning) built the model the student replaces
        notes.append("distillation trains a new student from the baseline teacher; the model built by the "
                     "earlier steps is replaced (its facts and notes are not carried over)")
    if context.baseline.torch_module is None and (len(inputs) != 1 or not np.issubdtype(inputs[0].dtype,
                                                                                         np.floating)):
        raise UnsupportedModelError("distilling an ONNX-only model needs one float input (for the MLP or CNN "
                                    f"student template); this model has inputs {names}")
    context.report("computing the teacher's outputs", 0.0)
    teacher_logits = teacher_outputs(context, inputs)
    context.check_stop()
    student, description = build_student(config, candidate, context, inputs[0].shape[1:],
                                         int(teacher_logits.shape[1]))
    initial = copy.deepcopy(student.state_dict())
    student_out = predict(student, [a[:2] for a in inputs])
    if student_out.shape[1:] != teacher_logits.shape[1:]:
        raise UnsupportedModelError(f"the student outputs {list(student_out.shape[1:])} per sample but the "
                                    f"teacher {list(teacher_logits.shape[1:])}")
    alpha = config.alpha
    if labels is None:
        alpha = 1.0
        notes.append("no labels: the student learned from the teacher's soft targets only (alpha treated as 1)")
    eval_inputs = model_inputs(dataset.eval, names) if dataset.eval.y is not None else None
    train_options = dict(temperature=config.temperature, epochs=config.epochs, lr=config.lr,
                         batch_size=config.batch_size, seed=context.seed, context=context,
                         eval_inputs=eval_inputs, eval_labels=dataset.eval.y)
    want_control = config.control and labels is not None
    share = 0.5 if want_control else 1.0
    curve = fit(student, inputs, labels=labels, teacher_logits=teacher_logits, alpha=alpha,
                what="distillation", progress=(0.0, share), **train_options)
    teacher_params = param_count(context.baseline.torch_module) if context.baseline.torch_module is not None \
        else onnx_params(context.baseline.onnx_model)
    student_params = param_count(student)
    info = {"teacher_params": teacher_params, "student_params": student_params,
            "student": description, "param_ratio": round(teacher_params / max(1, student_params), 3),
            "train_curve": curve, "teacher_train_accuracy":
                None if labels is None else round(float((teacher_logits.argmax(1) == labels).mean()), 6)}
    if student_params >= teacher_params:
        notes.append(f"the student ({student_params:,} params) is not smaller than the teacher "
                     f"({teacher_params:,}); lower the width")
    if config.control and labels is None:
        notes.append("no control student: training one alone needs labels, and the data has none")
    if want_control:
        twin = copy.deepcopy(student)
        twin.load_state_dict(initial)
        control_curve = fit(twin, inputs, labels=labels, teacher_logits=None, alpha=0.0, what="control",
                            progress=(0.5, 0.5), **train_options)
        control_info = {"teacher_params": teacher_params, "student_params": student_params,
                        "student": description, "train_curve": control_curve, "control_of": context.variant_name}
        control = Candidate(onnx_model=None, torch_module=twin, architecture=candidate.architecture,
                            info=control_info, notes=["the same student, same initial weights and epochs, trained "
                                                      "on the labels alone (no teacher)"])
        step = {**config.to_dict(), "alpha": 0.0, "control": False}
        name = f"{context.variant_name or 'distill'} (control)"
        context.extra_variants.append((name, control, [step]))
    return dataclasses.replace(candidate, onnx_model=None, torch_module=student, info=info, notes=notes)
