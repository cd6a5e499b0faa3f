"""Compression strategies for reasoning chains: pure functions on traces (docs/algorithms.md §4).

Each strategy takes the surviving traces of one problem and returns a `StageResult`: the
traces it keeps (possibly rewritten, shorter) and a reason for each one it drops. They
compose: `distill.compress.run_pipeline` grades the raw samples (only verified-correct, finished,
well-formatted traces enter: docs/algorithms.md §4, the rule every strategy shares),
applies the strategies in the order given, and re-verifies what comes out.

- `shortest_correct`: Self-Training Elicits Concise Reasoning (arXiv 2502.20122): of N
  sampled chains keep the shortest correct one; optionally only when it is at most
  ``max_ratio_to_median`` times the median correct length of that problem.
- `first_correct`: the overthinking paper (arXiv 2412.21187, "First-Correct Solutions",
  FCS, and FCS+Reflection): cut the think trace after the first solution round that ends
  on the correct answer (`round_ends`), optionally keep one verification (the next round
  that states an answer again, only when it confirms that answer), close the trace, keep
  the final answer, re-verify.
- `step_prune`: SPIRIT-style step pruning (docs/algorithms.md §4.4): drop redundant steps
  (verbatim restatements, and re-checks that state nothing new and correct nothing,
  `redundant_steps`) one by one, each drop kept
  only while the trace still reaches the correct answer and the completion still grades
  correct. With a ``scorer`` (`distill.perplexity`) steps are ranked by how little their
  removal changes the model's perplexity instead of by the rule.
- `any_correct`: the control: the earliest-sampled correct trace, uncompressed.

Token counts come from ``ctx.count_tokens`` for original and compressed text alike, so
the compression ratio compares like with like.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from distill.answers import AnswerDetector, get_detector, is_correct_answer
from distill.steps import (
    REFLECTION_WORDS,
    StepSplitter,
    normalize_step,
    split_completion,
    split_steps,
)
from evals.grading import Grade, Grader, grade_completion


@dataclass(frozen=True)
class Trace:
    """One reasoning chain of one problem.

    text:            the full completion (think trace + final answer), as it will be trained on.
    num_tokens:      tokens of ``text`` now.
    original_tokens: tokens of the teacher's completion before any compression.
    finished:        the teacher stopped on EOS (False = truncated, never kept).
    sample:          index of the sample among the teacher's N for this problem.
    """

    text: str
    num_tokens: int
    original_tokens: int
    finished: bool = True
    sample: int = 0


@dataclass
class Context:
    """What the strategies need to know about one problem.

    reference:    the reference answer.
    grader:       the shared grader (`evals.grading.get_grader`).
    count_tokens: text -> number of tokens (the teacher's / student's tokenizer).
    detector:     step -> candidate answers (`distill.answers`).
    splitter:     think trace -> steps (`distill.steps.split_steps`).
    prompt:       the chat messages of the problem (for model-based scoring).
    prompt_opens_think: the teacher's chat template opened the think block in the prompt;
                  every verdict goes through the answer contract
                  (`evals.grading.grade_completion`), so a trace that never closes it has
                  no answer.
    """

    reference: str
    grader: Grader
    count_tokens: Callable[[str], int]
    detector: AnswerDetector = field(default_factory=lambda: get_detector("math"))
    splitter: StepSplitter = split_steps
    prompt: list[dict] | None = None
    prompt_opens_think: bool = False
    _memo: dict = field(default_factory=dict, repr=False)

    def step_correct(self, step: str) -> bool | None:
        """True if ``step`` states a correct answer, False if it states only wrong ones,
        None if it states no answer."""
        if step not in self._memo:
            cands = self.detector(step)
            self._memo[step] = (
                None
                if not cands
                else any(is_correct_answer(c, self.reference, self.grader) for c in cands)
            )
        return self._memo[step]

    def verdict(self, text: str) -> Grade:
        """The grade of a whole completion under the answer contract."""
        return grade_completion(self.grader, text, str(self.reference), self.prompt_opens_think)

    def grade(self, text: str) -> bool:
        return self.verdict(text).correct


@dataclass
class StageResult:
    kept: list[Trace]
    dropped: list[str] = field(default_factory=list)  # one reason per dropped trace
    notes: list[str] = field(default_factory=list)  # things worth counting that are not drops


Strategy = Callable[[list[Trace], Context], StageResult]


def with_text(trace: Trace, text: str, ctx: Context) -> Trace:
    return replace(trace, text=text, num_tokens=ctx.count_tokens(text))


# A step that opens a re-check or another attempt ("Wait, ...", "Let me verify ...").
REFLECTION_START = re.compile(
    rf"^\s*(?:but |so |ok(?:ay)?,? )?(?:{REFLECTION_WORDS}|to verify|to confirm|verify|verifying|checking|"
    r"yes\b|right\b|correct\b|again\b|indeed\b|so again\b|as computed\b|recall\b)",
    re.IGNORECASE,
)
# A bare restated conclusion ("So 8.", "Thus 1/2."): redundant once the value was derived.
_BARE_CONCLUSION = re.compile(
    r"^\s*(?:so|thus|therefore|hence)\b[,:]?\s*\$?[^\s$]{1,40}\$?\s*[.;!]?\s*$", re.I
)
_CONCLUSION = re.compile(r"\\boxed\{|\banswer\b", re.IGNORECASE)


# ---------------------------------------------------------------------------- shortest


def shortest_correct(
    traces: Sequence[Trace], ctx: Context, max_ratio_to_median: float | None = None
) -> StageResult:
    """Keep the shortest trace (fewest tokens; the earliest sample on ties) of a problem.

    The traces reaching a strategy are already graded correct, so this is "shortest correct
    of N" (arXiv 2502.20122). With ``max_ratio_to_median`` r, the problem is dropped unless
    the shortest is at most r x the median length of its correct traces, i.e. keep only
    chains clearly shorter than the model's typical correct one (r < 1; with a single
    correct trace shortest == median, so any r < 1 drops it).
    """
    if not traces:
        return StageResult([])
    best = min(traces, key=lambda t: (t.num_tokens, t.sample))
    if max_ratio_to_median is not None:
        median = statistics.median(t.num_tokens for t in traces)
        if best.num_tokens > max_ratio_to_median * median:
            return StageResult(
                [],
                [f"shortest-correct: above {max_ratio_to_median} x median length"]
                + ["shortest-correct: not the shortest"] * (len(traces) - 1),
            )
    return StageResult([best], ["shortest-correct: not the shortest"] * (len(traces) - 1))


def any_correct(traces: Sequence[Trace], ctx: Context) -> StageResult:
    """Keep the earliest-sampled correct trace, uncompressed: the control that separates
    the effect of compression from that of fine-tuning on the model's own correct chains."""
    if not traces:
        return StageResult([])
    first = min(traces, key=lambda t: t.sample)
    return StageResult([first], ["any-correct: not the first"] * (len(traces) - 1))


