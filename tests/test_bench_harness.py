"""The benchmark harness never turns a missing measurement into a pass, and reports ISA-dependent rows as such."""

import pandas as pd
import pytest

from benchmarks import harness
from benchmarks.harness import Check, Target


def _frame(**rows):
    return pd.DataFrame([{"name": name, "status": "ok", **values} for name, values in rows.items()])


def test_a_missing_value_fails_every_kind_of_check():
    """None (a missing variant or field) fails a >=, a <= and a report-only check alike."""
    for check in (Check("a", lambda f, r: None, ">=", 1.0), Check("b", lambda f, r: None, "<=", 1.0),
                  Check("c", lambda f, r: None, "report")):
        assert not check.passes(None)
    assert Check("d", lambda f, r: 0.0, "report").passes(0.0)
    assert Check("e", lambda f, r: 0.4, "<=", 0.5).passes(0.4) and not Check("f", None, "<=", 0.5).passes(0.6)


def test_a_tuner_that_found_nothing_fails_its_checks(tmp_path):
    """When the tuner's best is the baseline, the speed and drop checks read None, not 1.0 or 0 pt."""
    import json

    (tmp_path / "tune.json").write_text(json.dumps({"best": "baseline", "trials": [
        {"name": "baseline", "drop_pt": 0.0, "speedup": 1.0}]}))
    run = {"out": tmp_path}
    target = next(t for t in harness.TARGETS if t.name.startswith("shapes-cnn tuner"))
    frame = _frame(baseline={"speedup_bs64": 1.0, "accuracy_drop_pt": 0.0})
    assert all(not check.passes(check.value(frame, run)) for check in target.checks)


def test_the_distillation_gain_must_exceed_two_standard_errors():
    """+0.01 pt is noise: the gain is measured in standard errors of the two proportions."""
    class Variant:
        def __init__(self, name):
            self.name, self.status, self.split = name, "ok", {"n": 1333}

    run = {"result": type("R", (), {"variants": [Variant("student"), Variant("student (control)")]})()}
    tiny = _frame(student={"agreement": 0.7001}, **{"student (control)": {"agreement": 0.7}})
    clear = _frame(student={"agreement": 0.75}, **{"student (control)": {"agreement": 0.70}})
    assert harness.gain_in_standard_errors(tiny, run, "agreement", "student", "student (control)") < 0.1
    assert harness.gain_in_standard_errors(clear, run, "agreement", "student", "student (control)") > 2.0


def test_repeated_targets_report_the_median_and_fail_when_one_run_lacks_the_value(tmp_path, monkeypatch):
    """A check over repeated runs is their median; a run without the value makes the check fail."""
    values = iter([2.0, 3.0, 1.0, 5.0, None, 4.0])
    monkeypatch.setattr(harness, "results_frame", lambda d: _frame())
    result = type("R", (), {"to_dict": lambda self: {}, "environment": {}})()
    target = Target("t", {}, [Check("x", lambda f, r: next(values), ">=", 1.5)], execute=lambda spec, out: result,
                    repeats=3)
    first = harness.run_target(target, tmp_path)["checks"][0]
    assert first["value"] == 2.0 and first["spread"] == (1.0, 3.0) and first["pass"]
    second = harness.run_target(target, tmp_path)["checks"][0]
    assert second["value"] is None and not second["pass"]


def test_speed_rows_name_the_int8_instruction_set():
    """Every int8 speed check is marked ISA-dependent, and the report names the ISA in its row."""
    speed = [c for t in harness.TARGETS for c in t.checks if "faster" in c.label]
    assert speed and all(c.isa_dependent for c in speed)
    outcome = {"target": harness.TARGETS[0], "skipped": None, "repeats": 1, "frame": _frame(), "wall_s": 1.0,
               "checks": [{"check": c, "value": 1.0, "spread": None, "pass": True} for c in harness.TARGETS[0].checks]}
    text = harness.markdown([outcome], {"int8_isa": "AVX-512 VNNI", "threads": 1})
    assert "ISA-dependent: AVX-512 VNNI" in text and "int8 instruction set: **AVX-512 VNNI**" in text


def test_int8_isa_reads_the_cpu_flags():
    """The ISA label follows the flags onnxruntime's kernels choose by."""
    from core.measure.quality import int8_isa

    assert int8_isa({"avx2", "avx512f", "avx512_vnni", "amx_int8"}) == "AMX"
    assert int8_isa({"avx2", "avx512f", "avx512_vnni"}) == "AVX-512 VNNI"
    assert int8_isa({"avx2", "avx_vnni"}) == "AVX-VNNI"
    assert int8_isa({"avx", "avx2", "fma"}) == "AVX2 (no VNNI)"


def test_a_speed_check_passes_on_its_median_and_says_when_its_interval_straddles(tmp_path, monkeypatch):
    """A speed reading carries its interval: 2.05x (1.9–2.2) passes '>= 2' on the median, and the row says the
    interval straddles 2; 1.95x (1.8–2.1) fails with the same note; a clear pass has none."""
    monkeypatch.setattr(harness, "results_frame", lambda d: _frame())
    result = type("R", (), {"to_dict": lambda self: {}, "environment": {}})()
    readings = iter([{"value": 2.05, "low": 1.9, "high": 2.2}, {"value": 1.95, "low": 1.8, "high": 2.1},
                     {"value": 3.0, "low": 2.9, "high": 3.1}])
    check = Check("speed: x faster", lambda f, r: next(readings), ">=", 2.0, "x", isa_dependent=True)
    target = Target("t", {}, [check], execute=lambda spec, out: result)
    close, under, clear = (harness.run_target(target, tmp_path)["checks"][0] for _ in range(3))
    assert close["pass"] and close["straddles"] and close["interval"] == (1.9, 2.2)
    assert not under["pass"] and under["straddles"]
    assert clear["pass"] and not clear["straddles"]
    outcome = {"target": target, "skipped": None, "repeats": 1, "frame": _frame(), "wall_s": 1.0, "checks": [close]}
    text = harness.markdown([outcome], {"int8_isa": "AMX", "threads": 1})
    assert "| 2.05 x | 1.9–2.2 | 1 | pass (the interval straddles 2: on the median) |" in text
    assert "How speed is measured." in text


def test_the_repeatability_check_reads_the_spread_of_the_repeated_medians():
    """Three repeated timings within ±10% of their median pass; one 20% off fails; a missing one fails."""
    def run(*ratios):
        timing = {"repeats": [{"ratio": r, "low": r * 0.98, "high": r * 1.02} for r in ratios]}
        return {"result": type("R", (), {"timing": timing})()}

    target = next(t for t in harness.TARGETS if t.name.startswith("speed repeatability"))
    spread = target.checks[0]
    assert spread.passes(harness.repeat_spread_pct(None, run(2.0, 2.1, 1.9)))  # 5%
    assert not spread.passes(harness.repeat_spread_pct(None, run(2.0, 2.4, 2.0)))  # 20%
    assert harness.repeat_spread_pct(None, run(2.0, 2.1)) is None
    value, interval = harness.read(harness.repeat(run(2.0, 2.1, 1.9), 1))
    assert value == 2.1 and interval == pytest.approx((2.058, 2.142))
