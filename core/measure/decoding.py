"""Decoder measurements with onnxruntime-genai: one worker process per variant holds its built model, and the parent
drives them all, so every comparison with fp32 is made in the same run, under the same load, and each worker's peak
memory (VmHWM) is its own.

What is measured, in this order:

- quality on the held-out windows, teacher-forced: perplexity; KL(fp32 || variant) per token, exact over the whole
  vocabulary (the fp32 worker writes each window's log-probabilities to a scratch file, every variant reads it and
  reduces it to numbers, one window at a time); top-1 agreement with fp32 at every position, and at the positions
  fp32 is decided on (its top-1 leads the runner-up by `CONFIDENT_MARGIN`);
- greedy generation from each prompt: how many tokens match fp32's before the first difference (after it, two
  models continue different texts, and comparing them position by position measures tie-breaking, not quality);
- speed at batch 1, timed by `core.measure.timing.time_in_rounds`: one call generates `TIMED_NEW_TOKENS` tokens
  after a prompt; the workers are driven round robin, and the clock the rounds see is the decode time each worker
  measured itself (the pipe round trip is not in it). The speed-up is the median per-round ratio of decode time
  with its 95% bootstrap interval. Prefill (the prompt's forward pass) and time to first token (prefill plus the
  first generated token) come from the same calls.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import StepFailedError
from core.io.sandbox import own_peak_rss_mb
from core.measure.timing import (CPU_SHARE_LIMIT, MIN_ROUNDS, ROUND_SECONDS, STEAL_LIMIT, cpu_clock_for, pin_to,
                                 time_in_rounds, timing_cores)

NEW_TOKENS = 32  # greedy tokens generated per prompt for the prefix match with fp32
TIMED_NEW_TOKENS = 16  # tokens one timed call generates (the first is time to first token, the rest decode)
CALL_TIMEOUT_S = 1800.0  # one command of a worker (loading a 2 GB model, scoring a window)
# A position counts as decided when fp32's top-1 probability leads the runner-up by this much. The sample's corpus
# has many uniform choices (any of 12 nouns), where the arg-max is a near-tie any rounding can flip; agreement on
# decided positions separates "the model changed its mind" from "it broke a tie differently".
CONFIDENT_MARGIN = 0.2
_ROOT = str(Path(__file__).resolve().parents[2])
TIMING_METHOD = ("interleaved rounds (core.measure.timing): one worker process per variant, all pinned to the "
                 "same held core(s) and driven round robin; each call decodes "
                 f"{TIMED_NEW_TOKENS} tokens after a prompt at batch 1; speed-up = median of per-round ratios of "
                 "decode time (with one thread, each worker's thread CPU time), 95% bootstrap interval; alternate "
                 "rounds are held out for choosing (selection.speedup), the reported figures come from the others")


# ----------------------------------------------------------------------------------------------------------------
# The worker: `python -m core.measure.decoding MODEL_DIR` loads one decoder and answers JSON commands, one per line.


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


def _generator(og, model, length: int):
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=length, min_length=length, do_sample=False)
    return og.Generator(model, params)


# Positions reduced at a time when scoring a window: float64 work arrays of SCORE_CHUNK x vocabulary (a 150k-token
# vocabulary: 19 MB), so the scoring's temporaries stay small next to the weights in each worker's peak memory.
SCORE_CHUNK = 16


def _score(og, model, command: dict) -> dict:
    """One held-out window: its negative log-likelihood, and against fp32's log-probabilities (written here when
    this is fp32, read otherwise) the KL divergence and the top-1 agreement."""
    window = np.asarray(command["window"], dtype=np.int32)
    positions = len(window) - 1
    generator = _generator(og, model, len(window) + 1)
    generator.append_tokens(window[None, :])
    logits = np.asarray(generator.get_output("logits"))[0, :positions]  # float32 (positions, vocabulary)
    del generator
    reference, writing = command["reference"], bool(command.get("write_reference"))
    ref_all = np.empty(logits.shape, dtype=np.float32) if writing else np.load(reference, mmap_mode="r")
    if ref_all.shape != logits.shape:
        raise ValueError(f"fp32's log-probabilities have shape {ref_all.shape}, this model's {logits.shape}")
    totals = {"nll": 0.0, "kl": 0.0, "same": 0, "confident": 0, "confident_same": 0}
    for start in range(0, positions, SCORE_CHUNK):
        stop = min(positions, start + SCORE_CHUNK)
        logp = _log_softmax(logits[start:stop].astype(np.float64))
        totals["nll"] -= float(logp[np.arange(stop - start), window[start + 1:stop + 1]].sum())
        if writing:
            ref_all[start:stop] = logp
            ref = logp
        else:
            ref = np.asarray(ref_all[start:stop], dtype=np.float64)
        p = np.exp(ref)
        totals["kl"] += float((p * (ref - logp)).sum())
        top2 = np.partition(p, -2, axis=-1)[:, -2:]
        confident = (top2[:, 1] - top2[:, 0]) >= CONFIDENT_MARGIN
        same = logp.argmax(axis=-1) == ref.argmax(axis=-1)
        totals["same"] += int(same.sum())
        totals["confident"] += int(confident.sum())
        totals["confident_same"] += int(same[confident].sum())
    if writing:
        np.save(reference, ref_all)
    return {**totals, "tokens": int(positions)}


def _generate(og, model, command: dict) -> dict:
    """Greedy tokens after a prompt, and how long each part took (seconds, this process's clock and CPU)."""
    prompt = np.asarray(command["prompt"], dtype=np.int32)
    new = int(command["new_tokens"])
    generator = _generator(og, model, len(prompt) + new)
    started = time.perf_counter()
    generator.append_tokens(prompt[None, :])
    prefilled = time.perf_counter()
    generator.generate_next_token()
    tokens = [int(generator.get_next_tokens()[0])]
    first = time.perf_counter()
    cpu, thread = time.process_time(), time.thread_time()
    while not generator.is_done() and len(tokens) < new:
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    done = time.perf_counter()
    cpu_s, thread_s = time.process_time() - cpu, time.thread_time() - thread
    del generator
    # thread_s: this thread's CPU time, what the ratios read (with one intra-op thread onnxruntime decodes on it);
    # cpu_s: the whole process's, what an energy estimate reads
    return {"tokens": tokens, "prefill_s": prefilled - started, "first_s": first - started, "decode_s": done - first,
            "decoded": len(tokens) - 1, "cpu_s": cpu_s, "thread_s": thread_s}


def _memory() -> dict:
    rss = None
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"peak_rss_mb": own_peak_rss_mb(), "rss_mb": rss}


