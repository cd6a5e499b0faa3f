"""Compression strategies on hand-written traces: cut points, kept verification,
re-verification, pruning, shortest-of-N, the pipeline's drops. Pure and fast."""

from __future__ import annotations

from collections import Counter

import pytest

from distill.answers import get_detector, last_number, math_answers
from distill.compress import StrategyOptions, make_strategy, parse_pipeline, run_pipeline
from distill.steps import split_completion, split_steps
from distill.strategies import (
    Context,
    Trace,
    first_correct,
    redundant_steps,
    round_ends,
    shortest_correct,
    step_prune,
)
from evals.grading import Grade, extract_boxed, get_grader, math_grade, split_think

TB_GRADE = get_grader("testbed")


def words(text: str) -> int:
    return len(text.split())


def ctx_for(reference, grader=TB_GRADE, **kw) -> Context:
    return Context(str(reference), grader, words, **kw)


def trace(text: str, sample: int = 0, finished: bool = True) -> Trace:
    return Trace(text, words(text), words(text), finished, sample)


# A testbed-style overthinking trace (testbed/task.py format): the answer 8 is first
# reached at the end of the first round; two re-checks follow.
LONG = (
    "<think>\nk is 3, total 3. q is 5, 3+5=8. Wait, let me check: k is 3, q is 5, 3+5=8. So 8. "
    "Wait, let me double-check: 3+5=8.\n</think>\n\\boxed{8}"
)


def test_split_steps_is_lossless_and_sentence_level():
    parts = split_completion(LONG)
    steps = split_steps(parts.thinking)
    assert "".join(steps) == parts.thinking
    assert steps == [
        "\nk is 3, total 3. ",
        "q is 5, 3+5=8. ",
        "Wait, let me check: k is 3, q is 5, 3+5=8. ",
        "So 8. ",
        "Wait, let me double-check: 3+5=8.\n",
    ]
    assert round_ends(steps) == [False, True, False, True, True]


def test_split_completion_without_open_tag_and_unclosed():
    # R1-style: <think> is in the prompt, the completion starts inside the trace.
    parts = split_completion("x is 2. </think> \\boxed{2}")
    assert (
        parts.prefix == ""
        and parts.thinking == "x is 2. "
        and parts.suffix == "</think> \\boxed{2}"
    )
    assert parts.with_thinking("y. ") == "y. </think> \\boxed{2}"
    assert split_completion("<think> never closed") is None
    assert split_completion("no think at all \\boxed{2}") is None


def test_answer_detectors():
    assert math_answers("q is 5, 3+5=8. ") == ["8"]
    assert math_answers("Wait, let me check: 19. ") == ["19"]
    assert math_answers("So the final answer is $\\frac{3}{4}$.") == ["\\frac{3}{4}"]
    assert math_answers("Thus \\boxed{x^2} and more") == ["x^2"]
    assert math_answers("k is 3, total 3. ") == []  # a running total mid-sentence is no answer
    assert last_number("k is 3, total 3.") == ["3"]
    assert get_detector("distill.answers:last_number") is last_number
    with pytest.raises(Exception, match="unknown answer detector"):
        get_detector("nope")


def test_first_correct_cuts_after_first_correct_round():
    res = first_correct([trace(LONG)], ctx_for(8))
    (t,) = res.kept
    assert t.text == "<think>\nk is 3, total 3. q is 5, 3+5=8.\n</think>\n\\boxed{8}"
    assert t.num_tokens == words(t.text) == 12 and t.original_tokens == words(LONG) == 30
    assert res.notes == ["first-correct: cut"]


def test_first_correct_keeps_one_verification():
    (t,) = first_correct([trace(LONG)], ctx_for(8), keep_verification=True).kept
    assert t.text == (
        "<think>\nk is 3, total 3. q is 5, 3+5=8. Wait, let me check: k is 3, q is 5, 3+5=8. So 8."
        "\n</think>\n\\boxed{8}"
    )


