"""Answer detectors: which answers does one step of a think trace reach?

Cutting a trace at "the first point where the answer reached is correct" (overthinking
paper, arXiv 2412.21187; docs/algorithms.md §4.2) needs to read candidate answers off
the steps of the trace. That is task-specific, so detectors are pluggable by name:

- ``math`` (default): a box anywhere in the step (`evals.grading.boxed_answers`: the
  grader's reading of ``\\boxed{X}``, ``\\boxed X``, ``\\fbox{X}``), "the answer is X" /
  "answer: X", a value stated at the end of the step after ``=``, ``is`` or ``:``
  ("... = 19.", "12 plus 7 is 19.", "let me check: 19."), and a step that is only a
  conclusion ("So 19.", "Therefore, 19."). This also covers the CPU
  testbed's traces (``<think> ... </think> \\boxed{N}`` with "wait, let me check"
  steps), whose steps end in the running value.
- ``last-number``: the last number in the step (integer, decimal or fraction).
- ``testbed``: the CPU testbed's traces (`testbed.task`, `testbed.teacher`). The running
  sum after an intermediate term often equals the final answer (1 time in 10), so only
  the step that adds the *last* labelled digit ("d is 7, 0 + 7 = 7"), a whole
  re-computation ("let me check again: ..., 0 + 7 = 7") and "the answer is 7" state the answer. It needs the
  problem text, which `bind_detector` passes.
- ``module:function``: any function ``(step: str) -> list[str]``, or
  ``(step: str, problem: str) -> list[str]`` when the problem text is needed.

A detector only proposes candidates; whether one is correct is decided by the shared
grader (`is_correct_answer`), so "correct" means the same as in evaluation and rewards.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable

from artifacts.plugins import load_callable
from evals.grading import Grader, boxed_answers

AnswerDetector = Callable[[str], list[str]]

_VALUE = r"\$?\s*(?P<x>[^\s=:$]{1,40}?)\s*\$?"
_END = r"\s*[.;!]?\s*$"
_ANSWER_IS = re.compile(
    r"answer\s*(?:is|=|:)\s*\$?\s*(?P<x>[^\s$]{1,40}?)\s*\$?(?:[.;,!]\s|[.;,!]?\s*$)", re.I
)
_END_VALUE = re.compile(rf"(?:=|\bis\b|:|\bgives\b|\bget\b){_VALUE}{_END}", re.I)
_SO_VALUE = re.compile(
    rf"^\s*(?:so|thus|therefore|hence)\b[,:]?\s*(?:it'?s\s+)?{_VALUE}{_END}", re.I
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def math_answers(step: str) -> list[str]:
    """Candidate answers stated in ``step`` (see the module docstring), in order, unique.

    >>> math_answers("12 plus 7 is 19. ")
    ['19']
    >>> math_answers("So the answer is \\\\boxed{\\\\frac{1}{2}}.")
    ['\\\\frac{1}{2}']
    >>> math_answers("Then we add 3 to both sides")
    []
    """
    found = boxed_answers(step)
    found += [m.group("x") for m in _ANSWER_IS.finditer(step)]
    for pattern in (_END_VALUE, _SO_VALUE):
        m = pattern.search(step.strip())
        if m:
            found.append(m.group("x"))
    out: list[str] = []
    for a in found:
        a = a.strip().rstrip(".,;")
        if a and "\\boxed" not in a and a not in out:
            out.append(a)
    return out


def last_number(step: str) -> list[str]:
    """The last number in ``step``, if any.

    >>> last_number("a = 3 , total 8 ;")
    ['8']
    """
    nums = _NUMBER.findall(step)
    return nums[-1:]


_TB_STEP = re.compile(r"\b([a-z]) is (\d+), (?:total (\d+)|\d+ ?\+ ?\d+ ?= ?(\d+))")
_TB_RECHECK = re.compile(r"check again:.*= ?(\d+)\s*[.;,]?\s*$")


def testbed_answers(step: str, problem: str | None = None) -> list[str]:
    """Answers stated in a testbed step (see the module docstring); ``problem`` is the
    problem text ``"Add the digits mod 10: k 3 q 5 ..."``, whose last label marks the
    step that completes the sum.

    >>> p = "Add the digits mod 10: a 3 b 5"
    >>> testbed_answers("a is 3, total 3. ", p), testbed_answers("b is 5, 3 + 5 = 8. ", p)
    ([], ['8'])
    >>> testbed_answers("wait, let me check: b is 5, 3 + 5 = 8, not 9. ", p)
    ['8']
    >>> testbed_answers("wait, let me check again: 3 + 5 = 8. right.", p), testbed_answers("so the answer is 8.", p)
    (['8'], ['8'])
    """
    out = boxed_answers(step) + [m.group("x").rstrip(".,;") for m in _ANSWER_IS.finditer(step)]
    m = _TB_RECHECK.search(step.replace(" right.", "").strip())
    if m:
        out.append(m.group(1))
    if problem and ":" in problem:
        labels = problem.split(":", 1)[1].split()[0::2]
        last = labels[-1] if labels else None
        out += [m.group(3) or m.group(4) for m in _TB_STEP.finditer(step) if m.group(1) == last]
    return list(dict.fromkeys(a for a in out if a))


DETECTORS: dict[str, AnswerDetector] = {
    "math": math_answers,
    "last-number": last_number,
    "testbed": testbed_answers,
}


def bind_detector(detector: Callable, problem: str | None) -> AnswerDetector:
    """``detector`` as a function of the step alone, with ``problem`` bound if it takes one."""
    try:
        takes_problem = "problem" in inspect.signature(detector).parameters
    except (TypeError, ValueError):
        takes_problem = False
    return functools.partial(detector, problem=problem) if takes_problem else detector


def get_detector(name: str) -> AnswerDetector:
    """The detector called ``name`` (a key of `DETECTORS` or ``module:function``)."""
    if name in DETECTORS:
        return DETECTORS[name]
    return load_callable(name, "answer detector", list(DETECTORS))


def is_correct_answer(candidate: str, reference: str, grader: Grader) -> bool:
    """Grade a bare candidate answer with the shared grader, by presenting it the way a
    final answer is presented (``</think> \\boxed{candidate}``)."""
    return grader(f"</think> \\boxed{{{candidate}}}", str(reference)).correct