def _serve(model_dir: str) -> int:
    """The worker's loop: load the model, say so, then answer each command line until "quit" or end of input."""
    reply = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # whatever a library prints goes to the log, not into the replies

    def write(message: dict) -> None:
        reply.write(json.dumps(message) + "\n")
        reply.flush()

    started = time.perf_counter()
    try:
        import onnxruntime_genai as og  # in the worker only: the parent never loads a model

        config = og.Config(model_dir)
        config.clear_providers()  # CPU
        model = og.Model(config)
    except Exception as exc:  # noqa: BLE001 - the parent needs the reason, in one line
        write({"error": f"loading failed: {exc.__class__.__name__}: {str(exc).strip().splitlines()[0][:300]}"
               if str(exc).strip() else f"loading failed: {exc.__class__.__name__}"})
        return 1
    write({"ready": True, "load_s": round(time.perf_counter() - started, 3), **_memory()})
    handlers = {"score": lambda c: _score(og, model, c), "generate": lambda c: _generate(og, model, c),
                "memory": lambda c: _memory(), "pin": lambda c: {"pinned": pin_to(c["cores"]) if c["cores"] else False}}
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("op") == "quit":
            break
        try:
            write(handlers[command["op"]](command))
        except Exception as exc:  # noqa: BLE001 - one failed command is reported, the parent decides
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            write({"error": f"{command.get('op')} failed: {exc.__class__.__name__}: {first}"})
    return 0