def test_first_correct_keeps_a_verification_only_when_it_confirms():
    """FCS+Reflection: the verification round is kept only when it reaches the chain's
    answer again. Here the first round ends on 8 (correct); the next answer-stating round
    ends on 9, so keeping it would train a chain that says 9 right before boxing 8."""
    text = (
        "<think>\nk is 3, total 3. q is 5, 3+5=8. Wait, let me check: 3+5=9. So 9. "
        "Wait, no: 3+5=8.\n</think>\n\\boxed{8}"
    )
    steps = split_steps(split_completion(text).thinking)
    assert steps == [
        "\nk is 3, total 3. ",
        "q is 5, 3+5=8. ",
        "Wait, let me check: 3+5=9. ",
        "So 9. ",
        "Wait, no: 3+5=8.\n",
    ]
    res = first_correct([trace(text)], ctx_for(8), keep_verification=True)
    (t,) = res.kept
    assert t.text == "<think>\nk is 3, total 3. q is 5, 3+5=8.\n</think>\n\\boxed{8}"
    assert res.notes == [
        "first-correct: verification reached another answer, not kept",
        "first-correct: cut",
    ]
    # a verification that states no answer confirms nothing either
    text = "<think>\nq is 5, 3+5=8. Wait, let me think about the labels.\n</think>\n\\boxed{8}"
    (t,) = first_correct([trace(text)], ctx_for(8), keep_verification=True).kept
    assert t.text == "<think>\nq is 5, 3+5=8.\n</think>\n\\boxed{8}"


def test_first_correct_ignores_intermediate_value_equal_to_answer():
    # The partial sum after the first term is already 8 (the final answer), but the round
    # only ends after the third term: cutting at the first "8" would drop needed steps.
    text = "<think>\nk is 8, total 8. q is 5, 8+5=3. b is 5, 3+5=8. Wait, let me check: 8.\n</think>\n\\boxed{8}"
    (t,) = first_correct([trace(text)], ctx_for(8)).kept
    assert t.text == "<think>\nk is 8, total 8. q is 5, 8+5=3. b is 5, 3+5=8.\n</think>\n\\boxed{8}"


def test_first_correct_skips_wrong_first_round():
    text = "<think>\nq is 5, 3+5=9. Wait, let me check: 3+5=8. Wait, again: 3+5=8.\n</think>\n\\boxed{8}"
    (t,) = first_correct([trace(text)], ctx_for(8)).kept
    assert t.text == "<think>\nq is 5, 3+5=9. Wait, let me check: 3+5=8.\n</think>\n\\boxed{8}"


def test_first_correct_math_trace_with_math_grader():
    text = (
        "We need x with 2x = 1. So x = 1/2.\n\nWait, let me verify: 2 * 1/2 = 1, so x = \\frac{1}{2}.\n\n"
        "Alternatively, dividing both sides by 2 gives 0.5.\n</think>\n\nThe answer is \\boxed{\\frac{1}{2}}."
    )
    (t,) = first_correct([trace(text)], ctx_for("\\frac{1}{2}", math_grade)).kept
    # "1/2" is recognised as the reference \frac{1}{2} by math-verify, through the grader.
    assert (
        t.text
        == "We need x with 2x = 1. So x = 1/2.\n</think>\n\nThe answer is \\boxed{\\frac{1}{2}}."
    )


def picky_grade(completion: str, reference: str) -> Grade:
    """Accepts a boxed answer only if an opened think trace contains a re-check ("Wait")."""
    thinking, tail = split_think(completion)
    ans = extract_boxed(tail)
    ok = (
        ans is not None and ans == reference and ("<think>" not in completion or "Wait" in thinking)
    )
    return Grade(ok, ans, ans is not None)


