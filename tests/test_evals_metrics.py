"""Metrics, vote, budget-forcing and compare logic against hand-computed values."""

from __future__ import annotations

import math

import pytest

from evals.backends import Completion, cut_at_eos, sample_seed
from evals.budget import Continuation, check_budget, find_subsequence, plan_continuation
from evals.compare import (
    comparison_rows,
    difficulty_table,
    markdown_table,
    pareto_front,
    pct_change,
)
from evals.metrics import (
    majority_vote,
    pass_at_1,
    percentile,
    summarize,
    token_stats,
    tokens_per_correct,
    vote_accuracy,
)
from evals.run import think_split


def test_pass_at_1_mean_and_standard_error():
    # per-problem scores 3/4, 1/4, 1, 0 -> mean 0.5
    # sample variance = (0.0625 + 0.0625 + 0.25 + 0.25) / 3 = 0.2083333; s.e. = sqrt(0.2083333 / 4)
    correct = [[1, 1, 1, 0], [0, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    acc, se = pass_at_1(correct)
    assert acc == 0.5
    assert se == pytest.approx(math.sqrt(0.625 / 3 / 4))
    assert pass_at_1([[True, False]]) == (0.5, None)
    assert pass_at_1([]) == (None, None)


def test_token_stats_and_percentile():
    s = token_stats([10, 20, 30, 40, 100])
    assert s == {"mean_tokens": 40.0, "median_tokens": 30.0, "p90_tokens": 76.0}  # 40 + 0.6 * 60
    assert percentile([7], 90) == 7.0
    assert percentile([], 50) is None
    assert tokens_per_correct([100, 300, 200], [1, 0, 0]) == 600.0
    assert tokens_per_correct([100], [0]) is None


def test_majority_vote_and_vote_accuracy():
    assert majority_vote(["1", "2", "2"], [True, False, False]) == ("2", False)
    assert majority_vote(["1", "2"], [True, False]) == ("1", True)  # tie -> first seen
    assert majority_vote(["\\frac{1}{2}", "\\frac{1} {2}", "3"], [True, True, False])[1] is True
    # problem A: groups (1,1)->1 right, (2,3)->2 wrong (tie, first seen); problem B: (None,5)->5 right
    samples = [
        [("1", True, 10), ("1", True, 20), ("2", False, 30), ("3", False, 40), ("1", True, 99)],
        [(None, False, 5), ("5", True, 15)],
    ]
    r = vote_accuracy(samples, 2)
    assert r["groups"] == 3 and r["n_problems"] == 2
    assert r["accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["tokens_per_problem"] == pytest.approx((30 + 70 + 20) / 3)  # leftover 99 unused


def _rec(
    pid,
    sample,
    tokens,
    correct,
    truncated=False,
    difficulty=None,
    think=None,
    answer=None,
    secs=0.0,
):
    return {
        "id": pid,
        "sample": sample,
        "tokens": tokens,
        "correct": correct,
        "truncated": truncated,
        "difficulty": difficulty,
        "thinking_tokens": think,
        "answer_tokens": None if think is None else tokens - think,
        "answer": answer,
        "formatted": answer is not None,
        "gen_seconds": secs,
    }


def test_summarize_hand_computed():
    records = [
        _rec("a", 0, 100, True, difficulty=1, think=80, answer="1", secs=1.0),
        _rec("a", 1, 300, False, truncated=True, difficulty=1, think=300, secs=1.0),
        _rec("b", 0, 200, True, difficulty=2, answer="2", secs=0.5),
        _rec("b", 1, 400, True, difficulty=2, think=350, answer="2", secs=0.5),
    ]
    s = summarize(records, vote_k=2)
    assert s["accuracy"] == 0.75  # (1/2 + 2/2) / 2
    assert s["accuracy_se"] == pytest.approx(0.25)  # std([0.5, 1]) = 0.353553 / sqrt(2)
    assert s["mean_tokens"] == 250.0 and s["median_tokens"] == 250.0
    assert s["p90_tokens"] == pytest.approx(370.0)  # 300 + 0.7 * 100
    assert s["truncation_rate"] == 0.25
    assert s["n_problems"] == 2 and s["n_samples"] == 4 and s["samples_per_problem"] == 2
    assert s["format_rate"] == 0.75
    assert s["think_block_rate"] == 0.75
    assert s["mean_thinking_tokens"] == pytest.approx((80 + 300 + 350) / 3)
    assert s["mean_answer_tokens"] == pytest.approx((20 + 0 + 50) / 3)
    assert s["tokens_per_correct"] == pytest.approx(1000 / 3)
    assert s["throughput_tokens_per_s"] == pytest.approx(1000 / 3.0)
    assert list(s["by_difficulty"]) == ["1", "2"]
    assert (
        s["by_difficulty"]["1"]["accuracy"] == 0.5
        and s["by_difficulty"]["1"]["mean_tokens"] == 200.0
    )
    assert (
        s["by_difficulty"]["2"]["accuracy"] == 1.0
        and s["by_difficulty"]["2"]["truncation_rate"] == 0.0
    )
    # vote (k=2): a's group ("1", None) -> "1", right; b's ("2", "2") -> right
    assert s["vote"]["accuracy"] == 1.0
    assert s["vote"]["tokens_per_problem"] == 500.0  # (100 + 300 + 200 + 400) / 2 groups


def test_cut_at_eos_and_seeds():
    assert cut_at_eos([4, 5, 2, 7, 0, 0], {2}, pad_id=0) == ([4, 5, 2], True)
    assert cut_at_eos([4, 5, 0, 0], {2}, pad_id=0) == ([4, 5], False)
    assert cut_at_eos([4, 3, 9], {2, 3}) == ([4, 3], True)
    assert sample_seed(1, [1, 2], 0) != sample_seed(2, [1, 2], 0)
    assert sample_seed(1, [1, 2], 0) != sample_seed(1, [1, 3], 0)
    assert 0 <= sample_seed(1, [1, 2], 0) < 2**63


def test_budget_plan_and_think_split():
    assert find_subsequence([1, 9, 8, 1, 9, 8, 5], [9, 8]) == 6
    forced = plan_continuation(Completion("", [1, 2, 3, 4], False), [9], [7, 9, 7], 20)
    assert forced == Continuation(append=[7, 9, 7], max_new_tokens=13, forced=True)
    closed = plan_continuation(Completion("", [1, 9, 3, 4], False), [9], [7, 9, 7], 20)
    assert closed == Continuation(append=[], max_new_tokens=16, forced=False)
    done = plan_continuation(Completion("", [1, 2], True), [9], [9], 20)
    assert done.max_new_tokens == 0 and not done.forced
    check_budget(10, 20, 3)
    with pytest.raises(Exception, match="no room"):
        check_budget(18, 20, 3)
    assert think_split([1, 2, 9, 9, 3], [9], False) == (4, 1)
    assert think_split([1, 2, 3], [9], True) == (3, 0)
    assert think_split([1, 2, 3], [9], False) == (None, 3)


def test_compare_rows_and_pareto():
    assert pareto_front([(100, 0.5), (200, 0.7), (150, 0.4), (300, 0.7)]) == [0, 1]
    assert pareto_front([(100, 0.5), (100, 0.5)]) == [0, 1]  # ties dominate neither
    assert pct_change(750, 1000) == -25.0
    base = {
        "accuracy": 0.5,
        "accuracy_se": 0.05,
        "mean_tokens": 1000.0,
        "p90_tokens": 2000.0,
        "truncation_rate": 0.1,
        "n_problems": 10,
        "samples_per_problem": 4,
    }
    short = dict(base, accuracy=0.52, mean_tokens=600.0, truncation_rate=0.0)
    worse = dict(base, accuracy=0.4, mean_tokens=800.0)
    rows = comparison_rows([base, short, worse], ["base", "short", "worse"])
    assert rows[1]["d_accuracy"] == pytest.approx(2.0)
    assert rows[1]["d_tokens_pct"] == pytest.approx(-40.0)
    assert rows[2]["d_accuracy"] == pytest.approx(-10.0) and rows[2][
        "d_tokens_pct"
    ] == pytest.approx(-20.0)
    assert [r["pareto"] for r in rows] == [False, True, False]
    table = markdown_table(rows)
    assert "| short | 52.0 | 5.0 | +2.0 | 600 | -40.0 | 2000 | 0.0 | 10x4 | * |" in table
    assert "| base | 50.0 | 5.0 | - | 1000 | - |" in table


def test_difficulty_table_golden():
    """Per-level cells as accuracy ± s.e. / tokens; a level one run lacks shows "-"."""
    base = {
        "by_difficulty": {
            "2": {"accuracy": 0.95, "accuracy_se": 0.01, "mean_tokens": 106.4},
            "10": {"accuracy": 0.75, "accuracy_se": 0.025, "mean_tokens": 93.0},
        }
    }
    dler = {"by_difficulty": {"2": {"accuracy": 1.0, "accuracy_se": 0.0, "mean_tokens": 23.0}}}
    assert difficulty_table([base, dler], ["base", "dler"]) == (
        "| run | 2 | 10 |\n"
        "|---|---|---|\n"
        "| base | 95.0 ± 1.0% / 106 t | 75.0 ± 2.5% / 93 t |\n"
        "| dler | 100.0 ± 0.0% / 23 t | - |\n"
    )
    assert difficulty_table([{"by_difficulty": {}}], ["x"]) == ""