class DecoderWorker:
    """A worker process holding one built decoder (its own peak memory, its own onnxruntime threads), answering
    the parent's commands over a pipe."""

    def __init__(self, name: str, model_dir: str | Path, log_dir: str | Path):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "core.measure.decoding", str(model_dir)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=_ROOT)
        self._buffer = b""
        try:
            self.loaded = self._read(CALL_TIMEOUT_S)
        except StepFailedError:
            self.close()  # a worker that could not load its model: its process and log go now
            raise

    def _fail(self, what: str) -> StepFailedError:
        if not self._log.closed:
            self._log.flush()
        try:
            tail = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            tail = []
        last = tail[-1][:300] if tail else "no output"
        return StepFailedError(f"measuring {self.name}: {what} ({last})")

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close()
                    raise self._fail(f"no reply within {timeout:g} s")
                if not selector.select(min(left, 1.0)):
                    continue
                chunk = os.read(self.process.stdout.fileno(), 1 << 16)
                if not chunk:
                    code = self.process.poll()
                    raise self._fail(f"the worker exited (code {code})")
                self._buffer += chunk
        finally:
            selector.close()
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if "error" in message:
            raise StepFailedError(f"measuring {self.name}: {message['error']}")
        return message

    def call(self, op: str, timeout: float = CALL_TIMEOUT_S, **args) -> dict:
        """Send one command and wait for its reply.

        Raises:
            StepFailedError: the command failed, the worker died, or no reply came within `timeout`.
        """
        if self.process.poll() is not None:
            raise self._fail(f"the worker is gone (code {self.process.returncode})")
        try:
            self.process.stdin.write((json.dumps({"op": op, **args}) + "\n").encode("utf-8"))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._fail("the worker stopped reading") from None
        return self._read(timeout)

    def close(self) -> None:
        """Ask the worker to quit (kill it after 10 s) and close its pipes and log; safe to call twice."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write(b'{"op": "quit"}\n')
                self.process.stdin.flush()
                self.process.wait(10)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if not self._log.closed:
            self._log.close()


# ----------------------------------------------------------------------------------------------------------------
# The parent: every variant's worker, driven together


def prefix_match(tokens: list, reference: list) -> dict:
    """How long each prompt's greedy tokens follow the reference's before they part.

    Returns:
        ``{"first_divergence": per prompt the first differing position (None: all equal), "mean_prefix_tokens":
        mean matching tokens before it (a prompt that never diverges counts its length), "diverged_prompts",
        "new_tokens": tokens generated per prompt}``.
    """
    firsts, lengths = [], []
    for mine, ref in zip(tokens, reference):
        n = min(len(mine), len(ref))
        firsts.append(next((i for i in range(n) if mine[i] != ref[i]), None))
        lengths.append(n)
    mean = float(np.mean([n if f is None else f for f, n in zip(firsts, lengths)])) if firsts else None
    return {"first_divergence": firsts, "mean_prefix_tokens": mean,
            "diverged_prompts": sum(f is not None for f in firsts), "new_tokens": max(lengths, default=0)}


@dataclass
class DecoderMeasurement:
    """What `measure_decoders` found: each model's fields (results.json names), why a model failed, the timing."""

    fields: dict = field(default_factory=dict)  # name -> fields
    failed: dict = field(default_factory=dict)  # name -> one-line error
    timing: dict = field(default_factory=dict)  # method, rounds, converged, contention
    stopped: bool = False


def _halves(count: int) -> list[str]:
    """Which half each held-out window scores for: alternate windows choose ("validation": what a pick among the
    variants reads) and report ("test": the numbers shown). A single window serves both (said in the results)."""
    if count < 2:
        return ["both"] * count
    return ["validation" if i % 2 == 0 else "test" for i in range(count)]


def _quality(totals: dict) -> dict:
    positions = totals["tokens"]
    return {"perplexity": math.exp(totals["nll"] / positions) if positions else None, "tokens": positions,
            "windows": totals["windows"], "kl_per_token": totals["kl"] / positions if positions else None,
            "next_token_agreement": totals["same"] / positions if positions else None,
            "next_token_agreement_confident": totals["confident_same"] / totals["confident"]
            if totals["confident"] else None, "confident_positions": totals["confident"]}