def test_first_correct_reverification_failure_keeps_or_drops():
    res = first_correct([trace(LONG)], ctx_for(8, picky_grade))
    assert res.kept == [trace(LONG)] and res.notes == [
        "first-correct: cut failed re-verification, kept uncut"
    ]
    res = first_correct([trace(LONG)], ctx_for(8, picky_grade), on_fail="drop")
    assert res.kept == [] and res.dropped == ["first-correct: cut failed re-verification"]
    # with the verification round kept, the cut has a "Wait" and passes
    (t,) = first_correct([trace(LONG)], ctx_for(8, picky_grade), keep_verification=True).kept
    assert "So 8." in t.text and "double-check" not in t.text


def test_first_correct_no_detectable_answer_kept_as_is():
    text = "<think>\nadd them up.\n</think>\n\\boxed{8}"
    res = first_correct([trace(text)], ctx_for(8))
    assert res.kept == [trace(text)] and "answer not found" in res.notes[0]


def test_redundant_steps_rule():
    steps = [
        "k is 3, total 3. ",
        "q is 5, 3+5=8. ",
        "Wait, let me check: 3+5=8. ",
        "k is 3, total 3. ",
    ]
    assert redundant_steps(steps) == [2, 3]


def test_step_prune_drops_rechecks_and_restatements():
    text = (
        "<think>\nk is 3, total 3. q is 5, 3+5=8. Wait, let me check: 3+5=8. b is 2, 8+2=0. "
        "k is 3, total 3. Wait, let me verify: 8+2=0.\n</think>\n\\boxed{0}"
    )
    res = step_prune([trace(text)], ctx_for(0))
    (t,) = res.kept
    assert t.text == "<think>\nk is 3, total 3. q is 5, 3+5=8. b is 2, 8+2=0.\n</think>\n\\boxed{0}"
    assert res.notes == ["step-prune: pruned"]


def test_step_prune_keeps_a_check_that_carries_the_answer():
    # The first attempt is wrong (9); the re-check fixes it, so it must stay.
    text = "<think>\nq is 5, 3+5=9. Wait, let me check: 3+5=8.\n</think>\n\\boxed{8}"
    res = step_prune([trace(text)], ctx_for(8))
    assert res.kept == [trace(text)] and res.notes == ["step-prune: nothing to drop"]


def test_step_prune_with_scorer_and_max_fraction():
    text = "<think>\na. b. c. d is 8.\n</think>\n\\boxed{8}"
    scores = {0: 0.5, 1: 0.001, 2: 0.01, 3: 0.0}  # step 3 scores lowest but carries the answer

    def scorer(steps, rebuild, ctx):
        assert rebuild("".join(steps)) == text
        return [scores[i] for i in range(len(steps))]

    (t,) = step_prune([trace(text)], ctx_for(8), scorer=scorer, threshold=0.02).kept
    assert t.text == "<think>\na. d is 8.\n</think>\n\\boxed{8}"
    # at most 1 of 4 steps may go: the lowest-scoring one (3) is refused, the next (1) goes
    (t,) = step_prune([trace(text)], ctx_for(8), scorer=scorer, max_drop_fraction=0.25).kept
    assert t.text == "<think>\na. c. d is 8.\n</think>\n\\boxed{8}"


def test_shortest_correct_and_median_cap():
    ts = [
        Trace("a", 30, 30, sample=0),
        Trace("b", 10, 10, sample=1),
        Trace("c", 10, 10, sample=2),
        Trace("d", 50, 50, sample=3),
    ]
    res = shortest_correct(ts, ctx_for(1))
    assert [t.sample for t in res.kept] == [1]  # ties go to the earliest sample
    assert res.dropped == ["shortest-correct: not the shortest"] * 3
    # median of (30, 10, 10, 50) = 20; 10 <= 0.5 * 20 keeps, 10 > 0.4 * 20 drops
    assert shortest_correct(ts, ctx_for(1), max_ratio_to_median=0.5).kept == [ts[1]]
    res = shortest_correct(ts, ctx_for(1), max_ratio_to_median=0.4)
    assert res.kept == [] and res.dropped[0] == "shortest-correct: above 0.4 x median length"