# ---------------------------------------------------------------------------- first correct


def round_ends(steps: Sequence[str]) -> list[bool]:
    """Which steps close a solution round: the last step, a step followed by a reflection
    ("Wait, ...", "Let me check ...", see `REFLECTION_START`), or a step that states its
    result as an answer (``\\boxed{}``, "the answer is").

    The overthinking paper counts solutions, not intermediate results: a value stated in
    the middle of a derivation (a partial sum that happens to equal the answer) is not
    "the answer reached". Rounds are delimited by the reflection markers that open the
    next attempt, the same markers the paper's examples show between solutions.

    >>> round_ends(["a = 3. ", "b = 8. ", "Wait, a = 3. ", "so 8. "])
    [False, True, False, True]
    """
    out = []
    for i, s in enumerate(steps):
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        out.append(nxt is None or bool(REFLECTION_START.match(nxt)) or bool(_CONCLUSION.search(s)))
    return out


def _with_steps(traces: Sequence[Trace], ctx: Context, res: StageResult, name: str):
    """(trace, its parts, its reasoning steps) for each trace with a think block; a trace
    without one is kept as it is (noted in ``res``): there is nothing to cut."""
    for t in traces:
        parts = split_completion(t.text)
        if parts is None:
            res.kept.append(t)
            res.notes.append(f"{name}: no think block, kept as is")
            continue
        yield t, parts, ctx.splitter(parts.thinking)


