"""The grader: what "correct" means, shared by evaluation, RL rewards and dataset building.

A grader is a plain function ``grade(completion, reference) -> Grade``. The default,
`math_grade`, follows the protocol of DLER / Laser (docs/algorithms.md §5.4): the
final answer is what follows ``</think>`` (or the whole completion for models without a
think block), its last ``\\boxed{...}`` is extracted and checked against the reference with
math-verify. Whether a completion was truncated is decided by the caller from token ids (no
EOS within the limit), never from text.

The answer contract (`answer_part`, `grade_completion`) is the one rule every caller puts in
front of its grader: evaluation (`evals.run`), every reward (`train.rewards`) and the
dataset builder (`distill.build`). A think block opened and never closed means no answer,
whoever opened it: the completion (``<think>`` written by the model, the CPU testbed and
Qwen3 with thinking on) or the chat template. DeepSeek-R1-Distill's and QwQ's templates end
the generation prompt with ``<think>\\n``, so their completions hold only
``... </think> answer``, and one that never writes ``</think>`` (cut off while thinking, or
stopping without closing it) has no tag at all; without the contract a ``\\boxed{}`` written
inside its thinking would count as the answer. Whether the template opened the block is read
off the rendered generation prompt (`prompt_opens_think`, `resolve_prompt_opens_think`);
every CLI can override it (``--prompt-opens-think yes|no``).

Other graders (the CPU testbed's) plug in by name through `get_grader`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from artifacts.errors import ShortcotError
from evals.verify import check_answer

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Grade:
    """The verdict on one completion.

    correct:   the extracted answer matches the reference.
    answer:    the extracted final answer (content of the last ``\\boxed{}``), None if absent.
    formatted: the completion has the expected shape: a closed think block when one was
               opened, and a boxed answer after it. Laser's "bad format" is ``not formatted``.
    ungradable: the answer could not be checked in bounded time (`evals.verify`: too
               large to parse safely, or past the time limit); never correct. Counted in
               evaluation and dataset summaries and in the RL logs.
    """

    correct: bool
    answer: str | None
    formatted: bool
    ungradable: bool = False


Grader = Callable[[str, str], Grade]

# The verdict on a completion that has no answer under the contract (unclosed think block).
NO_ANSWER = Grade(correct=False, answer=None, formatted=False)


def split_think(text: str) -> tuple[str | None, str]:
    """Split a completion into (thinking, answer part).

    - ``...</think> answer`` -> (thinking, answer); a leading ``<think>`` is dropped. Chat
      templates of R1-style models put ``<think>`` in the prompt, so a completion often
      has only the closing tag.
    - ``<think> ...`` never closed -> (thinking, ""): the model never answered.
    - no tags -> (None, text): a model without a think block, or one whose prompt opened
      the block (the contract, `answer_part`, decides which).
    """
    if THINK_CLOSE in text:
        head, _, tail = text.rpartition(THINK_CLOSE)
        head = head.split(THINK_OPEN, 1)[1] if THINK_OPEN in head else head
        return head, tail
    if THINK_OPEN in text:
        return text.split(THINK_OPEN, 1)[1], ""
    return None, text


# ------------------------------------------------------------------- the answer contract

PROMPT_OPENS_THINK = ("auto", "yes", "no")
# The problem of the probe prompt rendered to read a chat template: any will do, since
# templates open the think block after the conversation, in the generation prompt.
PROBE_PROBLEM = "What is 1 + 1?"


def prompt_opens_think(prompt: str) -> bool:
    """True when a rendered generation prompt ends inside an unclosed think block.

    DeepSeek-R1-Distill and QwQ end it with ``<think>\\n``; Qwen3 with thinking off ends it
    with an empty closed block (``<think>\\n\\n</think>\\n\\n``), and with thinking on
    lets the model write ``<think>`` itself.

    >>> prompt_opens_think("<|Assistant|><think>\\n"), prompt_opens_think("<think>\\n\\n</think>\\n\\n")
    (True, False)
    """
    return prompt.rstrip().endswith(THINK_OPEN)


def think_opening(prompt: str) -> str:
    """The text with which a rendered generation prompt opened the think block
    (``"<think>\\n"`` for DeepSeek-R1-Distill), "" when it did not open one. A training
    chain that starts with it is exactly what followed the prompt's assistant tag when the
    teacher generated it (`distill.build`).

    >>> think_opening("<|Assistant|><think>\\n"), think_opening("<|assistant|>\\n")
    ('<think>\\n', '')
    """
    return prompt[prompt.rfind(THINK_OPEN) :] if prompt_opens_think(prompt) else ""


def resolve_prompt_opens_think(
    setting: str | bool | None,
    render: Callable[[list[dict]], str] | None = None,
    probe: list[dict] | None = None,
) -> bool:
    """The ``--prompt-opens-think`` setting as a bool: ``yes`` / ``no`` as given; ``auto``
    (or None) renders the generation prompt of ``probe`` (the caller's prompt for
    `PROBE_PROBLEM`: its system turn and instruction; default a bare user turn) with
    ``render`` (the chat template with the caller's arguments) and checks it with
    `prompt_opens_think`. Without a template to render, auto means no.

    >>> resolve_prompt_opens_think("auto", lambda m: "<|assistant|>\\n<think>\\n")
    True
    >>> resolve_prompt_opens_think("no", lambda m: "<think>"), resolve_prompt_opens_think("yes")
    (False, True)
    """
    if isinstance(setting, bool):
        return setting
    if setting in (None, "auto"):
        if render is None:
            return False
        probe = probe or [{"role": "user", "content": PROBE_PROBLEM}]
        return prompt_opens_think(render(probe))
    if setting in ("yes", "no"):
        return setting == "yes"
    raise ShortcotError(f"--prompt-opens-think must be auto, yes or no, got {setting!r}")


def answer_part(completion: str, prompt_opens_think: bool) -> str | None:
    """The part of ``completion`` that may hold the final answer, or None when it has none.

    The one answer contract: the answer is what follows the last ``</think>``; a think
    block opened (by the prompt, ``prompt_opens_think``, or by the completion) and never
    closed means no answer at all, so a ``\\boxed{}`` inside the thinking never counts; a
    completion with no think block (none opened, no tags) is all answer.

    >>> answer_part("a \\\\boxed{1} </think> \\\\boxed{2}", True)
    ' \\\\boxed{2}'
    >>> answer_part("a \\\\boxed{1}", True) is None, answer_part("a \\\\boxed{1}", False)
    (True, 'a \\\\boxed{1}')
    >>> answer_part("<think> a \\\\boxed{1}", False) is None
    True
    """
    if THINK_CLOSE in completion:
        return completion.rpartition(THINK_CLOSE)[2]
    if prompt_opens_think or THINK_OPEN in completion:
        return None
    return completion


def grade_completion(
    grader: Grader, completion: str, reference: str, prompt_opens_think: bool = False
) -> Grade:
    """``grader(completion, reference)`` under the answer contract: a completion without an
    answer part (`answer_part` is None) is `NO_ANSWER` (wrong, unformatted: Laser's bad
    format) and the grader is not asked. Graders get the whole completion, as before."""
    if answer_part(completion, prompt_opens_think) is None:
        return NO_ANSWER
    return grader(completion, reference)


def contract_grader(grader: Grader, prompt_opens_think: bool) -> Grader:
    """``grader`` with the answer contract in front (`grade_completion`), for code that
    takes a plain `Grader` (the distillation strategies)."""
    return functools.partial(_contract_grade, grader, prompt_opens_think)


def _contract_grade(grader: Grader, opened: bool, completion: str, reference: str) -> Grade:
    return grade_completion(grader, completion, reference, opened)


# ----------------------------------------------------------------------- boxed answers

# \boxed or \fbox as a whole command (not \boxedx), then optional spaces.
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])[ \t]*")


def _box_at(text: str, m: re.Match) -> tuple[str | None, int]:
    """(content, end) of the box whose marker ``m`` matched: a brace group (``\\boxed{5}``,
    ``\\boxed {5}``), braces matched; or, after a space, the bare argument
    (``\\boxed 5``) up to ``$`` or the end of the line, as the DeepScaleR and Qwen2.5-Math
    graders read it. Content None: the brace group was cut off, or there is no argument."""
    i = m.end()
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j].strip(), j + 1
        return None, len(text)  # unbalanced: the box was cut off
    if i == m.start() + len(m.group().rstrip()):  # no space after the command: no argument
        return None, i
    end = len(text)
    for stop in ("$", "\n"):
        k = text.find(stop, i)
        if k != -1:
            end = min(end, k)
    content = text[i:end].strip()
    return content or None, end


def extract_boxed(text: str) -> str | None:
    """Content of the last box in ``text``, ``\\boxed`` or ``\\fbox`` alike: ``\\boxed{5}``,
    ``\\boxed {5}`` (braces matched) or ``\\boxed 5`` (to ``$`` or the end of the line).
    None when there is no box or the last one was cut off.

    >>> extract_boxed(r"so \\boxed{\\frac{1}{2}} and later \\fbox{3}")
    '3'
    >>> extract_boxed(r"$\\boxed 5$."), extract_boxed(r"\\boxed {5}"), extract_boxed("no box")
    ('5', '5', None)
    """
    last = None
    for last in _BOX.finditer(text):  # noqa: B007 (the last match is the one we want)
        pass
    if last is None:
        return None
    return _box_at(text, last)[0]


def boxed_answers(text: str) -> list[str]:
    """The contents of every complete box in ``text``, in order (a box nested inside
    another is not listed separately).

    >>> boxed_answers(r"\\boxed{1}, then \\fbox{2} and \\boxed 3")
    ['1', '2', '3']
    """
    out, pos = [], 0
    while (m := _BOX.search(text, pos)) is not None:
        content, end = _box_at(text, m)
        if content is not None:
            out.append(content)
        pos = max(end, m.end())
    return out


def answers_match(answer: str, reference: str) -> bool:
    """True when ``answer`` and ``reference`` denote the same mathematical object.

    Identical strings (up to whitespace) short-circuit; everything else goes to
    math-verify (fractions, LaTeX forms, sets, intervals, equivalent expressions), bounded
    in size and time (`evals.verify.check_answer`; an answer that cannot be checked is not
    a match).
    """
    return check_answer(answer, reference) is True


def math_grade(completion: str, reference: str) -> Grade:
    """Grade a math completion: last ``\\boxed{}`` after ``</think>``, checked with math-verify.

    Alone it knows only the think tags the completion wrote; callers put the answer
    contract in front (`grade_completion`) to know the ones the prompt wrote."""
    part = answer_part(completion, prompt_opens_think=False)
    answer = None if part is None else extract_boxed(part)
    if answer is None:
        return Grade(correct=False, answer=None, formatted=False)
    verdict = check_answer(answer, str(reference))  # None: ungradable (evals.verify)
    return Grade(verdict is True, answer, True, ungradable=verdict is None)


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
