"""Pruning: magnitude and 2:4 masks, channel removal with torch-pruning, masks on ONNX weights; then fine-tuning."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from core.errors import BadInputError, UnsupportedModelError
from core.io.graph import task_of
from core.spec.recipe import PruneConfig
from core.techniques import Candidate, StepContext, register
from core.techniques.distill import fit, model_inputs, param_count, teacher_outputs

FINETUNE_BATCH = 64
# Under global structured pruning torch-pruning ranks channels across layers; without a cap it may empty a
# layer entirely (and break the model). Keep at least 10% of every layer's channels.
GLOBAL_MAX_PRUNING_RATIO = 0.9
# Kept channel counts are rounded to multiples of 8: onnxruntime's CPU kernels are much faster on them. Measured
# on digits-cnn (1 thread, batch 256, same run): global 50% kept 14/33/69/60 channels and ran 1.75x faster than
# the baseline in fp32 (3.3x with static int8); rounded to 16/32/72/64 it ran 3.2x (4.0x with static int8).
CHANNEL_MULTIPLE = 8

UNSTRUCTURED_NOTE = ("Unstructured sparsity: dense kernels run no faster on zeroed weights (they still multiply "
                     "every zero), so expect no speed-up; what shrinks is the compressed (zip) size of the file.")
SEMI_STRUCTURED_NOTE = ("2:4 sparsity runs faster only on GPUs with sparse tensor cores (NVIDIA Ampere and "
                        "later); CPUs have no 2:4 kernels, so no speed-up here; the compressed size shrinks.")
NEEDS_TORCH = ("structured pruning needs a torch model (upload the .pt/.safetensors weights of a supported "
               "architecture); ONNX-only models support unstructured pruning")


# --------------------------------------------------------------------------------------------------------------
# Masks on torch modules


def prunable_layers(module) -> list[tuple[str, object]]:
    """(name, layer) of every Conv and Linear layer: the weights pruning touches."""
    from torch import nn

    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    return [(name, layer) for name, layer in module.named_modules()
            if isinstance(layer, kinds) and getattr(layer, "weight", None) is not None]


def _smallest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the `count` smallest scores (ties broken by position, so the count is exact)."""
    mask = np.zeros(scores.size, dtype=bool)
    if count > 0:
        mask[np.argsort(scores, kind="stable")[:count]] = True
    return mask


def magnitude_masks(weights: dict, amount: float, scope: str) -> dict:
    """Keep-masks (1 = kept) zeroing the `amount` fraction of smallest-magnitude weights.

    Args:
        weights: name -> numpy array.
        amount: fraction to zero, in (0, 1).
        scope: "global" ranks all weights together; "layer" zeroes `amount` of each array.

    Returns:
        name -> float32 array of the same shape, 0 where pruned.
    """
    if scope == "layer":
        return {name: (~_smallest(np.abs(w).ravel(), int(round(amount * w.size)))).reshape(w.shape)
                .astype(np.float32) for name, w in weights.items()}
    flat = np.concatenate([np.abs(w).ravel() for w in weights.values()])
    pruned = _smallest(flat, int(round(amount * flat.size)))
    masks, offset = {}, 0
    for name, w in weights.items():
        masks[name] = (~pruned[offset:offset + w.size]).reshape(w.shape).astype(np.float32)
        offset += w.size
    return masks


def two_four_mask(weight: np.ndarray) -> np.ndarray | None:
    """Keep-mask with 2 of every 4 consecutive input weights kept (the largest magnitudes).

    For Linear (out, in) the groups run along `in`; for Conv (out, in, *kernel) along the input channels at each
    kernel position, as NVIDIA's sparse tensor cores expect. None when the input dimension is not a multiple of 4.
    """
    if weight.ndim < 2 or weight.shape[1] % 4:
        return None
    moved = np.moveaxis(weight, 1, -1)  # (..., in)
    groups = np.abs(moved).reshape(-1, 4)
    order = np.argsort(groups, axis=1, kind="stable")
    keep = np.zeros_like(groups, dtype=np.float32)
    np.put_along_axis(keep, order[:, 2:], 1.0, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, 1)


def _sparsity(arrays: dict) -> tuple[float, dict]:
    zeros = {name: int((a == 0).sum()) for name, a in arrays.items()}
    total = sum(a.size for a in arrays.values())
    layer = {name: round(zeros[name] / arrays[name].size, 6) for name in arrays}
    return round(sum(zeros.values()) / max(1, total), 6), layer


