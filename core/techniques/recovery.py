"""Recovery steps as measured decisions: each unit of a step (a layer, a pair, a tensor, a node) is applied to the
int8 graph, checked on the validation split against the float model, and kept only where validation improves.

A unit is kept when two things hold on validation: the int8 outputs move closer to the float model's (classifiers:
the mean KL divergence from the float class probabilities falls; other outputs: their relative error falls), and
the headline measure stays at or above plain int8's (classifiers: top-1 agreement with the float model; others:
mean cosine). The first is a continuous measure that every real improvement moves; top-1 agreement is not: on a
few hundred samples it changes only where a near-tie flips. Choosing on agreement kept EfficientNet-Lite1 pairs
whose agreement went up by chance while their KL rose (validation 0.889 -> 0.944, test 0.871 -> 0.842); requiring
agreement never to fall below the running best then refused learned rounding, which lowered the KL 6x but flipped
a near-tie. The floor is plain int8's own validation score, so a recovery variant ends at least where plain int8
of the same step started, on validation, by construction. Recovery steps aim at what the float model computes, so
labels play no part (a random-weight upload has no meaningful accuracy). The test split never takes part; it
reports the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.io.runtime import make_session, run_batched
from core.measure.quality import kl_divergence


def score_outputs(outputs: list, reference: list, task: str) -> tuple:
    """(headline, -error) of `outputs` against the float model's `reference` outputs: (agreement, -KL) for
    classifiers, (mean cosine, -relative error) for other outputs; `improves` compares two of these."""
    first, base = outputs[0], reference[0]
    if task == "classification":
        predictions = first.reshape(len(first), -1).argmax(axis=1)
        agreement = float((predictions == base.reshape(len(base), -1).argmax(axis=1)).mean())
        return round(agreement, 9), -float(kl_divergence(first, base).mean())
    cosines, errors = [], []
    for out, ref in zip(outputs, reference):
        a = out.reshape(len(out), -1).astype(np.float64)
        b = ref.reshape(len(ref), -1).astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosines.append(np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-30), 1.0))
        errors.append(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
    return round(float(np.concatenate(cosines).mean()), 9), -float(np.mean(errors))


def describe(score: tuple, task: str) -> dict:
    """A score as results.json records it."""
    if task == "classification":
        return {"agreement": score[0], "kl": -score[1]}
    return {"cosine_mean": score[0], "relative_error": -score[1]}


@dataclass
class Judge:
    """Scores graphs on the validation split against the float model's outputs there (`score_outputs`)."""

    inputs: dict
    reference: list
    task: str
    threads: int = 1
    split: str = "validation"
    checks: int = 0

    @classmethod
    def for_model(cls, float_bytes: bytes, split, task: str, *, threads: int = 1, split_name: str = "validation"):
        """A judge whose reference is the float model `float_bytes` run on `split` (a core.io.data.Split)."""
        reference = run_batched(make_session(float_bytes, threads), split.x)
        return cls(split.x, reference, task, threads, split_name)

    @property
    def samples(self) -> int:
        return len(next(iter(self.inputs.values())))

    def score(self, proto) -> tuple:
        self.checks += 1
        outputs = run_batched(make_session(proto.SerializeToString(), self.threads), self.inputs)
        return score_outputs(outputs, self.reference, self.task)

    def describe(self, score: tuple) -> dict:
        return describe(score, self.task)


@dataclass
class StepRecord:
    """One recovery step: which units it tried, which it kept, and what that did on validation."""

    step: str  # equalization | learned_rounding | bias_correction | calibration | smooth_quant | exclusion
    unit: str  # pair | model | layer | tensor | matmul input | node
    tried: int = 0
    kept: list = field(default_factory=list)  # unit names (calibration: "tensor: method")
    before: dict = field(default_factory=dict)  # the validation score before the step
    after: dict = field(default_factory=dict)  # ... and after it
    details: dict = field(default_factory=dict)  # what the step reports besides (equalization's fp32 change, ...)

    def gain(self) -> dict:
        """after - before, per measure (positive agreement / accuracy / cosine = better; negative kl = better)."""
        return {k: round(self.after[k] - self.before[k], 6) for k in self.after if k in self.before}

    def to_dict(self) -> dict:
        return {"step": self.step, "unit": self.unit, "tried": self.tried, "kept": list(self.kept),
                "before": self.before, "after": self.after, "gain": self.gain(), **self.details}


def improves(score: tuple, current: tuple, floor: tuple) -> bool:
    """Whether `score` is better than `current`: a strictly smaller error, and a headline measure no lower than
    `floor`'s (plain int8's)."""
    return score[1] > current[1] and score[0] >= floor[0]


class Gate:
    """The running best graph and its score: `offer` keeps a candidate only when it `improves` on it."""

    def __init__(self, judge: Judge | None, proto, score: tuple | None = None):
        self.judge = judge
        self.proto = proto
        self.score = score if score is not None or judge is None else judge.score(proto)
        self.floor = self.score  # plain int8's: no kept unit takes the headline measure below it

    def offer(self, candidate) -> bool:
        """Keep `candidate` if validation improves (always, without a validation split to judge on)."""
        if self.judge is None:
            self.proto = candidate
            return True
        score = self.judge.score(candidate)
        if improves(score, self.score, self.floor):
            self.proto, self.score = candidate, score
            return True
        return False

    def offer_edit(self, graph) -> bool:
        """`graph` (a QdqGraph over this gate's proto, in a trial since `begin`) scored as it stands: kept when
        validation improves, else its trial is rolled back. Cheaper than `offer`: no copy of the graph."""
        if self.judge is None:
            graph.commit()
            return True
        score = self.judge.score(graph.proto)
        if improves(score, self.score, self.floor):
            self.score = score
            graph.commit()
            return True
        graph.rollback()
        return False

    def described(self) -> dict:
        return {} if self.judge is None else self.judge.describe(self.score)
