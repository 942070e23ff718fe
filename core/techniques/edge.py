"""The edge runtime's export: a torch module to an ExecuTorch program (.pte) lowered to the XNNPACK delegate, in fp32
or in int8 through ExecuTorch's PT2E quantizer (XNNPACKQuantizer), with the share of operators the delegate took."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import UnsupportedModelError

# Nodes that are plumbing, not operators, in an ExecuTorch edge graph: the delegate call itself, the tuple
# unpacking of its outputs, and symbolic-size reads of the dynamic batch axis.
_PLUMBING = ("executorch_call_delegate", "getitem", "sym_size", "_assert", "sym_constrain")
# Quantize / dequantize nodes are how PT2E writes int8 down, not work: inside a delegate XNNPACK folds them into its
# int8 kernels, so they are not counted there; left outside they run as portable kernels, and are counted.
_QUANT_NODES = ("quantize_per_", "dequantize_per_", "choose_qparams")


@dataclass
class EdgeExport:
    """One .pte program and what lowering it did: its precision, the operators the XNNPACK delegate took and the
    ones left to ExecuTorch's portable kernels, and the largest batch it runs (memory is planned for it)."""

    program: bytes
    precision: str  # "fp32" | "int8"
    delegated_ops: int
    total_ops: int
    undelegated: dict = field(default_factory=dict)  # operator -> count, those the delegate did not take
    max_batch: int = 1
    reference: Any = None  # the torch module the program was lowered from (PT2E's quantized module for int8)
    quantizer: str | None = None

    @property
    def delegated_share(self) -> float:
        return self.delegated_ops / self.total_ops if self.total_ops else 0.0

    def summary(self) -> dict:
        """What results.json records of the export."""
        return {"precision": self.precision, "size_bytes": len(self.program), "delegate": "XNNPACK",
                "delegated_ops": self.delegated_ops, "total_ops": self.total_ops,
                "delegated_share": round(self.delegated_share, 4), "undelegated_ops": dict(self.undelegated),
                "max_batch": self.max_batch, "quantizer": self.quantizer}


def edge_plan(steps: list[dict], has_torch_module: bool, input_count: int = 1) -> tuple[str | None, str | None]:
    """Which ExecuTorch export a variant gets from its steps (as dicts, results.json's `steps`): ("fp32" | "int8",
    None), or (None, why not).

    Variants without a quantize step export their torch module in fp32 (the baseline, pruned and distilled ones);
    static int8 exports through the PT2E quantizer with the step's per-channel choice and calibration samples.
    Other quantize modes, and options only the ONNX quantizer has, are not rebuilt for the edge runtime.
    """
    if not has_torch_module:
        return None, "no torch module: ExecuTorch exports from torch (an ONNX-only model cannot be lowered)"
    if input_count != 1:
        return None, "ExecuTorch export here takes models with one input"
    quantize = [s for s in steps if s.get("technique") == "quantize"]
    if not quantize:
        return "fp32", None
    step = quantize[0]
    mode = step.get("mode", "static")
    if mode != "static":
        return None, (f"quantize mode {mode!r} has no ExecuTorch counterpart here (XNNPACK's int8 path is static "
                      "PT2E)")
    extras = [name for name in ("exclude", "equalize", "bias_correction", "calibration_overrides") if step.get(name)]
    if step.get("calibration", "minmax") != "minmax":
        extras.append("calibration")
    if extras:
        return None, f"{', '.join(extras)} belong to the ONNX quantizers; the PT2E export has no such option"
    return "int8", None


