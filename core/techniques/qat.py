"""Quantization-aware fine-tuning (QAT) for torch-backed models, exported as QDQ ONNX that onnxruntime runs.

The scheme is the one onnxruntime's static int8 uses, so what is trained is what runs: BN folded into the conv
before it; symmetric int8 weights (levels -127..127, zero point 0), one scale per output channel (or per tensor
with ``per_channel: false``); per-tensor asymmetric uint8 activations at every Conv / Gemm input. Weights,
weight scales and activation scales / zero points are
learned together (LSQ+, Bhalgat et al. 2020, through torch's learnable fake-quant ops), for a few epochs, with the
fp32 model as the teacher (distillation, Hinton et al. 2015), so no labels are needed.

Export: the fine-tuned float module is exported to ONNX and quantized by onnxruntime's QDQ quantizer (which
places the Q/DQ nodes); then every matched Conv / Gemm gets the learned scales written into its Q/DQ
initializers and its int8 weights and int32 bias requantized with them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import numpy as np

from core.errors import UnsupportedModelError
from core.io.model import export_onnx
from core.spec.recipe import QatInt8Config, StaticInt8Config
from core.techniques import Candidate, StepContext, register

QAT_BATCH = 64
TEMPERATURE = 2.0  # soft targets; the loss is T^2 * KL(teacher_T || student_T)
SCALE_LR_FACTOR = 0.1  # scales move 10x slower than weights: a weight scale of 0.005 must not jump by 1e-4 a step
WEIGHT_QMIN, WEIGHT_QMAX = -127, 127  # onnxruntime's symmetric int8 weight range
ACT_QMIN, ACT_QMAX = 0, 255


def fuse_batch_norms(module) -> int:
    """Fold every BatchNorm that directly follows a Conv inside an ``nn.Sequential`` into that Conv (eval-mode
    statistics), as the ONNX exporter does; returns how many were folded."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in module.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)  # noqa: SLF001 - Sequential keeps its children here, in order
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]  # noqa: SLF001
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                parent._modules[first] = fuse_conv_bn_eval(conv.eval(), bn.eval())  # noqa: SLF001
                parent._modules[second] = nn.Identity()  # noqa: SLF001
                folded += 1
    return folded