def _apply_masks(layers: dict, masks: dict) -> dict:
    """Zero the pruned weights in place; return parameter -> mask tensor for fine-tuning."""
    import torch

    out = {}
    with torch.no_grad():
        for name, mask in masks.items():
            weight = layers[name].weight
            tensor = torch.from_numpy(mask).to(weight.dtype)
            weight.mul_(tensor)
            out[weight] = tensor
    return out


# --------------------------------------------------------------------------------------------------------------
# Structured pruning (torch-pruning)


def _example_inputs(context: StepContext):
    import torch

    split = context.dataset.eval if len(context.dataset.eval) else context.dataset.train
    tensors = [torch.from_numpy(np.ascontiguousarray(a[:2])) for a in
               model_inputs(split, [s.name for s in context.baseline.inputs])]
    return tensors


def _call(module, example):
    return module(*example)


def _execution_order(module, example) -> list:
    """Conv/Linear layers in the order the forward pass runs them."""
    import torch

    order, handles = [], []
    for _, layer in prunable_layers(module):
        handles.append(layer.register_forward_hook(lambda m, i, o: order.append(m)))
    try:
        with torch.no_grad():
            _call(module, example)
    finally:
        for h in handles:
            h.remove()
    return order


def _forward_checked(module, example, names: dict):
    """Run the pruned module; if it fails, raise UnsupportedModelError naming the layer that failed (or the last
    one that ran, when the failing op sits in a forward() between layers)."""
    import torch

    running, finished, handles = [], [], []

    def enter(layer, args) -> None:
        running.append(layer)

    def leave(layer, args, out) -> None:  # returns None: a forward hook's return value would replace the output
        running.pop()
        finished.append(layer)

    for m in module.modules():
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    try:
        with torch.no_grad():
            return _call(module, example)
    except Exception as exc:  # noqa: BLE001 - any failure here means the pruned graph is inconsistent
        inner = next((m for m in reversed(running) if m is not module), None)
        if inner is not None:
            where = f"layer {names.get(id(inner), type(inner).__name__)!r}"
        elif finished:
            where = f"the code after layer {names.get(id(finished[-1]), type(finished[-1]).__name__)!r}"
        else:
            where = f"the forward of {type(module).__name__}"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise UnsupportedModelError(f"structured pruning broke {where} ({first}); torch-pruning could not "
                                    "follow the channels through this model; use unstructured pruning") from None
    finally:
        for h in handles:
            h.remove()


def _node_label(node, names: dict, param_names: dict) -> str:
    """A torch-pruning graph node as a user reads it: the layer's name, a parameter's name, or the op."""
    target = node.module
    if id(target) in names:
        return f"layer {names[id(target)]!r} ({type(target).__name__})"
    if id(target) in param_names:
        return f"parameter {param_names[id(target)]!r} (used outside a Conv/Linear layer)"
    return f"op {node.name.lstrip('_')}"


def _check_groups(pruner, names: dict, param_names: dict) -> None:
    """Refuse graphs where torch-pruning's channel mapping runs past a layer's size.

    That happens when an op between layers (a hard-coded reshape, a weight used through torch.nn.functional, a
    custom parameter) changes how channels map; pruning would fail or silently corrupt the model.
    """
    graph = pruner.DG
    for group in graph.get_all_groups(ignored_layers=pruner.ignored_layers,
                                      root_module_types=pruner.root_module_types):
        root = group[0][0].target
        for dep, idxs in group:
            target = dep.target.module
            try:
                size = graph.get_out_channels(target) if graph.is_out_channel_pruning_fn(dep.handler) \
                    else graph.get_in_channels(target)
            except Exception:  # noqa: BLE001 - ops without channels
                size = None
            if size is None or not len(idxs):
                continue
            if max(int(i) for i in idxs) >= size:
                raise UnsupportedModelError(
                    f"structured pruning cannot handle {_node_label(dep.target, names, param_names)}: the "
                    f"channels of {_node_label(root, names, param_names)} reach it through "
                    f"{_node_label(dep.source, names, param_names)}, which "
                    "torch-pruning cannot trace (a hard-coded reshape, a custom parameter or a functional op); "
                    "use unstructured pruning for this model")


