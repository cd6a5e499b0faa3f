"""The testbed task: a running sum mod 10 over letter-labelled digits.

A problem lists ``n`` digits labelled a, b, c, ... and asks for their sum mod 10, for
example ``"Add the digits mod 10: a 3 b 5 c 2 d 7"`` (answer 7). The difficulty knob is
``n``, the number of terms: every term is one more step the model can get wrong, so
accuracy falls with ``n``.

Why this task (issue 4 and docs/testbed.md have the measurements): chains of modular
arithmetic written as ``acc op x = y`` and pointer chasing over a map stayed at chance for
a 4-layer, 128-wide Llama trained for 10 minutes on a CPU, and so did this task with
random (instead of alphabetical) labels, while the labelled running sum, whose every
step restates the digit it uses and then the new sum, is learned in a few hundred steps.

Every digit is written after a space (``3 + 5 = 8``, not ``3+5=8``): the tokenizer makes
`` 5`` one token, and a digit that were sometimes `` 5`` and sometimes ``5`` would be two
unrelated tokens the model must first learn to identify.

The minimal correct trace writes, for each term, its label, its digit and the new partial
sum: ``a 3 3 b 5 8 c 2 0 d 7 7`` followed by ``</think>`` and ``\\boxed{7}``. This is the
format issue 4 measured to work. A probe on the same model (minimal traces only,
difficulty 2-6, batch 64, lr 2e-3, teacher-forced accuracy on the sum tokens of 200
held-out problems) measured the alternatives: ``b is 5, 3 + 5 = 8.`` stayed at chance
(9.5% / 9.9% / 10.0% of sums right after 50 / 100 / 150 steps) while ``b 5 8`` reached
26% / 33% / 38% / 79% after 50 / 100 / 150 / 200 steps. The long-chain teacher
(`testbed.teacher`) adds the redundant steps.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from evals.grading import Grade, extract_boxed, split_think

PROBLEM_PREFIX = "Add the digits mod 10:"
MODULUS = 10

# Splits are drawn from independent random streams: stream = seed * 1000 + offset.
SPLIT_OFFSETS = {"train": 0, "monitor": 1, "test": 2}


@dataclass(frozen=True)
class Problem:
    """One testbed problem: labelled digits (in prompt order) and their sum mod 10."""

    labels: tuple[str, ...]
    digits: tuple[int, ...]

    @property
    def difficulty(self) -> int:
        """The number of terms (larger = harder)."""
        return len(self.digits)

    @property
    def answer(self) -> int:
        return sum(self.digits) % MODULUS

    @property
    def text(self) -> str:
        pairs = " ".join(f"{a} {d}" for a, d in zip(self.labels, self.digits))
        return f"{PROBLEM_PREFIX} {pairs}"

    def partial_sums(self) -> list[int]:
        """The running sums mod 10 after each term: ``[d1, d1+d2, ...]`` mod 10."""
        out, total = [], 0
        for d in self.digits:
            total = (total + d) % MODULUS
            out.append(total)
        return out


def sample_problem(rng: random.Random, difficulty: int) -> Problem:
    """A problem with ``difficulty`` terms labelled a, b, c, ... in order; uniform digits 0-9.

    Labels are in alphabetical order, as in the design issue 4 measured to work: with
    random distinct labels the model had not learned to copy from the prompt after 200
    steps (loss stuck at 0.9, accuracy 8%, chance 10%; see docs/testbed.md).
    """
    if not 1 <= difficulty <= 26:
        raise ValueError(f"difficulty must be in 1..26, got {difficulty}")
    labels = tuple(string.ascii_lowercase[:difficulty])
    digits = tuple(rng.randrange(MODULUS) for _ in range(difficulty))
    return Problem(labels, digits)


def parse_problem(text: str) -> Problem:
    """Inverse of `Problem.text` (used to rebuild traces from a data record)."""
    body = text.split(":", 1)[1].split()
    return Problem(tuple(body[0::2]), tuple(int(x) for x in body[1::2]))


def generate_split(
    split: str,
    n: int,
    seed: int,
    min_difficulty: int,
    max_difficulty: int,
    exclude: set[str] | None = None,
) -> list[Problem]:
    """``n`` problems of the split, difficulties uniform in [min, max], deterministic in ``seed``.

    ``exclude`` holds problem texts that must not appear (train excludes monitor and test,
    so held-out accuracy is not memorisation). Duplicates within a split are allowed only
    when the space is too small to avoid them (tiny difficulties), never across splits.
    """
    rng = random.Random(seed * 1000 + SPLIT_OFFSETS[split])
    exclude = exclude or set()
    out: list[Problem] = []
    tries = 0
    while len(out) < n:
        p = sample_problem(rng, rng.randint(min_difficulty, max_difficulty))
        tries += 1
        if p.text in exclude and tries < 100 * n:
            continue
        out.append(p)
    return out


def step_text(label: str, digit: int, total: int) -> str:
    """One step: the label, the digit it stands for, the new partial sum (``b 5 8``)."""
    return f"{label} {digit} {total}"


def minimal_steps(problem: Problem) -> list[str]:
    """The necessary steps: each restates the labelled digit, then the new partial sum."""
    return [
        step_text(label, digit, total)
        for label, digit, total in zip(problem.labels, problem.digits, problem.partial_sums())
    ]


def format_completion(thinking: str, answer: int | str) -> str:
    """The assistant turn: ``<think>`` trace ``</think>`` then the boxed answer."""
    return f"<think>\n{thinking}\n</think>\n\\boxed{{{answer}}}"


def minimal_trace(problem: Problem) -> str:
    """The shortest correct completion (the reference for "overthinking" ratios)."""
    return format_completion(" ".join(minimal_steps(problem)), problem.answer)


def grade(completion: str, reference: str) -> Grade:
    """Grader "testbed": last ``\\boxed{}`` after ``</think>``, compared as an integer.

    >>> g = grade("<think> a 3 3 </think> \\\\boxed{3}", "3")
    >>> g.correct, g.answer, g.formatted
    (True, '3', True)
    >>> grade("<think> a 3 3", "3").formatted
    False
    """
    _, answer_part = split_think(completion)
    answer = extract_boxed(answer_part)
    if answer is None:
        return Grade(correct=False, answer=None, formatted=False)
    try:
        correct = int(answer.strip()) == int(str(reference).strip())
    except ValueError:  # a non-integer answer is simply wrong
        correct = False
    return Grade(correct=correct, answer=answer, formatted=True)


def to_record(problem: Problem, split: str, index: int) -> dict:
    """The data row of contract 5: ``id, problem, answer, difficulty``."""
    return {
        "id": f"{split}-{index:06d}",
        "problem": problem.text,
        "answer": str(problem.answer),
        "difficulty": problem.difficulty,
    }
