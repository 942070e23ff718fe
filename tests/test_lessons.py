"""The lesson path as data: every lesson is well formed, links only glossary terms that exist, and "check my answer"
reads the attendee's own run (lesson 1's exercise is run for real here)."""

from __future__ import annotations

import json

import pytest

from core.errors import BadInputError
from core.pipeline.run import run_recipe
from core.spec.recipe import Recipe
from core.teach.lessons import (GLOSSARY, LESSONS, Expected, Lesson, Question, check_answer, expected_rows,
                                find_exercise_results, is_exercise_run, lesson, question_answer, term)

# The Learn page's explainer sections (pages/learn.py) plus the decoding explainer the language-model lesson
# prefers when the page has it.
LEARN_SECTIONS = {"Quantization", "Pruning", "Distillation", "Size & speed", "Depthwise", "int4 blocks (LM)",
                  "Decoding"}


def test_the_path_has_six_to_eight_short_lessons_in_order():
    """6-8 lessons with unique ids, a goal, an exercise that parses as a recipe, and a question each."""
    assert 6 <= len(LESSONS) <= 8
    assert len({item.id for item in LESSONS}) == len(LESSONS)
    assert [item.title for item in LESSONS][:2] == ["What a number is", "int8 and calibration"]
    for item in LESSONS:
        recipe = item.exercise_recipe()
        assert recipe.model == item.model and recipe.variants, item.id
        assert item.goal and item.text and item.exercise and item.question is not None, item.id
        assert set(item.explainers) & LEARN_SECTIONS, item.id
        assert item.expected, item.id
    assert "Decoding" in lesson("language-models").explainers  # issue 28's explainer, not a second one


def test_every_linked_term_is_in_the_glossary_and_the_glossary_has_the_core_words():
    """The lessons link terms by id; the glossary defines SQNR, per-channel, QDQ, calibration, Pareto, KV cache."""
    for item in LESSONS:
        for term_id in item.terms:
            assert term_id in GLOSSARY, (item.id, term_id)
    for term_id in GLOSSARY:
        assert all(related in GLOSSARY for related in GLOSSARY[term_id].see_also), term_id
    names = {t.name for t in GLOSSARY.values()}
    for word in ("SQNR", "Per-channel", "QDQ", "Calibration", "Pareto frontier", "KV cache"):
        assert word in names, word
    with pytest.raises(BadInputError, match="does not exist; terms:"):
        term("nope")


def test_bad_lesson_data_is_refused_naming_the_value():
    """A question of an unknown kind, or an expected result of a variant the recipe lacks, is an error."""
    with pytest.raises(BadInputError, match="kind='essay' is not supported; allowed: number, variant"):
        Question("?", kind="essay")
    with pytest.raises(BadInputError, match="expected variant 'int9'"):
        Lesson("x", "x", "g", 3, "t", ("Quantization",), "h", "e",
               {"model": "sample:digits-mlp", "variants": [{"name": "int8", "steps": []}]},
               expected=(Expected("size", "int9", "x_smaller", 1, 2),))
    with pytest.raises(BadInputError, match="lesson 'nine' does not exist"):
        lesson("nine")


@pytest.fixture(scope="module")
def lesson_one_run(tmp_path_factory):
    """Lesson 1's exercise, run as an attendee's "Run the exercise" would (digits-mlp: a few seconds)."""
    out = tmp_path_factory.mktemp("lesson1")
    run_recipe(Recipe.from_dict(lesson("numbers").recipe), out)
    return json.loads((out / "results.json").read_text())


def test_lesson_one_expected_sizes_are_what_the_exercise_measures(lesson_one_run):
    """The sizes the lesson says we measured are the ones its exercise measures (they do not depend on the CPU)."""
    rows = {row.label: row for row in expected_rows(lesson("numbers"), lesson_one_run)}
    for label in ("fp16: × smaller", "int8: × smaller"):
        assert rows[label].yours is not None and rows[label].in_range, rows[label]


def test_check_my_answer_reads_the_attendees_own_run(lesson_one_run):
    """The right number from the run passes; a wrong one fails naming the measured value; no run: not found."""
    item = lesson("numbers")
    right = question_answer(item, lesson_one_run)
    assert right == pytest.approx(lesson_one_run["variants"][0]["size_bytes"]
                                  / next(v for v in lesson_one_run["variants"]
                                         if v["name"] == "int8-dynamic")["size_bytes"], rel=1e-3)
    assert check_answer(item, lesson_one_run, round(right, 1)).passed
    assert check_answer(item, lesson_one_run, f"{right:.1f}×").passed
    wrong = check_answer(item, lesson_one_run, 4.0)
    assert not wrong.passed and wrong.found_run and f"{right:.3g}" in wrong.message
    assert not check_answer(item, lesson_one_run, None).passed
    missing = check_answer(item, None, right)
    assert not missing.passed and not missing.found_run and "Run the exercise" in missing.message


def test_another_lessons_run_or_an_edited_exercise_does_not_count(lesson_one_run):
    """Lesson 2's check ignores lesson 1's run; a run whose exercise variant used other steps is not the exercise;
    the newest matching finished run is the one read."""
    assert not is_exercise_run(lesson("calibration"), lesson_one_run)
    edited = json.loads(json.dumps(lesson_one_run))
    next(v for v in edited["variants"] if v["name"] == "int8-dynamic")["steps"][0]["mode"] = "static"
    assert not is_exercise_run(lesson("numbers"), edited)

    class Record:
        def __init__(self, status):
            self.status = status

    runs = [(Record("running"), lesson_one_run), (Record("completed"), edited), (Record("completed"), lesson_one_run)]
    assert find_exercise_results(lesson("numbers"), runs) is lesson_one_run


def test_variant_question_uses_the_budget_on_the_attendees_run():
    """The Pareto lesson's answer is the smallest variant within 2 pt of the attendee's own run."""
    item = lesson("pareto")
    variants = [{"name": "baseline", "status": "ok", "steps": [], "size_bytes": 1000, "accuracy": 0.98,
                 "latency_ms": {"32": {"p50": 1.0}}}]
    for v in item.recipe["variants"]:
        variants.append({"name": v["name"], "status": "ok", "steps": v["steps"], "latency_ms": {"32": {"p50": 0.5}},
                         "size_bytes": {"int8": 300, "fp16": 500, "pruned50-int8": 90, "pruned75-int8": 30}[v["name"]],
                         "accuracy": {"int8": 0.98, "fp16": 0.98, "pruned50-int8": 0.965,
                                      "pruned75-int8": 0.40}[v["name"]]})
    results = {"model": item.model, "variants": variants}
    assert question_answer(item, results) == "pruned50-int8"
    assert check_answer(item, results, "pruned50-int8").passed
    assert not check_answer(item, results, "pruned75-int8").passed