@functools.lru_cache(maxsize=None)
def _fake_quant_class():
    """FakeQuantLayer, defined on first use so importing this module does not import torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FakeQuantLayer(nn.Module):
        """A Conv2d / Linear whose input and weight pass through learnable fake quantization."""

        def __init__(self, layer: nn.Module, per_channel: bool = True):
            super().__init__()
            self.layer = layer
            self.per_channel = per_channel
            weight = layer.weight.detach()
            absmax = weight.abs().reshape(weight.shape[0], -1).amax(1) if per_channel else weight.abs().max()[None]
            self.weight_scale = nn.Parameter(absmax.clamp_min(1e-8) / WEIGHT_QMAX)
            self.register_buffer("weight_zero", torch.zeros(len(absmax)))
            self.act_scale = nn.Parameter(torch.ones(1))
            self.act_zero = nn.Parameter(torch.zeros(1))
            self.observing = False  # first pass: record the input range (minmax calibration)
            self.register_buffer("seen_min", torch.zeros(1))
            self.register_buffer("seen_max", torch.zeros(1))

        def start_from_range(self) -> None:
            low, high = float(min(self.seen_min, 0.0)), float(max(self.seen_max, 0.0))
            scale = max((high - low) / (ACT_QMAX - ACT_QMIN), 1e-8)
            with torch.no_grad():
                self.act_scale.fill_(scale)
                self.act_zero.fill_(float(np.clip(round(ACT_QMIN - low / scale), ACT_QMIN, ACT_QMAX)))

        def forward(self, x):
            if self.observing:
                self.seen_min = torch.minimum(self.seen_min, x.detach().min().reshape(1))
                self.seen_max = torch.maximum(self.seen_max, x.detach().max().reshape(1))
                return self._run(x, self.layer.weight)
            xq = torch._fake_quantize_learnable_per_tensor_affine(  # noqa: SLF001 - torch's LSQ+ op
                x, self.act_scale, self.act_zero, ACT_QMIN, ACT_QMAX, 1.0)
            if self.per_channel:
                wq = torch._fake_quantize_learnable_per_channel_affine(  # noqa: SLF001
                    self.layer.weight, self.weight_scale, self.weight_zero, 0, WEIGHT_QMIN, WEIGHT_QMAX, 1.0)
            else:
                wq = torch._fake_quantize_learnable_per_tensor_affine(  # noqa: SLF001
                    self.layer.weight, self.weight_scale, self.weight_zero, WEIGHT_QMIN, WEIGHT_QMAX, 1.0)
            return self._run(xq, wq)

        def _run(self, x, weight):
            layer = self.layer
            if isinstance(layer, nn.Linear):
                return F.linear(x, weight, layer.bias)
            return layer._conv_forward(x, weight, layer.bias)  # noqa: SLF001 - Conv2d's own padding logic

    return FakeQuantLayer


def wrap_layers(module, per_channel: bool = True) -> list:
    """Replace every Conv2d / Linear of `module` with a FakeQuantLayer (one weight scale per output channel, or one
    per tensor); returns (qualified name, wrapper)."""
    from torch import nn

    wrapper = _fake_quant_class()
    wrapped = []
    for name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (nn.Conv2d, nn.Linear)) and not isinstance(parent, wrapper):
                fq = wrapper(child, per_channel)
                setattr(parent, child_name, fq)
                wrapped.append((f"{name}.{child_name}" if name else child_name, fq))
    return wrapped


def _batches(x: np.ndarray, batch: int, generator):
    import torch

    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch):
        yield torch.from_numpy(np.ascontiguousarray(x[order[start:start + batch].numpy()]))


def _scale_initializers(quantized, node, inits: dict, producers: dict):
    """(activation DQ, weight DQ, bias DQ) feeding `node` in the QDQ graph; None where a slot is not quantized."""
    def dq(position):
        if len(node.input) <= position or not node.input[position]:
            return None
        source = producers.get(node.input[position])
        return source if source is not None and source.op_type == "DequantizeLinear" else None

    return dq(0), dq(1), dq(2)


def write_learned_scales(quantized, float_proto, learned: dict) -> int:
    """Write learned scales into the QDQ graph `quantized` (in place) and requantize weights and biases.

    Args:
        quantized: onnxruntime's QDQ model of `float_proto`.
        float_proto: the exported fine-tuned float model (node names as in `quantized`).
        learned: node name -> (act_scale, act_zero, weight_scale array), from the trained wrappers.

    Returns:
        How many layers carry their learned scales.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in quantized.graph.initializer}
    float_inits = {i.name: i for i in float_proto.graph.initializer}
    float_nodes = {n.name: n for n in float_proto.graph.node if n.name}
    producers = {o: n for n in quantized.graph.node for o in n.output}

    def put(name, array):
        inits[name].CopyFrom(numpy_helper.from_array(array, name))

    written = 0
    for node in quantized.graph.node:
        if node.name not in learned or node.name not in float_nodes:
            continue
        act_scale, act_zero, weight_scale = learned[node.name]
        act_dq, weight_dq, bias_dq = _scale_initializers(quantized, node, inits, producers)
        if act_dq is None or weight_dq is None:
            continue
        float_node = float_nodes[node.name]
        weight = numpy_helper.to_array(float_inits[float_node.input[1]]).astype(np.float64)
        axis = next((helper.get_attribute_value(a) for a in weight_dq.attribute if a.name == "axis"), 1)
        scale_size = numpy_helper.to_array(inits[weight_dq.input[1]]).size
        if scale_size != np.asarray(weight_scale).size or (scale_size > 1 and (axis % weight.ndim) != 0):
            continue  # another granularity or channel axis than was trained: keep onnxruntime's scales
        # Activation: the Q and DQ of this tensor share their scale / zero point initializers.
        zero_dtype = numpy_helper.to_array(inits[act_dq.input[2]]).dtype if len(act_dq.input) > 2 else np.uint8
        put(act_dq.input[1], np.asarray(act_scale, dtype=np.float32).reshape(
            numpy_helper.to_array(inits[act_dq.input[1]]).shape))
        if len(act_dq.input) > 2:
            put(act_dq.input[2], np.asarray(np.clip(np.round(act_zero), ACT_QMIN, ACT_QMAX), dtype=zero_dtype)
                .reshape(numpy_helper.to_array(inits[act_dq.input[2]]).shape))
        source_q = producers.get(act_dq.input[0])
        if source_q is not None and source_q.op_type == "QuantizeLinear":  # in case it has its own copies
            for position in (1, 2):
                if len(source_q.input) > position and source_q.input[position] != act_dq.input[position]:
                    put(source_q.input[position], numpy_helper.to_array(inits[act_dq.input[position]]))
        # Weights: int8 = clip(round(w / s)) per output channel, with the learned s.
        scale = np.asarray(weight_scale, dtype=np.float32).reshape(
            numpy_helper.to_array(inits[weight_dq.input[1]]).shape)
        shape = (-1,) + (1,) * (weight.ndim - 1) if scale.size > 1 else ()
        q = np.clip(np.round(weight / scale.astype(np.float64).reshape(shape)), WEIGHT_QMIN, WEIGHT_QMAX)
        put(weight_dq.input[0], q.astype(np.int8))
        put(weight_dq.input[1], scale)
        if bias_dq is not None and len(float_node.input) > 2 and float_node.input[2] in float_inits:
            bias = numpy_helper.to_array(float_inits[float_node.input[2]]).astype(np.float64)
            bias_scale = (float(act_scale) * scale.astype(np.float64)).astype(np.float32)
            bias_scale = bias_scale.reshape(numpy_helper.to_array(inits[bias_dq.input[1]]).shape) \
                if bias_scale.size == numpy_helper.to_array(inits[bias_dq.input[1]]).size else bias_scale
            info = np.iinfo(np.int32)
            put(bias_dq.input[0], np.clip(np.round(bias / bias_scale), info.min, info.max).astype(np.int32))
            put(bias_dq.input[1], bias_scale)
        written += 1
    return written