def _unsupported_custom_layers(module) -> list[str]:
    """Modules that own parameters but are not layers torch-pruning knows how to shrink."""
    from torch import nn

    known = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
             nn.modules.instancenorm._InstanceNorm, nn.PReLU, nn.Embedding, nn.MultiheadAttention, nn.LSTM)
    out = []
    for name, layer in module.named_modules():
        own = list(layer.parameters(recurse=False))
        if own and not isinstance(layer, known):
            out.append(f"{name or 'the model'} ({type(layer).__name__})")
    return out


def channel_target(kept: int, of: int) -> int:
    """A kept channel count rounded to the nearest multiple of CHANNEL_MULTIPLE (of 4 below 2 * CHANNEL_MULTIPLE,
    where a multiple of 8 would be too coarse; unchanged below 4), never above the original count."""
    multiple = CHANNEL_MULTIPLE if kept >= 2 * CHANNEL_MULTIPLE else 4
    if kept >= of or kept < 4:
        return kept
    return min(of, max(multiple, int(round(kept / multiple)) * multiple))


def _make_pruner(module, example, config: PruneConfig, head, **options):
    import torch_pruning as tp

    importance = tp.importance.MagnitudeImportance(p=1 if config.importance == "l1" else 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tp.pruner.MetaPruner(module, tuple(example) if len(example) > 1 else example[0],
                                        importance=importance, ignored_layers=[head], **options)
    except Exception as exc:  # noqa: BLE001 - tracing failures come in many types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise UnsupportedModelError(f"structured pruning cannot trace this model ({first}); "
                                    "use unstructured pruning") from None


def _step(pruner, module) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner.step()
    except Exception as exc:  # noqa: BLE001
        custom = _unsupported_custom_layers(module)
        where = f" at layer {custom[0]}" if custom else ""
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise UnsupportedModelError(f"structured pruning failed{where}: {first}; use unstructured pruning") \
            from None


def _module_names(module) -> tuple[dict, dict]:
    return ({id(m): (name or "the model") for name, m in module.named_modules()},
            {id(p): name for name, p in module.named_parameters()})


def structured_prune(module, config: PruneConfig, context: StepContext) -> dict:
    """Remove whole channels / neurons in place with torch-pruning's dependency graph; return the facts.

    Two passes: torch-pruning first plans the cut on a copy (ranking channels globally or per layer); each
    layer's kept count is then rounded to a multiple of CHANNEL_MULTIPLE and the real module is cut to exactly
    those counts, keeping the highest-magnitude channels. The last Conv/Linear layer the forward pass runs (the
    classifier head) keeps its outputs, so the model's output shape never changes. BatchNorm, residual adds,
    concatenations and flattening follow the pruned channels through the dependency graph.

    Raises:
        UnsupportedModelError: torch-pruning cannot trace the model; the message names the layer.
    """
    import copy

    import torch

    module.eval()
    example = _example_inputs(context)
    names, param_names = _module_names(module)
    try:
        with torch.no_grad():
            reference = _call(module, example)
        order = _execution_order(module, example)
    except Exception as exc:  # noqa: BLE001 - a module that cannot even run on the data
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise UnsupportedModelError(f"the torch module cannot run on the data: {first}") from None
    if not isinstance(reference, torch.Tensor):
        raise UnsupportedModelError(f"structured pruning needs a module with one tensor output, got "
                                    f"{type(reference).__name__}")
    if not order:
        raise UnsupportedModelError("structured pruning found no Conv or Linear layer to prune")
    head = order[-1]
    head_name = names[id(head)]
    before = {name: layer.weight.shape[0] for name, layer in prunable_layers(module)}
    params_before = param_count(module)

    # Pass 1: plan on a copy.
    plan = copy.deepcopy(module)
    plan_names, plan_params = _module_names(plan)
    max_ratio = GLOBAL_MAX_PRUNING_RATIO if config.scope == "global" else max(GLOBAL_MAX_PRUNING_RATIO,
                                                                              config.amount)
    pruner = _make_pruner(plan, example, config, dict(plan.named_modules())[head_name],
                          pruning_ratio=config.amount, global_pruning=config.scope == "global",
                          max_pruning_ratio=max_ratio)
    _check_groups(pruner, plan_names, plan_params)
    _step(pruner, plan)
    _forward_checked(plan, example, plan_names)
    planned = {name: layer.weight.shape[0] for name, layer in prunable_layers(plan)}

    # Pass 2: cut the real module to the rounded counts (local ranking inside each layer, as the plan did).
    layers = dict(prunable_layers(module))
    # ratio chosen so torch-pruning's int(channels * (1 - ratio)) lands exactly on the target
    ratios = {layers[name]: 1 - (channel_target(kept, before[name]) + 0.5) / before[name]
              for name, kept in planned.items() if channel_target(kept, before[name]) < before[name]}
    if ratios:
        pruner = _make_pruner(module, example, config, head, pruning_ratio=0.0, pruning_ratio_dict=ratios,
                              global_pruning=False)
        _step(pruner, module)
    output = _forward_checked(module, example, names)
    if not isinstance(output, torch.Tensor) or output.shape != reference.shape:
        raise UnsupportedModelError(f"structured pruning changed the output shape from {list(reference.shape)} "
                                    f"to {list(getattr(output, 'shape', []))}; the output layer could not be "
                                    "protected")
    after = {name: layer.weight.shape[0] for name, layer in prunable_layers(module)}
    return {"params_before": params_before, "params_after": param_count(module),
            "channels_kept": {name: {"kept": int(after[name]), "of": int(before[name])} for name in before},
            "channel_multiple": CHANNEL_MULTIPLE, "head_layer": head_name}


