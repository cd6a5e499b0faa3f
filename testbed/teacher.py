"""The long-chain teacher: correct traces padded with the redundancy of an overthinking model.

A trace is the minimal trace (`testbed.task.minimal_steps`) plus four kinds of extra text,
the habits R1-style models show (issue 4):

- restating the task at the start (``we need a+b+c+d mod 10.``);
- re-verification after a step (``wait, let me check: b is 5, 3 + 5 = 8. right.``): useless
  when the step was right;
- backtracking: a step written with an injected error (a wrong digit or a wrong sum),
  always caught by the check that follows (``wait, let me check: b is 5, 3 + 5 = 8, not 9.``),
  and the trace continues from the corrected sum. These checks are the useful ones: a
  model trained on such traces learns to re-check and fix, and one that drops every
  check also loses the fixes. Errors are injected more often on hard (long) problems;
- whole re-computations at the end (``wait, let me check again: 3 + 5 = 8, 8 + 2 = 0, 0 + 7 = 7.
  right.``), whose count is heavy-tailed (Lomax / Pareto II) and larger on easy problems,
  where they are never needed.

Every trace ends in the right answer: each injected error is fixed before the next step
uses the sum, and the re-computations restate the correct sums.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass

from testbed.task import MODULUS, Problem, format_completion, minimal_steps


@dataclass(frozen=True)
class TeacherConfig:
    """How much the teacher overthinks. ``easy``/``hard`` values apply at ``min``/``max``
    difficulty and are interpolated linearly in between."""

    min_difficulty: int = 2
    max_difficulty: int = 9
    intro_prob_easy: float = 0.9  # restate the task at the start
    intro_prob_hard: float = 0.6
    check_prob_easy: float = 0.5  # re-check a correct step
    check_prob_hard: float = 0.3
    error_prob_easy: float = 0.03  # inject (and catch) an error in a step
    error_prob_hard: float = 0.15
    recheck_scale_easy: float = 2.0  # Lomax scale of the number of final re-computations
    recheck_scale_hard: float = 0.8
    recheck_alpha: float = 1.5  # Lomax shape: tail P(K >= k) ~ k^-alpha
    max_rechecks: int = 5

    def at(self, difficulty: int, easy: float, hard: float) -> float:
        span = max(self.max_difficulty - self.min_difficulty, 1)
        t = min(max((difficulty - self.min_difficulty) / span, 0.0), 1.0)
        return easy + t * (hard - easy)

    def to_dict(self) -> dict:
        return asdict(self)


def lomax_count(rng: random.Random, scale: float, alpha: float, cap: int) -> int:
    """floor of a Lomax(alpha, scale) draw, capped: a heavy-tailed count with mean ~ scale/(alpha-1).

    Inverse-CDF sampling: if U ~ Uniform(0, 1] then scale * (U^(-1/alpha) - 1) is Lomax.
    """
    u = 1.0 - rng.random()  # in (0, 1]
    return min(cap, math.floor(scale * (u ** (-1.0 / alpha) - 1.0)))


def _step_text(label: str, digit: int, prev: int | None, total: int) -> str:
    if prev is None:
        return f"{label} is {digit}, total {total}"
    return f"{label} is {digit}, {prev} + {digit} = {total}"


def _wrong_step(rng: random.Random, label: str, digit: int, prev: int | None) -> tuple[str, int]:
    """A step with one injected error: a wrong digit (look-up slip) or a wrong sum."""
    base = 0 if prev is None else prev
    if rng.random() < 0.5:
        bad_digit = (digit + rng.randrange(1, MODULUS)) % MODULUS
        bad_total = (base + bad_digit) % MODULUS
        return _step_text(label, bad_digit, prev, bad_total), bad_total
    bad_total = (base + digit + rng.randrange(1, MODULUS)) % MODULUS
    return _step_text(label, digit, prev, bad_total), bad_total


def teacher_thinking(
    problem: Problem, rng: random.Random, cfg: TeacherConfig = TeacherConfig()
) -> str:
    """The overthinking trace (the text inside ``<think>``) for ``problem``."""
    n = problem.difficulty
    sums = problem.partial_sums()
    parts: list[str] = []
    if rng.random() < cfg.at(n, cfg.intro_prob_easy, cfg.intro_prob_hard):
        parts.append(f"we need {'+'.join(problem.labels)} mod 10.")
    p_check = cfg.at(n, cfg.check_prob_easy, cfg.check_prob_hard)
    p_error = cfg.at(n, cfg.error_prob_easy, cfg.error_prob_hard)
    for i, (label, digit) in enumerate(zip(problem.labels, problem.digits)):
        prev = None if i == 0 else sums[i - 1]
        right = _step_text(label, digit, prev, sums[i])
        if rng.random() < p_error:
            wrong, bad_total = _wrong_step(rng, label, digit, prev)
            parts.append(f"{wrong}. wait, let me check: {right}, not {bad_total}.")
        else:
            parts.append(f"{right}.")
            if rng.random() < p_check:
                parts.append(f"wait, let me check: {right}. right.")
    k = lomax_count(
        rng,
        cfg.at(n, cfg.recheck_scale_easy, cfg.recheck_scale_hard),
        cfg.recheck_alpha,
        cfg.max_rechecks,
    )
    for _ in range(k):
        if n == 1:
            redo = f"total {sums[0]}"
        else:
            redo = ", ".join(
                f"{sums[i - 1]} + {problem.digits[i]} = {sums[i]}" for i in range(1, n)
            )
        parts.append(f"wait, let me check again: {redo}. right.")
    parts.append(f"so the answer is {problem.answer}.")
    return " ".join(parts)


def teacher_completion(
    problem: Problem, rng: random.Random, cfg: TeacherConfig = TeacherConfig()
) -> str:
    """The full assistant turn: overthinking trace, ``</think>``, boxed answer."""
    return format_completion(teacher_thinking(problem, rng, cfg), problem.answer)


def minimal_thinking(problem: Problem) -> str:
    return " ".join(minimal_steps(problem))


@dataclass
class TraceAudit:
    """What a trace did, step by step (used by the tests and the properties experiment).

    steps:          main steps written (one per term when the trace is complete)
    wrong_steps:    main steps whose digit or sum was wrong
    caught:         wrong steps immediately followed by a check that fixed them
    checks:         step re-checks written (useful = after a wrong step)
    rechecks:       whole re-computations at the end
    complete:       every term was summed and the final sum is the right answer
    """

    steps: int = 0
    wrong_steps: int = 0
    caught: int = 0
    checks: int = 0
    rechecks: int = 0
    complete: bool = False

    @property
    def useless_checks(self) -> int:
        return self.checks - self.caught


_STEP = re.compile(r"([a-z]) is (\d), (?:total (\d)|(\d) ?\+ ?(\d) ?= ?(\d))")


def audit_trace(problem: Problem, thinking: str) -> TraceAudit:
    """Walk ``thinking`` (the text inside ``<think>``) and count steps, errors and fixes.

    A main step is right when its digit is the labelled digit and its sum is the previous
    (possibly corrected) total plus that digit, mod 10. A check (``wait, let me check:``
    followed by a step) after a wrong step catches it when it states the right step. The
    trace continues from the last stated total, as the teacher's traces do.
    """
    out = TraceAudit()
    digit_of = dict(zip(problem.labels, problem.digits))
    sums = problem.partial_sums()
    total: int | None = None  # the running sum the trace currently holds
    before = 0  # the running sum before the last main step (what a check restarts from)
    last_wrong = False
    index = 0  # terms summed so far
    for chunk in re.split(r"(?=wait, let me check)", thinking):
        is_check = chunk.startswith("wait, let me check:")
        if chunk.startswith("wait, let me check again"):
            out.rechecks += 1
            continue
        for m in _STEP.finditer(chunk):
            label, digit = m.group(1), int(m.group(2))
            if m.group(3) is not None:
                prev, new = 0, int(m.group(3))
            else:
                prev, new = int(m.group(4)), int(m.group(6))
            if is_check and out.steps > 0:
                ok = (
                    digit_of.get(label) == digit
                    and (new - prev - digit) % MODULUS == 0
                    and prev == before
                )
                out.checks += 1
                if last_wrong and ok:
                    out.caught += 1
                if ok:
                    total = new
                last_wrong = last_wrong and not ok
                is_check = False  # later steps in this chunk are main steps
                continue
            expected_label = problem.labels[index] if index < problem.difficulty else None
            ok = (
                digit_of.get(label) == digit
                and (new - prev - digit) % MODULUS == 0
                and prev == (total or 0)
            )
            out.steps += 1
            right = ok and label == expected_label
            before = total or 0
            if not right:
                out.wrong_steps += 1
            last_wrong = not right
            total = new
            index += 1
    out.complete = index == problem.difficulty and total == sums[-1] and not last_wrong
    return out
