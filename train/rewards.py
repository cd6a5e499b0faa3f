"""Length-aware rewards in the unified form R_hat(y) = C(y) + lambda(y) * S(y).

Sources: DLER (arXiv 2510.15110, section 3.1: truncation penalty), Laser (arXiv 2505.15612,
section 3, Eq. 1 and Table 1: the unified form, LASER, LASER-D, LASER-DE and the baselines
L1-Exact / L1-Max, Kimi-1.5, Arora & Zanette), see docs/algorithms.md §1.1 and §3.

Two layers:

* pure scalar functions, one per method (``truncation_reward``, ``laser_reward``, ...),
  taking the correctness reward R, the length L (tokens) and the method's constants;
  group-level methods (Kimi-1.5, Arora-Zanette) take the lists of one prompt's rollouts;
* `LengthReward`, a callable with TRL's reward signature
  ``(prompts, completions, completion_ids, answer, **kwargs) -> list[float]`` that grades each
  completion with the shared grader (`evals.grading.get_grader`) under the answer contract
  (`evals.grading.grade_completion`: when the chat template opened the think block, a
  completion that never writes ``</think>`` has no answer, so it is wrong and badly
  formatted, whatever it boxed while thinking), detects truncation from ``completion_ids``
  (no EOS within the limit, never from text) and applies one method.

Lengths count completion tokens up to and including the EOS token, as TRL's completion mask
does. Group-level methods group the rollouts of one prompt by the ``id`` column (else by the
prompt itself); with several processes every process must hold whole groups, which
`train.trainer` checks.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from artifacts.errors import ShortcotError
from evals.grading import Grade, get_grader, grade_completion

METHODS = (
    "truncation",
    "laser",
    "laser_d",
    "laser_de",
    "da_dler",
    "l1_exact",
    "l1_max",
    "kimi",
    "arora_zanette",
    "correctness",
)

# ----------------------------------------------------------------------------- base rewards


def binary_reward(grade: Grade) -> float:
    """DLER's correctness reward (section 3.1): 1 when the boxed answer after ``</think>`` is
    verified correct, else 0."""
    return 1.0 if grade.correct else 0.0


def laser_base_reward(grade: Grade) -> float:
    """Laser's base reward R (released code): +1 correct, -0.5 wrong, -1 bad format (no
    ``\\boxed{}`` after a closed think block; a truncated response usually lands here)."""
    if not grade.formatted:
        return -1.0
    return 1.0 if grade.correct else -0.5


def is_truncated(
    completion_ids: Sequence[int], eos_token_ids: Sequence[int], limit: int | None = None
) -> bool:
    """True when no EOS token occurs among the first ``limit`` completion tokens (all of them
    when ``limit`` is None): the response was cut off, whatever its text says.

    >>> is_truncated([5, 6, 2], eos_token_ids=[2])
    False
    >>> is_truncated([5, 6, 2], eos_token_ids=[2], limit=2)
    True
    """
    head = completion_ids if limit is None else completion_ids[:limit]
    eos = set(eos_token_ids)
    return not any(t in eos for t in head)


def has_repetition(token_ids: Sequence[int], n: int = 20, repeats: int = 3) -> bool:
    """A simple n-gram repetition detector: True when some n-gram of tokens occurs at least
    ``repeats`` times. Laser's code gives LASER-DE's exploration bonus only when its own
    repetition detector fires no alarm; this stand-in keeps that condition optional and
    explicit (hand-written: no installed library ships one)."""
    if len(token_ids) < n * repeats:
        return False
    counts: dict[tuple, int] = defaultdict(int)
    for i in range(len(token_ids) - n + 1):
        key = tuple(token_ids[i : i + n])
        counts[key] += 1
        if counts[key] >= repeats:
            return True
    return False


# ------------------------------------------------------------- per-response length rewards


def truncation_reward(r: float, truncated: bool, truncated_factor: float = 0.0) -> float:
    """Truncation (DLER section 3.1; Laser Table 1): C = 0, lambda = 1, S = R if L <= L_T else 0.

    ``truncated`` is "no EOS within L_T". The paper gives a truncated response 0
    (``truncated_factor=0``); DLER's released code multiplies its reward by 0.1 instead.

    >>> truncation_reward(1.0, truncated=False), truncation_reward(1.0, truncated=True)
    (1.0, 0.0)
    >>> truncation_reward(1.0, truncated=True, truncated_factor=0.1)
    0.1
    """
    return r * truncated_factor if truncated else r


def laser_reward(r: float, correct: bool, length: int, target: int, alpha: float = 0.5) -> float:
    """LASER (Laser Table 1): C = R, lambda = I(R), S = alpha * I(L <= L_T).

    With Laser's base reward: 1.5 correct and short, 1.0 correct and long, -0.5 wrong, -1 bad
    format. LASER-D is the same with a per-difficulty target (`train.laser_d`).

    >>> laser_reward(1.0, True, 90, 100), laser_reward(1.0, True, 120, 100), laser_reward(-0.5, False, 10, 100)
    (1.5, 1.0, -0.5)
    """
    return r + (alpha if correct and length <= target else 0.0)


def laser_de_reward(
    r: float,
    correct: bool,
    length: int,
    target: int,
    alpha: float = 0.5,
    repetitive: bool = False,
) -> float:
    """LASER-DE (Laser Table 1): C = R, lambda = 1,
    S = alpha * I(R) * I(L <= L_A) + alpha * (1 - I(R)) * I(L > L_A).

    A wrong answer longer than L_A earns the exploration bonus (-0.5 -> 0) unless
    ``repetitive`` (the released code's condition; pass False to disable it).

    >>> laser_de_reward(-0.5, False, 120, 100), laser_de_reward(-0.5, False, 120, 100, repetitive=True)
    (0.0, -0.5)
    """
    if correct:
        return r + (alpha if length <= target else 0.0)
    return r + (alpha if length > target and not repetitive else 0.0)


def da_dler_target(
    correct_ratio: float, short_target: int = 2000, long_target: int = 4000, threshold: float = 0.5
) -> int:
    """DA-DLER's two-target rule (DLER section 4.4): a prompt whose rollouts are correct at a
    ratio >= ``threshold`` is easy and gets ``short_target``, else ``long_target``. (The
    threshold rule is inferred from the paper's text; no code was released.)

    >>> da_dler_target(0.5), da_dler_target(0.25)
    (2000, 4000)
    """
    return short_target if correct_ratio >= threshold else long_target


def l1_exact_reward(r: float, length: int, target: int, alpha: float = 0.0003) -> float:
    """L1-Exact (Aggarwal & Welleck 2025; Laser Table 1): C = R, lambda = 1,
    S = -alpha * |L - L_T|.

    >>> round(l1_exact_reward(1.0, 1500, 1000), 6)
    0.85
    """
    return r - alpha * abs(length - target)


def l1_max_reward(
    correct: bool, length: int, target: int, alpha: float = 0.01, delta: float = 0.5
) -> float:
    """L1-Max (Aggarwal & Welleck 2025; Laser Table 1): C = 0, lambda = I(R),
    S = clip(alpha * (L_T - L) + delta, 0, 1).

    >>> l1_max_reward(True, 90, 100), l1_max_reward(True, 200, 100), l1_max_reward(False, 10, 100)
    (0.6, 0.0, 0.0)
    """
    if not correct:
        return 0.0
    return min(1.0, max(0.0, alpha * (target - length) + delta))


def kimi_rewards(
    rs: Sequence[float], corrects: Sequence[bool], lengths: Sequence[int]
) -> list[float]:
    """Kimi-1.5 length reward (Kimi team 2025, section 2.3.3; Laser Table 1) for one prompt's
    rollouts: C = R, lambda = 1, with lam = 0.5 - (L - Lmin) / (Lmax - Lmin) over the group,
    S = lam for a correct response and min(0, lam) for a wrong one; S = 0 when all lengths
    are equal.

    >>> kimi_rewards([1, 1, 0], [True, True, False], [10, 20, 30])
    [1.5, 1.0, -0.5]
    """
    lo, hi = min(lengths), max(lengths)
    out = []
    for r, c, n in zip(rs, corrects, lengths):
        lam = 0.0 if hi == lo else 0.5 - (n - lo) / (hi - lo)
        out.append(float(r) + (lam if c else min(0.0, lam)))
    return out


def arora_zanette_rewards(
    rs: Sequence[float], corrects: Sequence[bool], lengths: Sequence[int], alpha: float = 0.1
) -> list[float]:
    """Efficient Reasoning (Arora & Zanette 2025, Eq. 4; Laser Table 1) for one prompt's
    rollouts: C = R, lambda = I(R), S = -alpha * sigmoid((L - mean) / std), with mean and
    (population) std over the prompt's correct responses; std = 0 gives S = -alpha / 2.

    >>> [round(x, 4) for x in arora_zanette_rewards([1, 1, 0], [True, True, False], [10, 30, 5], alpha=0.2)]
    [0.9462, 0.8538, 0.0]
    """
    correct_lengths = [n for n, c in zip(lengths, corrects) if c]
    if correct_lengths:
        mean = sum(correct_lengths) / len(correct_lengths)
        std = math.sqrt(sum((n - mean) ** 2 for n in correct_lengths) / len(correct_lengths))
    out = []
    for r, c, n in zip(rs, corrects, lengths):
        if not c:
            out.append(float(r))
            continue
        z = (n - mean) / std if std > 0 else 0.0
        out.append(float(r) - alpha / (1.0 + math.exp(-z)))
    return out


# ------------------------------------------------------------------ the TRL reward function


def completion_text(completion) -> str:
    """TRL passes a completion as text (standard datasets) or as a list of messages
    (conversational datasets); return the assistant text in both cases."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content", "") or "" for m in completion if isinstance(m, dict))
    if isinstance(completion, dict):
        return completion.get("content", "") or ""
    raise ShortcotError(
        f"unexpected completion type {type(completion).__name__}; pass text or chat messages"
    )


