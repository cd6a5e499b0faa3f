"""The grader: what "correct" means, shared by evaluation, RL rewards and dataset building.

A grader is a plain function ``grade(completion, reference) -> Grade``. The default,
`math_grade`, follows the protocol of DLER / Laser (docs/algorithms.md §5.4): the
final answer is what follows ``</think>`` (or the whole completion for models without a
think block), its last ``\\boxed{...}`` is extracted and checked against the reference with
math-verify. An answer that appears only inside an unclosed think block does not count.
Whether a completion was truncated is decided by the caller from token ids (no EOS within
the limit), never from text.

Other graders (the CPU testbed's) plug in by name through `get_grader`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Grade:
    """The verdict on one completion.

    correct:   the extracted answer matches the reference.
    answer:    the extracted final answer (content of the last ``\\boxed{}``), None if absent.
    formatted: the completion has the expected shape: a closed think block when one was
               opened, and a boxed answer after it. Laser's "bad format" is ``not formatted``.
    """

    correct: bool
    answer: str | None
    formatted: bool


Grader = Callable[[str, str], Grade]


def split_think(text: str) -> tuple[str | None, str]:
    """Split a completion into (thinking, answer part).

    - ``...</think> answer`` -> (thinking, answer); a leading ``<think>`` is dropped. Chat
      templates of R1-style models put ``<think>`` in the prompt, so a completion often
      has only the closing tag.
    - ``<think> ...`` never closed -> (thinking, ""): the model never answered.
    - no tags -> (None, text): a model without a think block.
    """
    if THINK_CLOSE in text:
        head, _, tail = text.rpartition(THINK_CLOSE)
        head = head.split(THINK_OPEN, 1)[1] if THINK_OPEN in head else head
        return head, tail
    if THINK_OPEN in text:
        return text.split(THINK_OPEN, 1)[1], ""
    return None, text


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces matched.

    >>> extract_boxed(r"so \\boxed{\\frac{1}{2}} and later \\boxed{3}")
    '3'
    >>> extract_boxed("no box") is None
    True
    """
    for marker in ("\\boxed{", "\\fbox{"):
        start = text.rfind(marker)
        if start == -1:
            continue
        i = start + len(marker)
        depth = 1
        j = i
        while j < len(text):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[i:j].strip()
            j += 1
        return None  # unbalanced: the box was cut off
    return None


def _normalize(s: str) -> str:
    return "".join(s.split()).rstrip(".").replace("\\!", "").replace("\\,", "")


def answers_match(answer: str, reference: str) -> bool:
    """True when ``answer`` and ``reference`` denote the same mathematical object.

    Identical strings (up to whitespace) short-circuit; everything else goes to
    math-verify (fractions, LaTeX forms, sets, intervals, equivalent expressions).
    """
    if _normalize(answer) == _normalize(reference):
        return True
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    try:
        gold = parse(f"${reference}$", extraction_config=configs, parsing_timeout=None)
        pred = parse(f"${answer}$", extraction_config=configs, parsing_timeout=None)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=None))
    except Exception:  # math-verify raises on exotic input; an unparsable answer is wrong
        return False


def math_grade(completion: str, reference: str) -> Grade:
    """Grade a math completion: last ``\\boxed{}`` after ``</think>``, checked with math-verify."""
    thinking, answer_part = split_think(completion)
    answer = extract_boxed(answer_part)
    if answer is None:
        return Grade(correct=False, answer=None, formatted=False)
    return Grade(correct=answers_match(answer, str(reference)), answer=answer, formatted=True)


# Named graders; any "package.module:function" is accepted too, so new tasks plug in
# without evals importing them (the testbed depends on evals, not the other way round).
GRADERS: dict[str, str] = {
    "math": "evals.grading:math_grade",
    "testbed": "testbed.task:grade",
}


def get_grader(name: str) -> Grader:
    """Return the grader called ``name`` (a key of `GRADERS` or ``module:function``)."""
    from artifacts.plugins import load_callable

    if name in GRADERS:
        return load_callable(GRADERS[name], "grader", list(GRADERS))
    return load_callable(name, "grader", list(GRADERS))
