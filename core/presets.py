"""Recipe presets: a good starting recipe for a goal, fitted to the model (its ops, whether we have its torch
module) and to the techniques this build has."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

from core.recipe import (BenchmarkConfig, DistillConfig, PruneConfig, QuantizeConfig, Recipe, Variant,
                         default_recipe)


@dataclass(frozen=True)
class Preset:
    """A named goal and the function that builds its variants for a model card."""

    name: str
    description: str
    build: Callable[[dict], list]


def technique_available(technique: str) -> bool:
    """Whether this build ships the technique's module (prune and distill arrive as separate modules)."""
    return importlib.util.find_spec(f"core.techniques.{technique}") is not None


def _facts(card: dict) -> dict:
    ops = set((card.get("op_types") or {}))
    return {"torch": card.get("format") == "torch+onnx", "matmul": bool(ops & {"MatMul", "Gemm"}),
            "conv": "Conv" in ops, "classifier": card.get("task") == "classification",
            "architecture": card.get("architecture")}


def _fastest(card: dict) -> list:
    f = _facts(card)
    variants = [Variant("int8-static", (QuantizeConfig(mode="static"),))]
    if f["matmul"] and not f["conv"]:
        variants.append(Variant("int8-dynamic", (QuantizeConfig(mode="dynamic"),)))
    if f["torch"]:
        variants.append(Variant("pruned50-int8", (PruneConfig(method="structured", amount=0.5, finetune_epochs=10),
                                                  QuantizeConfig(mode="static"))))
    return variants


def _smallest(card: dict) -> list:
    f = _facts(card)
    variants = [Variant("int8-static", (QuantizeConfig(mode="static"),))]
    if f["matmul"]:
        variants.append(Variant("int4", (QuantizeConfig(mode="int4"),)))
    if f["torch"]:
        variants.append(Variant("pruned50-int8", (PruneConfig(method="structured", amount=0.5, finetune_epochs=10),
                                                  QuantizeConfig(mode="static"))))
        if f["classifier"] and f["architecture"]:
            variants.append(Variant("student-int8", (DistillConfig(width=0.25, epochs=40),
                                                     QuantizeConfig(mode="static"))))
    return variants


def _balanced(card: dict) -> list:
    f = _facts(card)
    if f["matmul"] and not f["conv"]:
        variants = [Variant("int8-dynamic", (QuantizeConfig(mode="dynamic"),))]
    else:
        variants = [Variant("int8-static", (QuantizeConfig(mode="static"),))]
    if f["torch"]:
        variants.append(Variant("pruned30-int8", (PruneConfig(method="structured", amount=0.3, finetune_epochs=5),
                                                  QuantizeConfig(mode="static"))))
    return variants


def _everything(card: dict) -> list:
    f = _facts(card)
    variants = [Variant("int8-dynamic", (QuantizeConfig(mode="dynamic"),)) if f["matmul"] else None,
                Variant("int8-static", (QuantizeConfig(mode="static"),)),
                Variant("fp16", (QuantizeConfig(mode="fp16"),)),
                Variant("int4", (QuantizeConfig(mode="int4"),)) if f["matmul"] else None]
    if f["torch"]:
        variants += [Variant("pruned50", (PruneConfig(method="structured", amount=0.5, finetune_epochs=10),)),
                     Variant("sparse80", (PruneConfig(method="unstructured", amount=0.8, finetune_epochs=10),)),
                     Variant("pruned50-int8", (PruneConfig(method="structured", amount=0.5, finetune_epochs=10),
                                               QuantizeConfig(mode="static")))]
        if f["classifier"] and f["architecture"]:
            variants.append(Variant("student", (DistillConfig(width=0.25, epochs=40, control=True),)))
    return [v for v in variants if v is not None]


def _quick(card: dict) -> list:
    return list(default_recipe().variants)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("Quick quantization", "dynamic int8, static int8 and fp16: a first look in seconds", _quick),
    Preset("Fastest on this CPU", "static int8, plus structured pruning where we have the torch model", _fastest),
    Preset("Smallest", "int8, int4 weights, pruning + int8 and a distilled student: the smallest files", _smallest),
    Preset("Balanced", "one int8 variant and a gently pruned one: small accuracy cost", _balanced),
    Preset("Compare everything", "one variant per technique, to see what each does", _everything),
)}


def preset_recipe(name: str, card: dict, *, model: str | None = None, data: str | None = None,
                  benchmark: BenchmarkConfig | None = None) -> tuple[Recipe, list[str]]:
    """Build preset `name` for a model card; variants whose technique this build lacks are left out.

    Returns:
        The recipe and the names of the variants left out (with why).

    Raises:
        KeyError: an unknown preset name (lists the allowed ones).
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    kept, skipped = [], []
    for variant in PRESETS[name].build(card):
        missing = sorted({s.technique for s in variant.steps if not technique_available(s.technique)})
        if missing:
            skipped.append(f"{variant.name} (needs {', '.join(missing)}, not in this build)")
        else:
            kept.append(variant)
    return Recipe(model=model, data=data, seed=0, benchmark=benchmark or BenchmarkConfig(),
                  variants=tuple(kept)), skipped