def measure_decoders(model_dirs: dict, eval_ids: np.ndarray, prompts: np.ndarray, *, baseline: str = "baseline",
                     threads: int = 1, max_seconds: float = 30.0, should_stop: Callable[[], bool] = lambda: False,
                     report: Callable[[str, float], None] = lambda message, fraction: None,
                     seed: int = 0) -> DecoderMeasurement:
    """Measure every built decoder of `model_dirs` (name -> folder, the baseline among them) together.

    Quality is scored on alternate held-out windows for choosing and for reporting (`selection` / the reported
    fields), and the timed rounds alternate the same way (`time_in_rounds(holdout=True)`), so a pick among the
    variants never reads the numbers shown for it.

    Args:
        eval_ids: int (N, L) held-out windows; each scores its tokens 1..L-1.
        prompts: int (P, T) prompts for greedy generation and timing.
        threads: the decoders' intra-op threads (their genai_config.json): with one, the ratios are read on the
            workers' thread CPU clock, as every timing in the project does.
        max_seconds: the timed rounds' budget of measured decode time (raised so that `MIN_ROUNDS` rounds fit).
        report: progress, as (message, fraction 0..1).

    Returns:
        A DecoderMeasurement. A model whose worker fails is in `failed` and the others go on.

    Raises:
        StepFailedError: the baseline failed (nothing to compare with).
    """
    measurement = DecoderMeasurement()
    workers: dict[str, DecoderWorker] = {}
    scratch = tempfile.TemporaryDirectory(prefix="featherweight-decoders-")
    names = [baseline] + [n for n in model_dirs if n != baseline]

    def fail(name: str, error: Exception) -> None:
        if name == baseline:
            raise StepFailedError(f"the fp32 baseline could not be measured: {error}")
        measurement.failed[name] = str(error)
        worker = workers.pop(name, None)
        if worker is not None:
            worker.close()

    try:
        for i, name in enumerate(names):
            report(f"loading {name} in its own process", 0.05 * i / len(names))
            try:
                workers[name] = DecoderWorker(name, model_dirs[name], scratch.name)
            except StepFailedError as exc:
                fail(name, exc)
        windows = np.asarray(eval_ids, dtype=np.int64)
        halves = _halves(len(windows))
        empty = {"nll": 0.0, "tokens": 0, "windows": 0, "kl": 0.0, "same": 0, "confident": 0, "confident_same": 0}
        quality = {name: {"validation": dict(empty), "test": dict(empty)} for name in workers}
        reference = str(Path(scratch.name) / "fp32_logprobs.npy")
        for index, window in enumerate(windows):
            if should_stop():
                measurement.stopped = True
                return measurement
            report(f"scoring held-out window {index + 1} of {len(windows)} on every model",
                   0.05 + 0.35 * index / max(1, len(windows)))
            for name in list(workers):
                try:
                    got = workers[name].call("score", window=window.tolist(), reference=reference,
                                             write_reference=name == baseline)
                except StepFailedError as exc:
                    fail(name, exc)
                    quality.pop(name, None)
                    continue
                for half in (("validation", "test") if halves[index] == "both" else (halves[index],)):
                    totals = quality[name][half]
                    totals["windows"] += 1
                    for key in ("nll", "tokens", "kl", "same", "confident", "confident_same"):
                        totals[key] += got[key]
        greedy: dict[str, list] = {name: [] for name in workers}
        warm: dict[str, list] = {name: [] for name in workers}
        for index, prompt in enumerate(np.asarray(prompts, dtype=np.int64)):
            report(f"generating {NEW_TOKENS} greedy tokens from prompt {index + 1} of {len(prompts)}",
                   0.4 + 0.1 * index / max(1, len(prompts)))
            for name in list(workers):
                try:
                    got = workers[name].call("generate", prompt=prompt.tolist(), new_tokens=NEW_TOKENS)
                except StepFailedError as exc:
                    fail(name, exc)
                    continue
                greedy[name].append(got["tokens"])
                warm[name].append(got["decode_s"] * (TIMED_NEW_TOKENS - 1) / max(1, got["decoded"]))
        if should_stop():
            measurement.stopped = True
            return measurement
        timing = _time_rounds(workers, baseline, np.asarray(prompts, dtype=np.int64), warm, threads, max_seconds,
                              should_stop, report, seed, fail)
        measurement.stopped = timing.pop("stopped")
        for name, worker in list(workers.items()):
            try:
                memory = worker.call("memory")
            except StepFailedError as exc:
                fail(name, exc)
                continue
            speed = timing["per_model"].get(name)
            if speed is None:
                continue
            shown, chosen = _quality(quality[name]["test"]), _quality(quality[name]["validation"])
            measurement.fields[name] = {
                "perplexity": shown["perplexity"], "nll_tokens": shown["tokens"],
                "kl_per_token": shown["kl_per_token"], "next_token_agreement": shown["next_token_agreement"],
                "next_token_agreement_confident": shown["next_token_agreement_confident"],
                "confident_positions": shown["confident_positions"], "windows": shown["windows"],
                "greedy_tokens": greedy[name], "prefix_match": prefix_match(greedy[name], greedy[baseline]),
                "peak_rss_mb": memory["peak_rss_mb"], "load_s": worker.loaded.get("load_s"),
                "selection": {"split": "validation" if len(windows) > 1 else "test (one window: not held out)",
                              "n": chosen["tokens"], "windows": chosen["windows"],
                              "perplexity": chosen["perplexity"], "kl_per_token": chosen["kl_per_token"],
                              **speed.pop("selection")},
                **speed}
        measurement.timing = {k: v for k, v in timing.items() if k != "per_model"}
        return measurement
    finally:
        for worker in workers.values():
            worker.close()
        scratch.cleanup()