def test_pipeline_grades_composes_and_reports_drops():
    good_long = LONG
    good_short = "<think>\nk is 3, total 3. q is 5, 3+5=8. Wait, 3+5=8.\n</think>\n\\boxed{8}"
    raw = [
        trace(good_long, 0),
        trace(good_short, 1),
        trace("<think>\nk is 3, total 3. q is 5, 3+5=9.\n</think>\n\\boxed{9}", 2),  # wrong
        trace("<think>\nk is 3, total 3. q is 5", 3, finished=False),  # truncated
        trace("<think>\nk is 3.\n</think>\n8", 4),  # no box
    ]
    opts = StrategyOptions()
    pipe = [(n, make_strategy(n, opts)) for n in parse_pipeline("shortest-correct,first-correct")]
    res = run_pipeline(raw, ctx_for(8), pipe)
    assert Counter(res.sample_drops) == Counter(
        {"incorrect": 1, "truncated": 1, "unformatted": 1, "shortest-correct: not the shortest": 1}
    )
    (t,) = res.kept
    assert (
        t.sample == 1 and t.text == "<think>\nk is 3, total 3. q is 5, 3+5=8.\n</think>\n\\boxed{8}"
    )
    assert t.original_tokens == words(good_short) and res.problem_drop is None
    assert res.correct_tokens == [words(good_long), words(good_short)]

    res = run_pipeline(raw[2:], ctx_for(8), pipe)
    assert res.kept == [] and res.problem_drop == "no correct sample"


def test_parse_pipeline_rejects_unknown():
    assert parse_pipeline(" shortest-correct , step-prune ") == ["shortest-correct", "step-prune"]
    with pytest.raises(Exception, match="unknown strategy 'fastest'"):
        parse_pipeline("shortest-correct,fastest")
    with pytest.raises(Exception, match="empty"):
        parse_pipeline(",")


def test_testbed_teacher_traces_stay_complete_and_keep_their_fixes():
    """On the CPU testbed's overthinking traces, every compressed trace still sums every
    term and keeps every check that fixed an error, judged by the testbed's own auditor
    (`testbed.teacher.audit_trace`, written independently of distill)."""
    import random

    from distill.answers import bind_detector
    from testbed.task import minimal_trace, sample_problem
    from testbed.teacher import audit_trace, teacher_completion

    det = get_detector("testbed")
    opts = StrategyOptions()
    pipe = [(n, make_strategy(n, opts)) for n in ("first-correct", "step-prune")]
    rng = random.Random(0)
    ratios, floor = [], []
    for _ in range(150):
        p = sample_problem(rng, rng.randint(2, 9))
        text = teacher_completion(p, rng)
        ctx = Context(str(p.answer), TB_GRADE, words, bind_detector(det, p.text))
        (t,) = run_pipeline([trace(text)], ctx, pipe).kept
        before = audit_trace(p, split_completion(text).thinking)
        after = audit_trace(p, split_completion(t.text).thinking)
        assert after.complete and after.caught == before.caught and after.rechecks == 0, (
            text,
            t.text,
        )
        ratios.append(t.num_tokens / t.original_tokens)
        floor.append(words(minimal_trace(p)) / t.original_tokens)
    mean = sum(ratios) / len(ratios)
    assert 0.45 < mean < 0.65  # measured 0.57 (words); the minimal traces would be 0.44
    assert sum(floor) / len(floor) < mean


def test_any_correct_is_the_uncompressed_control():
    ts = [Trace("a", 30, 30, sample=2), Trace("b", 10, 10, sample=1)]
    res = make_strategy("any-correct", StrategyOptions())(ts, ctx_for(1))
    assert res.kept == [ts[1]] and res.dropped == ["any-correct: not the first"]


def test_step_prune_reverification_failure_keeps_unpruned():
    res = step_prune([trace(LONG)], ctx_for(8, picky_grade))
    assert res.kept == [trace(LONG)]
    assert res.notes == ["step-prune: pruned trace failed re-verification, kept unpruned"]
