"""Splitting a completion into its think trace and the steps of that trace, losslessly.

Every compression strategy works on steps: it keeps a subset of them and closes the trace
again. The split is lossless (``"".join(steps) == thinking``) so that what is kept reads
exactly as the teacher wrote it, whitespace included.

A step is a sentence or a line: boundaries fall after ``.``, ``!``, ``?`` or ``;``
followed by whitespace, after a newline, and before a reflection marker ("Wait",
"Alternatively", "Let me check", ...) that opens a new thought without punctuation.
The overthinking paper (arXiv 2412.21187) segments a trace into *solution rounds* with a
model; sentence granularity is a finer, model-free approximation: a round that ends with
an answer is a run of steps whose last one states that answer (see `distill.answers`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# After sentence punctuation + whitespace, or after a run of newlines.
_BOUNDARY_AFTER = re.compile(r"(?<=[.!?;])[ \t]+(?=\S)|\n+")
# Before a reflection marker preceded by whitespace ("... is 19 wait, let me check").
REFLECTION_WORDS = (
    r"wait|hmm|alternatively|actually|let me (?:double[- ])?check|let me verify|let me re-?check|"
    r"let's check|let's verify|double[- ]check"
)
_BOUNDARY_BEFORE = re.compile(
    rf"(?<=\s)(?<!but )(?<!me )(?=(?:but )?(?:{REFLECTION_WORDS})\b)", re.IGNORECASE
)

_MARKER_ONLY = re.compile(rf"^\s*(?:but )?(?:{REFLECTION_WORDS})[\s,.!:;-]*$", re.IGNORECASE)

StepSplitter = Callable[[str], list[str]]


def split_steps(thinking: str) -> list[str]:
    """Split a think trace into steps; ``"".join(split_steps(t)) == t`` always.

    Each step keeps the whitespace that follows it, so dropping a step keeps the text tidy.

    >>> split_steps(" 12 plus 7 is 19. wait, let me check: 19. ")
    [' 12 plus 7 is 19. ', 'wait, let me check: 19. ']
    >>> split_steps("a = 3\\nb = 5\\n")
    ['a = 3\\n', 'b = 5\\n']
    """
    cuts = {m.end() for m in _BOUNDARY_AFTER.finditer(thinking)}
    cuts |= {m.start() for m in _BOUNDARY_BEFORE.finditer(thinking)}
    cuts = sorted(c for c in cuts if 0 < c < len(thinking))
    steps, start = [], 0
    for c in cuts:
        if c > start:
            steps.append(thinking[start:c])
            start = c
    steps.append(thinking[start:])
    # A step of whitespace only (leading newlines) or a bare marker ("Wait, ") is glued to
    # the step after it: "Wait, let me check: 19." is one step.
    merged: list[str] = []
    for s in steps:
        if merged and (not s.strip() or not merged[-1].strip() or _MARKER_ONLY.match(merged[-1])):
            merged[-1] += s
        else:
            merged.append(s)
    return merged


@dataclass(frozen=True)
class ThinkParts:
    """A completion as ``prefix + thinking + suffix``.

    prefix:   everything up to and including ``<think>`` ("" when the chat template put
              ``<think>`` in the prompt and the completion starts inside the trace).
    thinking: the trace between the tags.
    suffix:   ``</think>`` and the final answer part after it.
    """

    prefix: str
    thinking: str
    suffix: str

    def with_thinking(self, thinking: str) -> str:
        """The completion with its trace replaced by ``thinking``, keeping the original's
        trailing whitespace before ``</think>`` (so the closing reads as the teacher's)."""
        tail_ws = self.thinking[len(self.thinking.rstrip()) :]
        return self.prefix + thinking.rstrip() + tail_ws + self.suffix


def split_completion(text: str) -> ThinkParts | None:
    """Split a completion at its (last) ``</think>``; None when the trace is not closed
    (no final answer, nothing to keep) or when there is no think block at all."""
    if THINK_CLOSE not in text:
        return None
    head, close, tail = text.rpartition(THINK_CLOSE)
    if THINK_OPEN in head:
        pre, open_, thinking = head.partition(THINK_OPEN)
        return ThinkParts(pre + open_, thinking, close + tail)
    return ThinkParts("", head, close + tail)


def normalize_step(step: str) -> str:
    """A step's text for duplicate detection: lowercase, single spaces, no trailing punctuation."""
    return " ".join(step.lower().split()).rstrip(".;!? ")