# --------------------------------------------------------------------------------------------------------------
# ONNX-only models


WEIGHT_INPUTS = {"Conv": (1,), "Gemm": (1,), "MatMul": (0, 1)}
FLOAT_TYPES = (1, 10, 11, 16)  # float, float16, double, bfloat16


def onnx_weight_initializers(proto) -> dict:
    """Initializer name -> the node names using it as a Conv / Gemm / MatMul weight.

    Left out: non-float and 1-D tensors, and initializers that some other node also reads (a tied embedding, a
    shape), since zeroing them would change more than a weight.
    """
    inits = {i.name: i for i in proto.graph.initializer}
    weight_users: dict[str, list[str]] = {}
    other_users: set[str] = set()
    for node in proto.graph.node:
        positions = WEIGHT_INPUTS.get(node.op_type, ())
        for pos, name in enumerate(node.input):
            if name not in inits:
                continue
            if pos in positions and inits[name].data_type in FLOAT_TYPES and len(inits[name].dims) >= 2:
                weight_users.setdefault(name, []).append(node.name or node.output[0])
            else:
                other_users.add(name)
    return {name: users for name, users in weight_users.items() if name not in other_users}


def prune_onnx(proto, config: PruneConfig) -> dict:
    """Zero the smallest-magnitude weights of an ONNX graph's Conv / Gemm / MatMul initializers, in place.

    Returns:
        info: sparsity, layer_sparsity (by node name) and pruned_initializers.

    Raises:
        UnsupportedModelError: no float weight initializer to prune.
    """
    from onnx import numpy_helper

    targets = onnx_weight_initializers(proto)
    if not targets:
        raise UnsupportedModelError("unstructured pruning found no float Conv/Gemm/MatMul weight initializers in "
                                    "this ONNX graph (already quantized, or weights computed at run time)")
    by_name = {i.name: i for i in proto.graph.initializer}
    weights = {name: numpy_helper.to_array(by_name[name]) for name in targets}
    masks = magnitude_masks({k: v.astype(np.float32) for k, v in weights.items()}, config.amount, config.scope)
    pruned = {}
    for name, weight in weights.items():
        new = (weight * masks[name].astype(weight.dtype)).astype(weight.dtype)
        by_name[name].CopyFrom(numpy_helper.from_array(new, name))
        pruned[name] = new
    overall, per_init = _sparsity(pruned)
    layer = {}
    for name, users in targets.items():
        key = users[0] if len(users) == 1 else name
        layer[key] = per_init[name]
    return {"sparsity": overall, "layer_sparsity": layer}


# --------------------------------------------------------------------------------------------------------------
# The step


