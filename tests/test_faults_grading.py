"""Fault injection, part 3: hostile answers for the grader, environment errors, resume
records. The promise and the method: `test_faults.py`."""

# ruff: noqa: F811  (pytest fixtures imported from faults_support are parameters by name)
from __future__ import annotations

import errno
import threading
import time

import pytest
from faults_support import (  # noqa: F401  (fixtures are used by name)
    _no_progress_bars,
)

from artifacts.errors import environment_error

# ------------------------------------------------------------------------------ grading

HOSTILE = [
    r"9^{9^{9^{9}}}",
    r"10^{10^{10}}",
    r"2^{2^{2^{2^{2^{2}}}}}",
    r"\sqrt{2}^{10^{10}}",
    r"2^{-10^{10}}",
    "2**10**10**10",
    "1000000!",
    "(" * 3000 + "1" + ")" * 3000,
    "{" * 20 + "1" + "}" * 20,
    r"\left(" * 40 + "1" + r"\right)" * 40,
    "+".join(["1"] * 1000),
]


@pytest.mark.parametrize("answer", HOSTILE, ids=lambda a: a[:24])
def test_hostile_answers_are_ungradable_fast_and_never_correct(answer):
    from evals.grading import Grade, math_grade

    for reference in ("1", "5", str(1000)):
        t = time.perf_counter()
        grade = math_grade(f"<think>x</think> \\boxed{{{answer}}}", reference)
        assert time.perf_counter() - t < 0.5
        assert grade == Grade(False, answer, True, ungradable=True)


def test_padding_is_not_rewarded():
    from evals.grading import math_grade

    ones = "+".join(["1"] * 1000)
    assert not math_grade(f"</think> \\boxed{{{ones}}}", "1").correct
    assert not math_grade(f"</think> \\boxed{{{ones}}}", "1000").correct
    short = "+".join(["1"] * 20)  # short sums are still graded, by value
    assert math_grade(f"</think> \\boxed{{{short}}}", "20").correct
    assert not math_grade(f"</think> \\boxed{{{short}}}", "1").correct


def test_time_bound_holds_in_threads_and_for_work_stuck_in_c(monkeypatch):
    """Past the pre-check, math-verify runs under the deadline in a worker process: from a
    non-main thread (where signal-based timeouts do not work) and on work stuck in C (a
    huge integer power), the call returns ungradable near the deadline and the next call
    works."""
    import evals.verify as verify
    from evals.grading import math_grade

    monkeypatch.setenv("SHORTCOT_GRADE_TIMEOUT", "1")
    monkeypatch.setattr(verify, "precheck", lambda answer: None)  # only the deadline now
    results = {}

    def grade(key, answer):
        t = time.perf_counter()
        results[key] = (math_grade(f"</think> \\boxed{{{answer}}}", "5"), time.perf_counter() - t)

    threads = [
        threading.Thread(target=grade, args=("c", r"10^{10^{10}}")),
        threading.Thread(target=grade, args=("python", "{" * 16 + "5" + "}" * 16)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for key in ("c", "python"):
        grade_, seconds = results[key]
        assert grade_.ungradable and not grade_.correct, key
        assert seconds < 15, (key, seconds)
    assert math_grade(r"</think> \boxed{\frac{10}{2}}", "5").correct  # the worker restarted


def test_ungradable_is_counted_not_fatal():
    from distill.compress import verify_trace
    from distill.strategies import Context, Trace
    from evals.grading import math_grade
    from evals.metrics import summarize
    from train.length_reward import LengthReward, RewardConfig

    bomb = r"</think> \boxed{10^{10^{10}}}"
    reward = LengthReward(
        RewardConfig(reward_method="truncation", grader="math", target_length=50), [0]
    )
    logged = {}
    out = reward(
        ["p", "p"], [bomb, r"</think> \boxed{5}"], [[1, 0], [1, 0]], answer=["5", "5"],
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )  # fmt: skip
    assert out == [0.0, 1.0] and logged["shortcot/ungradable_rate"] == 0.5
    ctx = Context("5", math_grade, len)
    assert verify_trace(Trace(bomb, 3, 3), ctx) == "ungradable"
    records = [
        {"id": "a", "sample": 0, "tokens": 3, "correct": False, "truncated": False, "ungradable": True},
        {"id": "a", "sample": 1, "tokens": 3, "correct": True, "truncated": False},
    ]  # fmt: skip
    assert summarize(records)["n_ungradable"] == 1


def test_environment_errors_are_recognised_through_causes():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as err:
        assert environment_error(err).startswith("no space left on device (/x/model.safetensors)")
    assert environment_error(ValueError("shape mismatch")) is None
    assert "read-only" in environment_error(OSError(errno.EROFS, "Read-only file system"))