def _time_rounds(workers: dict, baseline: str, prompts: np.ndarray, warm: dict, threads: int, max_seconds: float,
                 should_stop, report, seed: int, fail) -> dict:
    """Decode speed of every worker, interleaved in rounds on held cores (every worker pinned to them: they take
    turns, never run at once); a worker that fails is dropped and the rounds rerun."""
    ratio_on_cpu = cpu_clock_for(threads) is not None  # one intra-op thread: the decode runs on the worker's thread
    while True:
        calls: dict[str, list] = {name: [] for name in workers}
        clock = {"wall": 0.0, "cpu": 0.0}
        turn = {name: 0 for name in workers}

        def runner(name: str):
            def run():
                prompt = prompts[turn[name] % len(prompts)]
                turn[name] += 1
                try:
                    got = workers[name].call("generate", prompt=prompt.tolist(), new_tokens=TIMED_NEW_TOKENS)
                except StepFailedError as exc:
                    raise _WorkerFailed(name, exc) from None
                calls[name].append(got)
                # The rounds see the decode time each worker measured itself (the pipe round trip is not in it):
                # wall for the percentiles and the caps, the worker's thread CPU time for the ratios.
                clock["wall"] += got["decode_s"]
                clock["cpu"] += got["thread_s"]
            return run

        # Enough measured time for the warm-up and MIN_ROUNDS reported rounds (every other round is held out for
        # choosing): each runner gets at least one call a round, about ROUND_SECONDS of calls when they are short.
        # The estimate comes from the greedy pass; the 1.5 is for a machine that gets busier (a contended ~0.5B run
        # here stopped at 14 rounds with 1.25).
        per_round = sum(max(ROUND_SECONDS, float(np.median(warm[n])) if warm.get(n) else ROUND_SECONDS)
                        for n in workers)
        budget = max(max_seconds, 1.5 * (2 * MIN_ROUNDS + 1) * per_round)
        started = time.perf_counter()
        try:
            with timing_cores(threads, should_stop=should_stop,
                              on_wait=lambda m: report(f"waiting for a core to time on: {m}", 0.5)) as cores:
                if cores is None:
                    return {"stopped": True, "per_model": {}}
                for worker in workers.values():
                    worker.call("pin", cores=list(cores))
                rounds = time_in_rounds({n: runner(n) for n in workers}, baseline, warmup=1, max_seconds=budget,
                                        holdout=True, should_stop=should_stop, clock=lambda: clock["wall"],
                                        cpu_clock=(lambda: clock["cpu"]) if ratio_on_cpu else None, seed=seed,
                                        threads=threads, on_progress=lambda f, m: report(
                                            f"timing decode speed, {m}", 0.5 + 0.5 * f))
        except _WorkerFailed as failed:
            fail(failed.name, failed.error)  # the baseline's failure ends the measurement
            continue
        wall = time.perf_counter() - started
        return _speed_fields(rounds, calls, int(prompts.shape[1]), wall, cores)