def _finetune(module, config: PruneConfig, context: StepContext, masks: dict, notes: list) -> list | None:
    """Fine-tune on the train split with labels, or, without labels, on the baseline classifier's outputs."""
    dataset = context.dataset
    if config.finetune_epochs == 0:
        return None
    if dataset.train is None or len(dataset.train) == 0:
        raise BadInputError("fine-tuning needs training inputs, and the train split is empty")
    names = [s.name for s in context.baseline.inputs]
    inputs = model_inputs(dataset.train, names)
    labels = dataset.train.y
    teacher = None
    if labels is None:
        if task_of(context.baseline) != "classification":
            notes.append("not fine-tuned: no labels, and the model is not a classifier whose outputs could be "
                         "imitated instead")
            return None
        teacher = teacher_outputs(context, inputs)
        notes.append("no labels: fine-tuned to reproduce the unpruned model's outputs (soft targets)")
    eval_inputs = model_inputs(dataset.eval, names) if dataset.eval.y is not None else None
    return fit(module, inputs, labels=labels, teacher_logits=teacher, alpha=0.0 if labels is not None else 1.0,
               temperature=1.0, epochs=config.finetune_epochs, lr=config.lr, batch_size=FINETUNE_BATCH,
               seed=context.seed, context=context, masks=masks, eval_inputs=eval_inputs,
               eval_labels=dataset.eval.y, what="fine-tune", progress=(0.2, 0.8))


@register(PruneConfig)
def prune(config: PruneConfig, candidate: Candidate, context: StepContext) -> Candidate:
    """Prune the candidate as the config says, then fine-tune it if asked.

    Torch models: unstructured (magnitude masks), structured (channels removed with torch-pruning) or 2:4.
    ONNX-only models: unstructured only, on the weight initializers, without fine-tuning.

    Raises:
        UnsupportedModelError: structured or 2:4 on an ONNX-only model, or a model torch-pruning cannot trace
            (the message names the layer).
    """
    notes = list(candidate.notes)
    info = dict(candidate.info)
    info["prune_method"] = config.method
    if candidate.torch_module is None:
        if config.method != "unstructured":
            raise UnsupportedModelError(NEEDS_TORCH if config.method == "structured"
                                        else NEEDS_TORCH.replace("structured pruning", "2:4 pruning", 1))
        if candidate.onnx_model is None:
            raise UnsupportedModelError("pruning found neither a torch module nor an ONNX graph")
        context.report(f"zeroing {config.amount:.0%} of the ONNX weights ({config.scope})", 0.1)
        info.update(prune_onnx(candidate.onnx_model, config))
        notes.append(UNSTRUCTURED_NOTE)
        if config.finetune_epochs:
            notes.append("not fine-tuned: an ONNX-only model has no torch weights to train (upload the "
                         ".pt/.safetensors weights of a supported architecture to fine-tune)")
        return dataclasses.replace(candidate, info=info, notes=notes)

    module = candidate.torch_module
    layers = dict(prunable_layers(module))
    masks: dict = {}
    if config.method == "structured":
        context.report(f"removing {config.amount:.0%} of the channels ({config.scope})", 0.05)
        info.update(structured_prune(module, config, context))
        prunable = [v for name, v in info["channels_kept"].items() if name != info["head_layer"]]
        info["channels_removed_fraction"] = round(
            1 - sum(v["kept"] for v in prunable) / max(1, sum(v["of"] for v in prunable)), 6)
    else:
        if not layers:
            raise UnsupportedModelError("pruning found no Conv or Linear layer in the model")
        weights = {name: layer.weight.detach().cpu().numpy() for name, layer in layers.items()}
        if config.method == "unstructured":
            context.report(f"zeroing {config.amount:.0%} of the weights ({config.scope})", 0.05)
            keep = magnitude_masks(weights, config.amount, config.scope)
            notes.append(UNSTRUCTURED_NOTE)
        else:
            context.report("applying 2:4 masks", 0.05)
            keep = {name: m for name, m in ((n, two_four_mask(w)) for n, w in weights.items()) if m is not None}
            skipped = sorted(set(weights) - set(keep))
            if not keep:
                raise UnsupportedModelError("2:4 pruning needs layers whose input dimension is a multiple of 4; "
                                            f"none here ({', '.join(skipped)})")
            if skipped:
                info["skipped_layers"] = skipped
                notes.append(f"2:4 skipped {', '.join(skipped)}: input dimension not a multiple of 4")
            notes.append(SEMI_STRUCTURED_NOTE)
        masks = _apply_masks(layers, keep)
    context.check_stop()
    curve = _finetune(module, config, context, masks, notes)
    if curve is not None:
        info["finetune_curve"] = curve
    if config.method != "structured":
        weights = {name: layer.weight.detach().cpu().numpy() for name, layer in layers.items()}
        info["sparsity"], info["layer_sparsity"] = _sparsity(weights)
    module.eval()
    return dataclasses.replace(candidate, onnx_model=None, torch_module=module, info=info, notes=notes)