@dataclass
class RewardConfig:
    """How rollouts are scored (the ``reward`` section of a training config).

    method:            one of truncation, laser, laser_d, laser_de, da_dler, l1_exact, l1_max,
                       kimi, arora_zanette, correctness (no length term).
    grader:            correctness grader name (`evals.grading.get_grader`): "math", "testbed"
                       or "module:function".
    base:              correctness reward R: "binary" (1/0, DLER) or "laser" (+1/-0.5/-1);
                       "auto" picks binary for truncation/da_dler/correctness/l1_max and laser otherwise.
    target_length:     L_T in tokens (truncation limit, LASER target, L1 target).
    alpha:             the length term's coefficient (LASER 0.5; L1-Exact 0.0003; L1-Max 0.01;
                       Arora-Zanette 0.1).
    l1_delta:          L1-Max's offset delta.
    truncated_factor:  truncation reward multiplier for a response without EOS within L_T
                       (paper 0; DLER's released code 0.1).
    repetition_check:  LASER-DE: give the exploration bonus only to non-repetitive responses.
    repetition_ngram, repetition_repeats: the detector's n-gram size and count.
    da_short_target, da_threshold: DA-DLER's short target and easy threshold (long target is
                       ``target_length``).
    target_schedule:   ThinkPrune-style staged targets: ``[[step, L_T], ...]``; from each
                       optimizer step on, L_T is the listed value (e.g. [[0, 4096], [200, 3072],
                       [400, 2048]]); empty = always ``target_length``.
    """

    method: str = "truncation"
    grader: str = "math"
    base: str = "auto"
    target_length: int = 4000
    alpha: float | None = None
    l1_delta: float = 0.5
    truncated_factor: float = 0.0
    repetition_check: bool = False
    repetition_ngram: int = 20
    repetition_repeats: int = 3
    da_short_target: int = 2000
    da_threshold: float = 0.5
    target_schedule: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ShortcotError(
                f"unknown reward method {self.method!r}; use one of {', '.join(METHODS)}"
            )
        if self.base not in ("auto", "binary", "laser"):
            raise ShortcotError(f"reward base {self.base!r} is not auto, binary or laser")

    def resolved_base(self) -> str:
        if self.base != "auto":
            return self.base
        return (
            "binary"
            if self.method in ("truncation", "da_dler", "correctness", "l1_max")
            else "laser"
        )

    def target_at(self, step: int) -> int:
        """L_T at optimizer step ``step`` (ThinkPrune's stages when ``target_schedule`` is set).

        >>> RewardConfig(target_length=9, target_schedule=[[0, 4096], [10, 2048]]).target_at(12)
        2048
        """
        target = self.target_length
        for start, value in sorted(self.target_schedule):
            if step >= start:
                target = int(value)
        return target

    def resolved_alpha(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return {"l1_exact": 0.0003, "l1_max": 0.01, "arora_zanette": 0.1}.get(self.method, 0.5)


@dataclass
class LengthReward:
    """A TRL reward function: grade each completion, then apply ``config.method``.

    ``eos_token_ids`` decide truncation. ``prompt_opens_think``: the chat template opens the
    think block in the prompt (`train.rl.build_trainer` reads it off the template), so the
    completions hold only ``... </think> answer`` (the answer contract, `grade`).
    For LASER-D, ``targets`` maps a difficulty bucket to
    its adaptive target L_A(d) (kept up to date by `train.trainer.ShortcotGRPOTrainer`);
    a bucket without a target yet uses ``target_length``. ``last`` holds the per-completion
    details of the latest call (correct, length, truncated, group accuracy, target) for
    logging and tests.
    """

    config: RewardConfig
    eos_token_ids: list[int]
    targets: dict[str, int] = field(default_factory=dict)
    bucket_thresholds: tuple[float, float] = (1 / 3, 2 / 3)
    grader: Callable | None = None
    prompt_opens_think: bool = False
    last: dict = field(default_factory=dict)
    __name__: str = "length_reward"

    def __post_init__(self):
        self.grader = self.grader or get_grader(self.config.grader)
        self.__name__ = f"{self.config.method}_reward"

    def grade(self, completion, answer) -> Grade:
        """One completion (text or TRL's chat messages) graded under the answer contract."""
        return grade_completion(
            self.grader, completion_text(completion), str(answer), self.prompt_opens_think
        )

    def __call__(self, prompts, completions, completion_ids, answer=None, **kwargs) -> list[float]:
        if answer is None:
            raise ShortcotError(
                "the training dataset has no 'answer' column; add one (the reference answers)"
            )
        from train.laser_d import bucket_of

        cfg = self.config
        state = kwargs.get("trainer_state")
        if cfg.target_schedule:  # ThinkPrune stages: L_T follows the optimizer step
            step = state.global_step if state is not None else 0
            cfg = dataclasses.replace(cfg, target_length=cfg.target_at(step), target_schedule=[])
        n = len(completions)
        grades = [self.grade(c, a) for c, a in zip(completions, answer)]
        base_fn = binary_reward if cfg.resolved_base() == "binary" else laser_base_reward
        rs = [base_fn(g) for g in grades]
        correct = [g.correct for g in grades]
        lengths = [len(ids) for ids in completion_ids]
        truncated = [
            is_truncated(ids, self.eos_token_ids, cfg.target_length) for ids in completion_ids
        ]
        keys = kwargs.get("id") or [str(p) for p in prompts]
        groups: dict = defaultdict(list)
        for i, k in enumerate(keys):
            groups[k].append(i)
        group_acc = [0.0] * n
        for idx in groups.values():
            acc = sum(correct[i] for i in idx) / len(idx)
            for i in idx:
                group_acc[i] = acc
        alpha = cfg.resolved_alpha()
        targets = [cfg.target_length] * n
        m = cfg.method
        if m in ("laser_d", "laser_de"):
            targets = [
                self.targets.get(bucket_of(a, *self.bucket_thresholds), cfg.target_length)
                for a in group_acc
            ]
        elif m == "da_dler":
            targets = [
                da_dler_target(a, cfg.da_short_target, cfg.target_length, cfg.da_threshold)
                for a in group_acc
            ]
        if m == "truncation" or m == "da_dler":
            tr = [
                is_truncated(ids, self.eos_token_ids, t) for ids, t in zip(completion_ids, targets)
            ]
            out = [truncation_reward(r, t, cfg.truncated_factor) for r, t in zip(rs, tr)]
        elif m == "correctness":
            out = list(rs)
        elif m in ("laser", "laser_d"):
            out = [
                laser_reward(r, c, n_, t, alpha)
                for r, c, n_, t in zip(rs, correct, lengths, targets)
            ]
        elif m == "laser_de":
            out = []
            for r, c, n_, t, ids in zip(rs, correct, lengths, targets, completion_ids):
                rep = cfg.repetition_check and has_repetition(
                    ids, cfg.repetition_ngram, cfg.repetition_repeats
                )
                out.append(laser_de_reward(r, c, n_, t, alpha, repetitive=rep))
        elif m == "l1_exact":
            out = [l1_exact_reward(r, n_, cfg.target_length, alpha) for r, n_ in zip(rs, lengths)]
        elif m == "l1_max":
            out = [
                l1_max_reward(c, n_, cfg.target_length, alpha, cfg.l1_delta)
                for c, n_ in zip(correct, lengths)
            ]
        else:  # group-level: kimi, arora_zanette
            out = [0.0] * n
            for idx in groups.values():
                args = ([rs[i] for i in idx], [correct[i] for i in idx], [lengths[i] for i in idx])
                vals = (
                    kimi_rewards(*args)
                    if m == "kimi"
                    else arora_zanette_rewards(*args, alpha=alpha)
                )
                for i, v in zip(idx, vals):
                    out[i] = v
        self.last = {
            "correct": correct,
            "formatted": [g.formatted for g in grades],
            "ungradable": [bool(getattr(g, "ungradable", False)) for g in grades],
            "lengths": lengths,
            "truncated": truncated,
            "group_accuracy": group_acc,
            "targets": targets,
            "rewards": out,
        }
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and n:
            log_metric("shortcot/accuracy", sum(correct) / n)
            log_metric("shortcot/format_rate", sum(g.formatted for g in grades) / n)
            log_metric("shortcot/ungradable_rate", sum(self.last["ungradable"]) / n)
            log_metric("shortcot/truncation_rate", sum(truncated) / n)
            log_metric("shortcot/mean_length", sum(lengths) / n)
        return out
