"""Does another runtime compute the same model? A variant's outputs on OpenVINO (or an ExecuTorch program's) checked
against the same model's reference outputs on the same samples, failing loudly when they differ."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from core.errors import StepFailedError
from core.measure.quality import fidelity, relative_error

# "Same outputs": every output within 0.1% of the reference in relative L2 norm. Two fp32 runtimes on one graph
# differ by summation order only: digits-cnn and shapes-mobile measured 1e-6-1e-5 relative on OpenVINO and on
# ExecuTorch's XNNPACK against onnxruntime, so 1e-3 has two orders of margin.
SAME_RELATIVE_ERROR = 1e-3
# Otherwise a classifier must keep the reference's top-1 class on the samples whose reference margin is clear
# (core.measure.quality.CONFIDENT_MARGIN): int8 kernels of two runtimes round differently, which reshuffles
# near-ties, not clear decisions. shapes-mobile's ExecuTorch int8 program kept 98.6% of all top-1 classes of its
# PT2E reference module; a broken runtime (wrong layout, wrong scales) keeps chance level, ~1 / classes.
MIN_CONFIDENT_AGREEMENT = 0.97
# Other outputs (embeddings): the worst sample's cosine to the reference.
MIN_COSINE = 0.99
# A classifier with fewer clear samples than this (a near-uniform 1,000-class model on unlabelled crops) is judged
# by its logits instead: their mean cosine to the reference's (each row centred), at least MIN_COSINE. 20 clear samples put one
# disagreement at 5 points, already past the 97% bar, so fewer cannot tell rounding from a broken runtime.
MIN_CONFIDENT_SAMPLES = 20


@dataclass(frozen=True)
class RuntimeFidelity:
    """How one runtime's outputs compare with the reference's on the same samples, and which rule passed."""

    runtime: str
    reference: str
    samples: int
    relative_error: float | None
    max_abs_error: float | None
    agreement: float | None
    agreement_confident: float | None
    confident_samples: int | None
    cosine_min: float | None
    passed: bool
    rule: str  # what was required, in words

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("relative_error", "max_abs_error", "agreement", "agreement_confident", "cosine_min"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 6)
        return out


def compare_outputs(outputs: list[np.ndarray], reference: list[np.ndarray], task: str, *, runtime: str,
                    reference_name: str = "onnxruntime") -> RuntimeFidelity:
    """Judge `outputs` against `reference` (same samples, same order): the same within SAME_RELATIVE_ERROR, else
    (classifiers) top-1 agreement of at least MIN_CONFIDENT_AGREEMENT on the reference's clear samples (with fewer
    than MIN_CONFIDENT_SAMPLES of them: the logits' mean cosine of at least MIN_COSINE), else (other outputs)
    cosine of at least MIN_COSINE on every sample. NaN or infinite outputs, or a shape that differs, fail."""
    samples = len(reference[0]) if reference else 0
    shapes_match = len(outputs) == len(reference) and all(o.shape == r.shape for o, r in zip(outputs, reference))
    finite = shapes_match and all(np.isfinite(o).all() for o in outputs)
    if not finite:
        why = "its outputs are not finite" if shapes_match else (
            f"its output shapes {[o.shape for o in outputs]} differ from {[r.shape for r in reference]}")
        return RuntimeFidelity(runtime, reference_name, samples, None, None, None, None, None, None, False, why)
    error = max(relative_error(o, r) for o, r in zip(outputs, reference))
    fid = fidelity(outputs, reference, None, task)
    cosine_min = fid.cosine_min  # embeddings only: classifiers are judged by their top-1 classes
    if error <= SAME_RELATIVE_ERROR:
        passed, rule = True, f"same outputs (relative error {error:.1e} <= {SAME_RELATIVE_ERROR:.0e})"
    elif task == "classification" and (fid.confident_samples or 0) >= MIN_CONFIDENT_SAMPLES:
        confident = fid.agreement_confident
        passed = confident is not None and confident >= MIN_CONFIDENT_AGREEMENT
        rule = (f"top-1 agreement {confident:.1%} on the {fid.confident_samples} samples with a clear reference "
                f"class (at least {MIN_CONFIDENT_AGREEMENT:.0%} needed)")
    elif task == "classification":  # too few clear samples for top-1 to mean anything: the logits themselves,
        # each sample's centred (a constant offset, softmax's one invariance, would make any two logit rows alike)
        centred = [[o - o.mean(axis=-1, keepdims=True) for o in group] for group in (outputs, reference)]
        logits = fidelity(centred[0], centred[1], None, "embedding")
        passed = logits.cosine_mean is not None and logits.cosine_mean >= MIN_COSINE
        rule = (f"only {fid.confident_samples or 0} samples with a clear reference class, so the logits: mean "
                f"cosine {logits.cosine_mean:.4f} (at least {MIN_COSINE} needed)")
    else:
        passed = cosine_min is not None and cosine_min >= MIN_COSINE
        rule = f"worst cosine {cosine_min:.4f} (at least {MIN_COSINE} needed)"
    return RuntimeFidelity(runtime, reference_name, samples, error, fid.max_abs_error, fid.agreement,
                           fid.agreement_confident, fid.confident_samples, cosine_min, passed, rule)


def check_runtime_outputs(outputs: list[np.ndarray], reference: list[np.ndarray], task: str, *, runtime: str,
                          variant: str, reference_name: str = "onnxruntime") -> RuntimeFidelity:
    """`compare_outputs`, raising when the runtime does not compute the same model.

    Raises:
        StepFailedError: one line naming the runtime, the variant and what differed.
    """
    result = compare_outputs(outputs, reference, task, runtime=runtime, reference_name=reference_name)
    if not result.passed:
        raise StepFailedError(f"{runtime} does not compute the same {variant!r} as {reference_name}: {result.rule}; "
                              "its timings would be of a different model")
    return result


__all__ = ["MIN_CONFIDENT_AGREEMENT", "MIN_CONFIDENT_SAMPLES", "MIN_COSINE", "RuntimeFidelity", "SAME_RELATIVE_ERROR",
           "check_runtime_outputs", "compare_outputs"]