class _WorkerFailed(Exception):
    """A worker failed inside the timed rounds: which one, and why."""

    def __init__(self, name: str, error: StepFailedError):
        super().__init__(str(error))
        self.name, self.error = name, error


def _per_token(figures: dict | None, decoded: int) -> dict | None:
    """Per-call percentiles (ms) as milliseconds per decoded token."""
    if not figures:
        return None
    return {k: (v / decoded if k in ("p50", "p90", "p99", "mean") else v) for k, v in figures.items()}


def _speed_fields(rounds, calls: dict, prompt_tokens: int, wall_s: float, cores) -> dict:
    decoded = TIMED_NEW_TOKENS - 1
    per_model = {}
    cpu = measured = 0.0
    for name, made in calls.items():
        made = made[rounds.warmup_calls.get(name, 1):]  # the warm-up calls
        latency = _per_token(rounds.latency_ms.get(name), decoded)  # the reported rounds
        if not made or latency is None:
            continue
        prefill_s = float(np.median([c["prefill_s"] for c in made]))
        rate = 1000.0 / latency["p50"]
        per_model[name] = {
            "tokens_per_s": {"prefill": prompt_tokens / prefill_s, "decode": rate},
            "ttft_ms": 1000.0 * float(np.median([c["first_s"] for c in made])),
            "latency_ms": {"1": latency}, "throughput": {"1": rate}, "timed_calls": len(made),
            # CPU time per generated token, as the worker measured it: what an energy estimate multiplies by watts
            "cpu_ms_per_sample": {"1": float(np.median([c["cpu_s"] for c in made])) * 1000.0 / decoded},
            "speedup": {"1": rounds.speedup[name].to_dict()} if name in rounds.speedup else {},
            "selection": {"speedup": {"1": rounds.selection[name].to_dict()} if name in rounds.selection else {},
                          "latency_ms": {"1": _per_token(rounds.selection_latency_ms.get(name), decoded)}
                          if rounds.selection_latency_ms.get(name) else {}}}
        cpu += sum(c["thread_s"] for c in made)
        measured += sum(c["decode_s"] for c in made)
    contention = dict(rounds.contention)
    # The rounds' own probe watched this process, which only waits on the workers: judge the workers' share of
    # the CPU while they decoded instead (the steal and load figures are the machine's, and stay).
    share = min(1.0, cpu / measured) if measured else None
    contention["cpu_share"] = None if share is None else round(share, 3)
    reasons = []
    if share is not None and share < CPU_SHARE_LIMIT:
        reasons.append(f"the decoding workers got {share:.0%} of the CPU time they asked for")
    if contention.get("steal_share") is not None and contention["steal_share"] > STEAL_LIMIT:
        reasons.append(f"the hypervisor stole {contention['steal_share']:.0%} of the CPU")
    contention.update(contended=bool(reasons), reasons=reasons, seconds=round(wall_s, 3))
    return {"method": TIMING_METHOD, "ratio_clock": rounds.ratio_clock,
            "batches": {"1": {"rounds": rounds.rounds, "converged": rounds.converged, "stopped": rounds.stopped,
                              "elapsed_s": round(rounds.elapsed_s, 3), "wall_s": round(wall_s, 3),
                              "cores": list(cores or []), "calls_per_round": rounds.calls_per_round,
                              "contention": contention}},
            "stopped": rounds.stopped, "per_model": per_model}


__all__ = ["CONFIDENT_MARGIN", "DecoderMeasurement", "DecoderWorker", "NEW_TOKENS", "TIMED_NEW_TOKENS",
           "TIMING_METHOD", "measure_decoders", "prefix_match"]


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1]))
