"""Length-aware rewards in the unified form R_hat(y) = C(y) + lambda(y) * S(y): the pure
formulas, one per method, with their golden tests (``tests/test_rewards.py``).

Sources: DLER (arXiv 2510.15110, section 3.1: truncation penalty), Laser (arXiv 2505.15612,
section 3, Eq. 1 and Table 1: the unified form, LASER, LASER-D, LASER-DE and the baselines
L1-Exact / L1-Max, Kimi-1.5, Arora & Zanette), see docs/algorithms.md §1.1 and §3.

Each function takes the correctness reward R, the length L (tokens) and the method's
constants; group-level methods (Kimi-1.5, Arora-Zanette) take the lists of one prompt's
rollouts. `train.reward_methods` registers each method (its base reward, default alpha,
whether it needs whole groups) and `train.length_reward.LengthReward` applies one of them
to TRL's completions.

Lengths count completion tokens up to and including the EOS token, as TRL's completion mask
does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from evals.grading import Grade

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
    """A token n-gram repetition verdict: True when some n-gram of tokens occurs at least
    ``repeats`` times (responses shorter than ``n * repeats`` tokens never are). Laser's code
    gives LASER-DE's exploration bonus only when its own repetition detector fires no alarm;
    this stand-in keeps that condition optional and explicit.

    Hand-written because TRL's detector (`trl.rewards.get_repetition_penalty_reward`, also
    over token n-grams) answers another question: it returns a penalty proportional to the
    share of repeated n-grams, ``1 - unique / total``, which does not say how often any one
    n-gram recurs, so no threshold on it gives this verdict. Same TRL penalty (-3/7, n = 2),
    different verdicts (one n-gram 4 times; three n-grams twice each):

    >>> has_repetition([1, 1, 1, 1, 1, 2, 1, 3], n=2, repeats=3)
    True
    >>> has_repetition([1, 1, 1, 2, 1, 2, 1, 3], n=2, repeats=3)
    False
    """
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