def first_correct_cut(
    steps: Sequence[str], ctx: Context, keep_verification: bool = False
) -> int | None:
    """The number of steps to keep: through the first round end (`round_ends`) that states
    a correct answer, plus (``keep_verification``) one verification (FCS+Reflection): the
    next round, up to and including its end step that states an answer again, kept only
    when that answer is correct too. A verification reaching another answer would make a
    chain that contradicts itself before its final answer, and one that states no answer
    confirms nothing; neither is kept. (The chains reaching a strategy are verified correct,
    so their final answer is the reference.) None when no round ends on the correct answer.

    >>> from evals.grading import math_grade
    >>> ctx = Context("19", math_grade, len)
    >>> steps = ["12 plus 7 is 19. ", "Wait, 12 + 7 = 19. ", "Wait, so 19. "]
    >>> first_correct_cut(steps, ctx), first_correct_cut(steps, ctx, keep_verification=True)
    (1, 2)
    >>> first_correct_cut(["12 plus 7 is 19. ", "Wait, 12 + 7 = 18. ", "Wait, no: 19. "], ctx, True)
    1
    """
    return _first_correct_cut(steps, ctx, keep_verification)[0]


def _first_correct_cut(
    steps: Sequence[str], ctx: Context, keep_verification: bool
) -> tuple[int | None, str | None]:
    """`first_correct_cut` and a note when a verification round was left out."""
    ends = round_ends(steps)
    for i, step in enumerate(steps):
        if ends[i] and ctx.step_correct(step):
            if not keep_verification:
                return i + 1, None
            for j in range(i + 1, len(steps)):
                verdict = ctx.step_correct(steps[j]) if ends[j] else None
                if verdict is not None:
                    if verdict:
                        return j + 1, None
                    return i + 1, "first-correct: verification reached another answer, not kept"
            return i + 1, None
    return None, None


def first_correct(
    traces: Sequence[Trace], ctx: Context, keep_verification: bool = False, on_fail: str = "keep"
) -> StageResult:
    """Cut each trace after its first correct step (FCS, or FCS+Reflection with
    ``keep_verification``), close the trace, keep the final answer, re-verify.

    A trace whose answer is never detected in its steps, or that is already as short as
    the cut, is kept unchanged (noted). A cut that fails re-verification is replaced by the
    uncut trace (``on_fail="keep"``, which was itself verified) or dropped (``"drop"``).
    """
    res = StageResult([])
    for t, parts, steps in _with_steps(traces, ctx, res, "first-correct"):
        n, note = _first_correct_cut(steps, ctx, keep_verification)
        if note:
            res.notes.append(note)
        if n is None:
            res.kept.append(t)
            res.notes.append("first-correct: answer not found in the trace, kept as is")
            continue
        if n >= len(steps):
            res.kept.append(t)
            res.notes.append("first-correct: nothing after the first correct step")
            continue
        cut = parts.with_thinking("".join(steps[:n]))
        if ctx.grade(cut):
            res.kept.append(with_text(t, cut, ctx))
            res.notes.append("first-correct: cut")
        elif on_fail == "drop":
            res.dropped.append("first-correct: cut failed re-verification")
        else:
            res.kept.append(t)
            res.notes.append("first-correct: cut failed re-verification, kept uncut")
    return res


# ---------------------------------------------------------------------------- step prune


def reaches_answer(steps: Sequence[str], ctx: Context) -> bool:
    """The last step of ``steps`` that states an answer states a correct one."""
    for s in reversed(steps):
        verdict = ctx.step_correct(s)
        if verdict is not None:
            return verdict
    return False


# Words that mark a check as a correction of an earlier step: such a check is never redundant.
CORRECTION = re.compile(
    r"\b(?:not|wrong|mistake|error|incorrect|instead|should be|oops|miscalculated)\b", re.I
)


_OPERATOR_SPACES = re.compile(r"\s*([=+*/^-])\s*")


def _content(step: str) -> tuple[set[str], set[str]]:
    """The values a step states: its equations (tokens with ``=`` and a digit, whole) and
    every number in it (equations included). Spaces around operators are removed first,
    so ``3 + 5 = 8`` and ``3+5=8`` are the same equation."""
    step = _OPERATOR_SPACES.sub(r"\1", step)
    tokens = [t.strip(".,;:!?()$") for t in step.split()]
    eqs = {t for t in tokens if "=" in t and any(c.isdigit() for c in t)}
    return eqs, set(re.findall(r"\d+(?:\.\d+)?", step))


def _restates(step: str, eqs: set[str], nums: set[str]) -> bool:
    """``step`` states no equation and no number that is not in ``eqs`` / ``nums``."""
    e, n = _content(step)
    step = _OPERATOR_SPACES.sub(r"\1", step)
    bare = set(re.findall(r"\d+(?:\.\d+)?", " ".join(t for t in step.split() if "=" not in t)))
    return e <= eqs and bare <= nums and (not e or n <= nums)


