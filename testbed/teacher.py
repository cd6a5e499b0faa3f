"""The long-chain teacher: correct traces padded with the redundancy of an overthinking model.

A trace is the minimal trace (`testbed.task.minimal_steps`: ``a 3 3 b 5 8 ...``, label,
digit, new partial sum) plus four kinds of extra text, the habits R1-style models show
(issue 4):

- restating the task at the start (``we need a to d mod 10.``);
- re-verification after a step (``wait, check b 5 8 right.``): it re-reads the digit from
  the prompt and recomputes the sum from the previous total; useless when the step was
  right, which it is for most checks;
- backtracking: a step with an injected slip, always caught by the check that follows,
  which re-reads the prompt and recomputes from the previous total; the trace continues
  from the corrected sum. Two kinds of slip: a look-up slip (a wrong digit copied from
  the prompt, summed correctly: ``b 4 7 wait, check b 5 8 not 7.``) and an arithmetic
  slip (the right digit, a wrong sum: ``b 5 7 wait, check b 5 8 not 7.``), the kind of
  error the trained model itself makes. The slipped token (the wrong digit, the wrong
  sum) is returned as a masked span (`Trace.masked`) that the SFT loss skips
  (`testbed.sft.collate`), so the model learns to *catch* slips without learning to
  *make* them: every ``prev + digit = sum`` it is trained to write is right. These
  checks are the useful ones: a model trained on such traces learns to re-check and fix
  its own slips, and one that drops every check also loses the fixes. Slips are injected
  more often on hard (long) problems;
- whole re-computations at the end (``wait, check again: a 3 3 b 5 8 c 2 0 d 7 7 right.``),
  whose count is heavy-tailed (Lomax / Pareto II) and larger on easy problems, where they
  are never needed.

Before format 4 of the build the teacher made look-up slips only and trained on them
unmasked; the model's own errors were arithmetic slips that no check in its training
ever caught, and its checks fixed 0% of them (README, testbed section).

Every trace ends in the right answer: each slip is fixed before the next step uses the
sum, and the re-computations restate the correct sums.

Measured alternatives (difficulty 2-6 unless said; 192 test problems, temperature 0.6):
these traces with difficulty 2-8 reached 12.5% after 450 steps (sums not learned yet);
with the step checks moved after the chain of steps (so that each sum is always three
tokens after the previous one) the model reached 100% at every difficulty after 450
steps but wrote only 2.1x the minimal trace (it dropped most re-computations): too easy
and not overthinking enough, so the checks stay between the steps.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass

from testbed.task import MODULUS, Problem, format_completion, minimal_steps, step_text


@dataclass(frozen=True)
class TeacherConfig:
    """How much the teacher overthinks. ``easy``/``hard`` values apply at ``min``/``max``
    difficulty and are interpolated linearly in between."""

    min_difficulty: int = 2
    max_difficulty: int = 9  # the build sets both ends to its own range (testbed.build.make_config)
    intro_prob_easy: float = 0.9  # restate the task at the start
    intro_prob_hard: float = 0.5
    check_prob_easy: float = 0.5  # re-check a correct step
    check_prob_hard: float = 0.25
    # Slips: the default teacher makes look-up slips (format 3's teacher, the one on which
    # length RL costs accuracy on the hardest problems); `CHECKS_TEACHER` makes arithmetic
    # slips with the slipped sum masked instead (build preset "checks").
    error_prob_easy: float = 0.02  # inject (and catch) a look-up slip in a step
    error_prob_hard: float = 0.12
    arith_prob_easy: float = 0.0  # inject (and catch) an arithmetic slip in a step
    arith_prob_hard: float = 0.0
    mask_slips: bool = False  # the slipped token is excluded from the SFT loss
    recheck_scale_easy: float = 2.0  # Lomax scale of the number of final re-computations
    recheck_scale_hard: float = 0.6
    recheck_alpha: float = 1.5  # Lomax shape: tail P(K >= k) ~ k^-alpha
    max_rechecks: int = 5

    def at(self, difficulty: int, easy: float, hard: float) -> float:
        span = max(self.max_difficulty - self.min_difficulty, 1)
        t = min(max((difficulty - self.min_difficulty) / span, 0.0), 1.0)
        return easy + t * (hard - easy)

    def to_dict(self) -> dict:
        return asdict(self)


# The teacher of build preset "checks" (issue 12, point 5): arithmetic slips, the error the
# trained model itself makes, at the rate of the default look-up slips, the slipped sum
# masked out of the SFT loss. Measured (README, testbed section): 95.3% accuracy against the
# default's ~84%, wrong sums in 0.5% of its steps, yet its checks fixed none of its own
# errors, and RL on it did not cost accuracy. Look-up slips (2-8% of steps) plus arithmetic
# slips (4-12%), both masked, never learned the sums (17%, one build of 400 steps): every
# slip moves the previous sum away from its usual place three tokens back.
CHECKS_TEACHER = {
    "error_prob_easy": 0.0,
    "error_prob_hard": 0.0,
    "arith_prob_easy": 0.02,
    "arith_prob_hard": 0.12,
    "mask_slips": True,
}


def lomax_count(rng: random.Random, scale: float, alpha: float, cap: int) -> int:
    """floor of a Lomax(alpha, scale) draw, capped: a heavy-tailed count with mean ~ scale/(alpha-1).

    Inverse-CDF sampling: if U ~ Uniform(0, 1] then scale * (U^(-1/alpha) - 1) is Lomax.
    """
    u = 1.0 - rng.random()  # in (0, 1]
    return min(cap, math.floor(scale * (u ** (-1.0 / alpha) - 1.0)))


def _slip(rng: random.Random, label: str, digit: int, prev: int) -> tuple[str, int]:
    """A step with a look-up slip: a wrong digit, summed correctly from ``prev``."""
    bad_digit = (digit + rng.randrange(1, MODULUS)) % MODULUS
    bad_total = (prev + bad_digit) % MODULUS
    return step_text(label, bad_digit, bad_total), bad_total


def _arith_slip(rng: random.Random, label: str, digit: int, total: int) -> tuple[str, int]:
    """A step with an arithmetic slip: the right digit, a wrong sum."""
    bad_total = (total + rng.randrange(1, MODULUS)) % MODULUS
    return step_text(label, digit, bad_total), bad_total


@dataclass(frozen=True)
class Trace:
    """A teacher trace and the character spans of its slipped tokens (not to be learned)."""

    text: str
    masked: tuple[tuple[int, int], ...] = ()

    def shifted(self, prefix: str, suffix: str = "") -> Trace:
        """The trace wrapped in ``prefix`` / ``suffix``, spans moved with it."""
        k = len(prefix)
        return Trace(prefix + self.text + suffix, tuple((a + k, b + k) for a, b in self.masked))


def teacher_trace(
    problem: Problem, rng: random.Random, cfg: TeacherConfig = TeacherConfig()
) -> Trace:
    """The overthinking trace (the text inside ``<think>``) for ``problem``, with the
    spans of its slipped tokens (the wrong digit of a look-up slip, the wrong sum of an
    arithmetic slip) when ``cfg.mask_slips``."""
    n = problem.difficulty
    sums = problem.partial_sums()
    parts: list[str] = []
    masked: list[tuple[int, int]] = []

    def offset() -> int:  # where the next part starts in " ".join(parts)
        return sum(len(x) + 1 for x in parts)

    if rng.random() < cfg.at(n, cfg.intro_prob_easy, cfg.intro_prob_hard):
        parts.append(f"we need {problem.labels[0]} to {problem.labels[-1]} mod 10.")
    p_check = cfg.at(n, cfg.check_prob_easy, cfg.check_prob_hard)
    p_error = cfg.at(n, cfg.error_prob_easy, cfg.error_prob_hard)
    p_arith = cfg.at(n, cfg.arith_prob_easy, cfg.arith_prob_hard)
    for i, (label, digit) in enumerate(zip(problem.labels, problem.digits)):
        prev = 0 if i == 0 else sums[i - 1]
        right = step_text(label, digit, sums[i])
        u = rng.random()  # one draw picks look-up slip / arithmetic slip / right step
        if u < p_error + p_arith:
            lookup = u < p_error
            if lookup:
                wrong, bad_total = _slip(rng, label, digit, prev)
            else:
                wrong, bad_total = _arith_slip(rng, label, digit, sums[i])
            # step_text is "label digit sum": the digit is char 2, the sum char 4
            at = offset() + (2 if lookup else 4)
            if cfg.mask_slips:
                masked.append((at, at + 1))
            parts.append(f"{wrong} wait, check {right} not {bad_total}.")
        else:
            parts.append(right)
            if rng.random() < p_check:
                parts.append(f"wait, check {right} right.")
    k = lomax_count(
        rng,
        cfg.at(n, cfg.recheck_scale_easy, cfg.recheck_scale_hard),
        cfg.recheck_alpha,
        cfg.max_rechecks,
    )
    for _ in range(k):
        parts.append(f"wait, check again: {' '.join(minimal_steps(problem))} right.")
    parts.append(f"so the answer is {problem.answer}.")
    return Trace(" ".join(parts), tuple(masked))


def teacher_thinking(
    problem: Problem, rng: random.Random, cfg: TeacherConfig = TeacherConfig()
) -> str:
    """The overthinking trace (the text inside ``<think>``) for ``problem``."""
    return teacher_trace(problem, rng, cfg).text


def teacher_example(
    problem: Problem, rng: random.Random, cfg: TeacherConfig = TeacherConfig()
) -> Trace:
    """The full assistant turn (trace, ``</think>``, boxed answer) with its masked spans."""
    trace = teacher_trace(problem, rng, cfg)
    prefix, suffix = format_completion("\0", problem.answer).split("\0")
    return trace.shifted(prefix, suffix)


def teacher_completion(
    problem: Problem, rng: random.Random, cfg: TeacherConfig = TeacherConfig()
) -> str:
    """The full assistant turn: overthinking trace, ``</think>``, boxed answer."""
    return teacher_example(problem, rng, cfg).text


def minimal_thinking(problem: Problem) -> str:
    return " ".join(minimal_steps(problem))


@dataclass
class TraceAudit:
    """What a trace did, step by step (used by the tests and the properties experiment).

    steps:          main steps written (one per term when the trace is complete)
    wrong_steps:    main steps whose label, digit or sum was wrong
    wrong_sums:     main steps whose sum is not the held total plus the digit they wrote
                    (an arithmetic slip)
    caught:         wrong steps immediately followed by a check that fixed them
    checks:         step re-checks written (useful = after a wrong step)
    rechecks:       whole re-computations at the end
    complete:       every term was summed and the final sum is the right answer
    """

    steps: int = 0
    wrong_steps: int = 0
    wrong_sums: int = 0
    caught: int = 0
    checks: int = 0
    rechecks: int = 0
    complete: bool = False

    @property
    def useless_checks(self) -> int:
        return self.checks - self.caught


_STEP = re.compile(r"\b([a-z]) (\d) (\d)\b")


def audit_trace(problem: Problem, thinking: str) -> TraceAudit:
    """Walk ``thinking`` (the text inside ``<think>``) and count steps, errors and fixes.

    A main step (``b 5 8``) is right when it is the next label, its digit is the labelled
    digit and its sum is the previous (possibly corrected) total plus that digit, mod 10.
    A check (``wait, check`` followed by a step) after a wrong step catches it when it
    states the right step. The
    trace continues from the last stated total, as the teacher's traces do.
    """
    out = TraceAudit()
    digit_of = dict(zip(problem.labels, problem.digits))
    sums = problem.partial_sums()
    total: int | None = None  # the running sum the trace currently holds
    before = 0  # the running sum before the last main step (what a check restarts from)
    last_wrong = False
    index = 0  # terms summed so far
    for chunk in re.split(r"(?=wait, check)", thinking):
        is_check = chunk.startswith("wait, check ")
        if chunk.startswith("wait, check again"):
            out.rechecks += 1
            continue
        for m in _STEP.finditer(chunk):
            label, digit, new = m.group(1), int(m.group(2)), int(m.group(3))
            if is_check and out.steps > 0:
                ok = digit_of.get(label) == digit and new == (before + digit) % MODULUS
                out.checks += 1
                if last_wrong and ok:
                    out.caught += 1
                if ok:
                    total = new
                last_wrong = last_wrong and not ok
                is_check = False  # later steps in this chunk are main steps
                continue
            expected_label = problem.labels[index] if index < problem.difficulty else None
            prev = total or 0
            right = (
                label == expected_label
                and digit_of.get(label) == digit
                and new == (prev + digit) % MODULUS
            )
            out.steps += 1
            out.wrong_sums += new != (prev + digit) % MODULUS
            before = prev
            if not right:
                out.wrong_steps += 1
            last_wrong = not right
            total = new
            index += 1
    out.complete = index == problem.difficulty and total == sums[-1] and not last_wrong
    return out
