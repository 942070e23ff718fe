"""How a step reads in a table, a chart and a page: one short label per step ('quantize static',
'prune structured 50%', 'distill to width 0.25'), the same in the results table, Learn, the tuner and the
Optimize page."""

from __future__ import annotations

from typing import Any

from core.spec.recipe import DistillConfig, PruneConfig, QuantizeConfig, StepConfig


# What a quantize mode builds for a decoder (core.techniques.decoder): weight-only MatMulNBits at both precisions
DECODER_QUANTIZE = {"int4": "int4 weight-only", "dynamic": "int8 weight-only"}


def step_label(step: dict | StepConfig, decoder: bool = False) -> str:
    """A step (a results.json / recipe dict, or a step config) as a short label; an option the dict leaves out
    reads as the config's default. For a decoder (`decoder`), a quantize step says what it builds there.

    Returns:
        'quantize static', 'prune structured 50%', 'distill to width 0.25', 'int8 weight-only' (a decoder's
        dynamic mode); another technique by its name.
    """
    data: dict[str, Any] = step.to_dict() if isinstance(step, StepConfig) else dict(step or {})
    technique = data.get("technique")
    if technique == "quantize" and decoder and data.get("mode", QuantizeConfig.mode) in DECODER_QUANTIZE:
        mode = data.get("mode", QuantizeConfig.mode)
        block = data.get("block_size", QuantizeConfig.block_size)
        return DECODER_QUANTIZE[mode] + (f", block {block}" if mode == "int4" and block != QuantizeConfig.block_size
                                         else "")
    if technique == "quantize":
        target = data.get("target", QuantizeConfig.target)
        suffix = f" for {target}" if target != "onnxruntime" else ""
        return f"quantize {data.get('mode', QuantizeConfig.mode)}{suffix}" + quantize_options_label(data)
    if technique == "prune":
        amount = data.get("amount", PruneConfig.amount)
        amount = f"{amount:.0%}" if isinstance(amount, (int, float)) else str(amount)
        return f"prune {data.get('method', PruneConfig.method)} {amount}"
    if technique == "distill":
        width = data.get("width", DistillConfig.width)
        return f"distill to width {width:g}" if isinstance(width, (int, float)) else f"distill to width {width}"
    return str(technique)


def quantize_options_label(data: dict) -> str:
    """The options that set a quantize step apart from the plain one of its mode, as a suffix: ", per tensor,
    percentile, 2 layers in float"; empty for the defaults (so a plain step reads "quantize static")."""
    mode = data.get("mode", QuantizeConfig.mode)
    parts = []
    if mode in ("static", "qat", "dynamic") and data.get("per_channel", True) is False:
        parts.append("per tensor")
    if mode == "static" and data.get("calibration", "minmax") not in ("minmax", None):
        parts.append(str(data["calibration"]))
    if data.get("equalize"):
        parts.append("equalized")
    if data.get("weight_rounding") == "learned":
        parts.append("learned rounding")
    if data.get("bias_correction"):
        parts.append("bias-corrected")
    if data.get("smooth_quant"):
        parts.append("SmoothQuant")
    if data.get("calibration_overrides"):
        parts.append("calibration per tensor")
    if mode == "int4" and data.get("block_size", 32) != 32:
        parts.append(f"block {data['block_size']}")
    excluded = data.get("exclude") or []
    if excluded:
        parts.append(f"{len(excluded)} layer{'s' if len(excluded) != 1 else ''} in float")
    return ", " + ", ".join(parts) if parts else ""


def steps_label(steps, separator: str = " + ", decoder: bool = False) -> str:
    """A variant's steps as one label ('prune structured 50% + quantize static'); 'none' without steps."""
    return separator.join(step_label(s, decoder) for s in steps or []) or "none"


__all__ = ["quantize_options_label", "step_label", "steps_label"]
