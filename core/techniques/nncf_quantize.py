"""Static int8 for OpenVINO: NNCF's post-training quantization of the ONNX graph (`quantize.target: openvino`), whose
Q/DQ layout OpenVINO's CPU plugin fuses into int8 kernels."""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np

from core.errors import BadInputError, StepFailedError
from core.io.graph import attention_softmaxes, fixed_batch_size, quantized_layer_names, quantized_nodes
from core.io.model import ensure_opset
from core.io.openvino_runtime import import_offline
from core.io.repair import drop_initializer_inputs
from core.spec.recipe import QuantizeConfig, key_list
from core.techniques import Candidate, StepContext


def nncf_version() -> str | None:
    """The installed NNCF release, or None."""
    try:
        from importlib.metadata import version

        return version("nncf")
    except Exception:  # noqa: BLE001 - not installed, or metadata unreadable
        return None


def quantize_for_openvino(config: QuantizeConfig, candidate: Candidate, context: StepContext) -> Candidate:
    """`nncf.quantize` on the candidate's ONNX graph, calibrated on the calibration split.

    The options map onto NNCF's: `per_channel` (weights; activations are per tensor, as NNCF's CPU preset does),
    `samples` (its subset size, one sample per item), `exclude` (its ignored scope, node names checked),
    `bias_correction` (its fast bias correction; off: no bias correction at all), activation ranges by min/max.
    A graph with attention is quantized as NNCF's transformer model type.

    Raises:
        BadInputError: NNCF is not installed, or `exclude` names nodes the graph does not have.
        StepFailedError: NNCF failed on this graph.
    """
    try:
        nncf = import_offline("nncf")
    except ImportError:
        raise BadInputError("quantize.target='openvino' needs NNCF: pip install 'featherweight[openvino]' "
                            "(or `make setup`)") from None
    from nncf.common.logging import nncf_logger
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    import onnx

    nncf_logger.setLevel(logging.ERROR)
    proto = onnx.ModelProto()
    proto.CopyFrom(candidate.onnx_model)
    proto = drop_initializer_inputs(ensure_opset(proto))
    names = {n.name for n in proto.graph.node}
    unknown = [n for n in config.exclude if n not in names]
    if unknown:
        raise BadInputError(f"quantize.exclude names unknown node(s) {key_list(unknown)}; allowed: "
                            f"{key_list(names)}")
    inputs = context.dataset.calibration_inputs(config.samples)
    used = min(config.samples, len(next(iter(inputs.values()))))
    step = fixed_batch_size(proto) or 1  # one sample per item, as NNCF's statistics expect; a fixed batch as it is
    items = []
    for start in range(0, used, step):
        item = {k: v[start:start + step] for k, v in inputs.items()}
        if len(next(iter(item.values()))) < step:
            item = {k: np.resize(v, (step, *v.shape[1:])) for k, v in item.items()}
        items.append(item)
    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
        weights_quantization_params=None if config.per_channel else QuantizationParameters(per_channel=False),
        disable_bias_correction=not config.bias_correction)
    attention = attention_softmaxes(proto)
    context.report(f"NNCF: calibrating on {used} samples (min/max) and quantizing for OpenVINO", 0.2)
    # NNCF draws rich progress bars on stdout whatever its log level; the step reports its own progress
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            quantized = nncf.quantize(proto, nncf.Dataset(items), subset_size=len(items),
                                      target_device=nncf.TargetDevice.CPU, fast_bias_correction=True,
                                      model_type=nncf.ModelType.TRANSFORMER if attention else None,
                                      ignored_scope=nncf.IgnoredScope(names=list(config.exclude)) if config.exclude
                                      else None, advanced_parameters=advanced)
        except Exception as exc:  # noqa: BLE001 - NNCF raises its own and onnxruntime's exception types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc.__class__.__name__
            raise StepFailedError(f"quantize (NNCF, for OpenVINO) failed: {first}") from None
    info = dict(candidate.info)
    info.update({"quantizer": f"NNCF {nncf_version() or ''}".strip(), "target": "openvino",
                 "calibration_samples": used, "quantized_nodes": quantized_nodes(quantized),
                 "quantized_layers": quantized_layer_names(quantized),
                 "excluded_nodes": list(config.exclude), "bias_correction": bool(config.bias_correction)})
    if attention:
        info["attention_softmaxes"] = len(attention)
    notes = list(candidate.notes)
    if not info["quantized_nodes"]:
        notes.append("no node was quantized: the variant is the float model")
    return Candidate(onnx_model=quantized, torch_module=None, architecture=candidate.architecture, info=info,
                     notes=notes)


__all__ = ["nncf_version", "quantize_for_openvino"]