def export_pte(module, example: np.ndarray, *, max_batch: int, int8: bool = False, per_channel: bool = True,
               calibration: np.ndarray | None = None, calibration_batch: int = 32) -> EdgeExport:
    """Lower `module` to an ExecuTorch program with the XNNPACK delegate.

    Args:
        module: the torch module (its input: one float tensor, batch axis first).
        example: one or more real input samples (their per-sample shape is what the program takes).
        max_batch: the largest batch the program must run; its batch axis is dynamic in [1, max_batch] and
            memory is planned for max_batch (ExecuTorch plans every tensor for its upper bound).
        int8: quantize through PT2E with XNNPACKQuantizer (symmetric int8; per-channel weights when
            `per_channel`), calibrated on `calibration`.

    Raises:
        UnsupportedModelError: torch.export, the quantizer or the lowering rejected the module.
    """
    import torch  # heavy
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    logging.getLogger("torchao").setLevel(logging.ERROR)
    module = module.eval()
    sample = torch.from_numpy(np.ascontiguousarray(example[:1]))
    # torch.export specializes a dynamic axis whose example size is 1; the example's batch is the upper bound
    batch = max(2, int(max_batch))
    example_batch = sample.expand(batch, *sample.shape[1:]).contiguous()
    dynamic = ({0: torch.export.Dim("batch", min=1, max=batch)},)
    quantizer_name = None
    stage = "torch.export"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            with torch.no_grad():
                exported = torch.export.export(module, (example_batch,), dynamic_shapes=dynamic)
                reference = module
                if int8:
                    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                        XNNPACKQuantizer, get_symmetric_quantization_config)
                    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

                    stage = "PT2E quantization"
                    quantizer = XNNPACKQuantizer().set_global(
                        get_symmetric_quantization_config(is_per_channel=per_channel))
                    prepared = prepare_pt2e(exported.module(), quantizer)
                    data = calibration if calibration is not None else example
                    for start in range(0, len(data), calibration_batch):
                        prepared(torch.from_numpy(np.ascontiguousarray(data[start:start + calibration_batch])))
                    reference = convert_pt2e(prepared)
                    exported = torch.export.export(reference, (example_batch,), dynamic_shapes=dynamic)
                    granularity = "per-channel" if per_channel else "per-tensor"
                    quantizer_name = f"XNNPACKQuantizer (symmetric int8, {granularity} weights)"
                stage = "lowering to XNNPACK"
                lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
                delegated, total, undelegated = delegation_counts(lowered.exported_program().graph_module)
                stage = "ExecuTorch program"
                program = lowered.to_executorch().buffer
    except Exception as exc:  # noqa: BLE001 - export, quantization and lowering raise many types
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc.__class__.__name__
        raise UnsupportedModelError(f"ExecuTorch export failed at {stage}: {first}") from None
    return EdgeExport(bytes(program), "int8" if int8 else "fp32", delegated, total, undelegated, batch, reference,
                      quantizer_name)


def delegation_counts(graph_module) -> tuple[int, int, dict]:
    """(operators inside XNNPACK delegates, all operators, {operator: count} of those left outside) of a lowered
    edge graph; plumbing nodes (the delegate call, tuple unpacking, size reads) are not operators."""
    def is_operator(node) -> bool:
        return node.op == "call_function" and not any(p in str(node.target) or p in node.name for p in _PLUMBING)

    delegated = 0
    undelegated: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            lowered = getattr(graph_module, node.name)
            delegated += sum(1 for inner in lowered.original_module.graph.nodes
                             if is_operator(inner) and not any(q in str(inner.target) for q in _QUANT_NODES))
        elif is_operator(node):
            name = _aten_name(node)
            undelegated[name] = undelegated.get(name, 0) + 1
    return delegated, delegated + sum(undelegated.values()), undelegated


def _aten_name(node) -> str:
    """'aten.view_copy' for an edge operator node (its overload and schema dropped)."""
    text = str(node.target)
    if "EdgeOpOverload" in text:  # "<EdgeOpOverload: aten.view_copy.default>: schema = ..."
        text = text.split(":", 1)[1].split(">", 1)[0].strip()
    parts = text.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else text


__all__ = ["EdgeExport", "delegation_counts", "edge_plan", "export_pte"]