def _match_layers(float_proto, wrapped) -> dict:
    """ONNX node name -> wrapper, matching each Conv / Gemm to the torch layer with exactly its weights."""
    from onnx import numpy_helper

    inits = {i.name: i for i in float_proto.graph.initializer}
    by_weight: dict = {}
    for _, fq in wrapped:
        weight = fq.layer.weight.detach().numpy()
        by_weight.setdefault((weight.shape, weight.tobytes()), fq)
    matched = {}
    for node in float_proto.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            weight = numpy_helper.to_array(inits[node.input[1]])
            fq = by_weight.get((weight.shape, weight.tobytes()))
            if fq is not None:
                matched[node.name] = fq
    return matched


@register(QatInt8Config)
def quantize_aware_training(config: QatInt8Config, candidate: Candidate, context: StepContext) -> Candidate:
    """The ``mode: qat`` quantize step: fine-tune with fake quantization, export QDQ ONNX with the learned scales.

    The fine-tuned model goes through the static int8 step (`core.techniques.static`, onnxruntime's QDQ quantizer)
    like any static int8 model, then gets the learned scales.

    Raises:
        UnsupportedModelError: no torch module (an ONNX-only upload), or nothing to quantize.
    """
    import torch

    if candidate.torch_module is None:
        raise UnsupportedModelError("QAT needs the model's torch module; an ONNX-only model has no weights to "
                                    "train (use static quantization with equalize / bias_correction)")
    torch.manual_seed(context.seed)
    generator = torch.Generator().manual_seed(context.seed)
    teacher = copy.deepcopy(candidate.torch_module).eval()
    student = copy.deepcopy(candidate.torch_module).eval()
    folded = fuse_batch_norms(student)
    wrapped = wrap_layers(student, config.per_channel)
    if not wrapped:
        raise UnsupportedModelError("QAT found no Conv2d / Linear layer to quantize")
    train_x = context.dataset.train.first
    if not len(train_x):
        raise UnsupportedModelError("QAT fine-tunes on the train split, and this data has none (a run that no step "
                                    "trains keeps none; sample:photos has none): use static quantization")
    calib_x = context.dataset.calib.take(config.samples).first

    context.report(f"observing ranges on {len(calib_x)} calibration samples", 0.02)
    for _, fq in wrapped:
        fq.observing = True
    with torch.no_grad():
        for start in range(0, len(calib_x), QAT_BATCH):
            student(torch.from_numpy(np.ascontiguousarray(calib_x[start:start + QAT_BATCH])))
    for _, fq in wrapped:
        fq.observing = False
        fq.start_from_range()

    scales = [p for _, fq in wrapped for p in (fq.weight_scale, fq.act_scale, fq.act_zero)]
    scale_ids = {id(p) for p in scales}
    weights = [p for p in student.parameters() if id(p) not in scale_ids]
    start = [p.detach().clone() for p in weights + scales]  # to measure what training moved
    optimizer = torch.optim.Adam([{"params": weights, "lr": config.lr},
                                  {"params": scales, "lr": config.lr * SCALE_LR_FACTOR}])
    steps = config.epochs * -(-len(train_x) // QAT_BATCH)
    done = 0
    last_loss = None
    for epoch in range(config.epochs):
        student.train()
        for xb in _batches(train_x, QAT_BATCH, generator):
            context.check_stop()
            with torch.no_grad():
                target = torch.softmax(teacher(xb) / TEMPERATURE, dim=1)
            log_p = torch.log_softmax(student(xb) / TEMPERATURE, dim=1)
            loss = torch.nn.functional.kl_div(log_p, target, reduction="batchmean") * TEMPERATURE ** 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # scales stay positive, zero points inside the uint8 range
                for _, fq in wrapped:
                    fq.weight_scale.clamp_(min=1e-8)
                    fq.act_scale.clamp_(min=1e-8)
                    fq.act_zero.clamp_(ACT_QMIN, ACT_QMAX)
            done += 1
            last_loss = float(loss.detach())
            context.report(f"QAT epoch {epoch + 1}/{config.epochs}, distillation loss {last_loss:.4f}",
                           0.05 + 0.7 * done / steps)
    student.eval()
    with torch.no_grad():
        moved = {"weights": _relative_change(weights, start[:len(weights)]),
                 "scales": _relative_change(scales, start[len(weights):])}

    # The fine-tuned float model, plain layers back in place, exported and quantized by onnxruntime.
    learned_by_layer = {}
    for name, fq in wrapped:
        zero = float(np.clip(round(float(fq.act_zero.detach())), ACT_QMIN, ACT_QMAX))
        learned_by_layer[id(fq.layer)] = (float(fq.act_scale.detach()), zero,
                                          fq.weight_scale.detach().numpy().astype(np.float32).copy())
    plain = _unwrap(student, wrapped)
    baseline = context.baseline
    example = torch.from_numpy(np.ascontiguousarray(context.dataset.eval.first[:1]))
    float_proto = export_onnx(plain, example, input_name=baseline.inputs[0].name,
                              output_name=baseline.outputs[0].name)
    layer_by_node = _match_layers(float_proto, [(n, fq) for n, fq in wrapped])
    learned = {node: learned_by_layer[id(fq.layer)] for node, fq in layer_by_node.items()}
    context.report("exporting QDQ ONNX with the learned scales", 0.8)
    from core.techniques.static import quantize_static_int8  # the static step this one ends in

    static = StaticInt8Config(per_channel=config.per_channel, calibration="minmax", samples=config.samples,
                              exclude=config.exclude)
    result = quantize_static_int8(static, dataclasses.replace(candidate, onnx_model=float_proto), context)
    written = write_learned_scales(result.onnx_model, float_proto, learned)
    info = dict(result.info)
    info["qat"] = {"epochs": config.epochs, "lr": config.lr, "folded_batch_norms": folded,
                   "fake_quant_layers": len(wrapped), "learned_scales_written": written,
                   "final_distillation_loss": round(last_loss, 6) if last_loss is not None else None,
                   "relative_change": moved,
                   "train_samples": int(len(train_x))}
    return Candidate(onnx_model=result.onnx_model, torch_module=plain, architecture=candidate.architecture,
                     info=info, notes=result.notes)


def _relative_change(after: list, before: list) -> float:
    """||after - before|| / ||before|| over a list of tensors: how far training moved them (0: not at all)."""
    import torch

    moved = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before)))
    size = torch.sqrt(sum((b ** 2).sum() for b in before))
    return round(float(moved / size) if float(size) > 0 else 0.0, 8)


def _unwrap(module, wrapped):
    """`module` with each FakeQuantLayer replaced by the layer it wraps (the trained float weights)."""
    wrapper = _fake_quant_class()
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, wrapper):
                setattr(parent, child_name, child.layer)
    return module