def redundant_steps(steps: Sequence[str]) -> list[int]:
    """Indices of steps that the rule calls redundant: a verbatim restatement of an earlier
    step (after `normalize_step`), or a re-check ("wait, let me check ...", "right.") or
    bare conclusion ("So 8.") that states no value the steps before it had not already
    stated and has no correction word (`CORRECTION`). A check that corrects an earlier step
    ("3+5=8, not 9") stays: those are the useful checks.

    >>> redundant_steps(["a = 3. ", "b = 5. ", "wait, let me check: 3. ", "b = 5. ", "So 5."])
    [2, 3, 4]
    >>> redundant_steps(["q is 5, 3+5=9. ", "wait, let me check: q is 5, 3+5=8, not 9. ", "right. "])
    [2]
    """
    seen: set[str] = set()
    eqs: set[str] = set()
    nums: set[str] = set()
    out = []
    for i, s in enumerate(steps):
        key = normalize_step(s)
        recheck = REFLECTION_START.match(s) or _BARE_CONCLUSION.match(s)
        if (key and key in seen) or (
            recheck and not CORRECTION.search(s) and _restates(s, eqs, nums)
        ):
            out.append(i)
        seen.add(key)
        e, n = _content(s)
        eqs |= e
        nums |= n
    return out


def prune_steps(
    steps: Sequence[str],
    candidates: Sequence[int],
    ok: Callable[[list[str]], bool],
    max_drops: int | None = None,
) -> list[str]:
    """Greedily drop ``candidates`` (in the order given) while ``ok(remaining_steps)``,
    at most ``max_drops`` of them."""
    keep = [True] * len(steps)
    dropped = 0
    for i in candidates:
        if max_drops is not None and dropped >= max_drops:
            break
        keep[i] = False
        if ok([s for s, k in zip(steps, keep) if k]):
            dropped += 1
        else:
            keep[i] = True
    return [s for s, k in zip(steps, keep) if k]


def _reaches_answer_nonempty(kept: list[str], ctx: Context) -> bool:
    return bool(kept) and reaches_answer(kept, ctx)


def step_prune(
    traces: Sequence[Trace],
    ctx: Context,
    scorer: Callable[[list[str], Callable[[str], str], Context], list[float]] | None = None,
    threshold: float = 0.02,
    max_drop_fraction: float = 1.0,
) -> StageResult:
    """Drop redundant steps while the answer still verifies.

    Without a scorer the candidates are `redundant_steps`, in order. With a scorer
    (SPIRIT; ``scorer(steps, rebuild, ctx)``, with ``rebuild(thinking) -> completion``,
    returns per step the relative perplexity increase when that step is removed) the candidates are the steps whose score is below
    ``threshold``, least important first. Steps are scored once on the full trace rather
    than re-scored after every removal (SPIRIT iterates): one forward pass per step
    instead of per step per round. At most ``max_drop_fraction`` of the steps are dropped.
    Each drop is kept only if the remaining steps still reach the correct answer
    (`reaches_answer`); the pruned completion is then graded once (grading after every
    drop would cost a math-verify call per candidate step on 10k-token traces), and if it
    fails the trace is kept unpruned.
    """
    res = StageResult([])
    for t, parts, steps in _with_steps(traces, ctx, res, "step-prune"):
        if scorer is None:
            cands = redundant_steps(steps)
        else:
            scores = scorer(steps, parts.with_thinking, ctx)
            cands = sorted(
                (i for i, s in enumerate(scores) if s < threshold), key=lambda i: scores[i]
            )
        ok = partial(_reaches_answer_nonempty, ctx=ctx)
        kept_steps = prune_steps(steps, cands, ok, int(max_drop_fraction * len(steps)))
        if len(kept_steps) == len(steps):
            res.kept.append(t)
            res.notes.append("step-prune: nothing to drop")
            continue
        pruned = parts.with_thinking("".join(kept_steps))
        if not ctx.grade(pruned):
            res.kept.append(t)
            res.notes.append("step-prune: pruned trace failed re-verification, kept unpruned")
            continue
        res.kept.append(with_text(t, pruned, ctx))
        res.notes.append("step-prune: pruned")
    return res
