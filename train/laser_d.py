"""LASER-D's adaptive length targets (Laser, arXiv 2505.15612, section 4.2, Eq. 4-5;
docs/algorithms.md §3.3).

1. Difficulty buckets from each prompt's accuracy over its own K rollouts: easy >= 2/3,
   medium in [1/3, 2/3), hard < 1/3 (`bucket_of`).
2. On a monitoring set (re-sampled every N steps and at step 0), the Expected Correct
   Responses of bucket d at budget l: ``ECR_d(l) = P_{l,d} * C_d``, where P_{l,d} is the
   fraction of the bucket's monitor responses of length <= l and C_d the minimum number of
   correct responses a prompt of that bucket has (`min_correct`).
3. L_A(d) = the smallest candidate l in [L_T, L_T + step, ..., max_len] with
   ECR_d(l) >= 1; a bucket with no responses falls back to the longest response seen
   (`adaptive_targets`).

Paper and code differ only in C_d: the paper rounds up (6, 3, 1 for K = 8), the released
code rounds down (5, 2, 1) and tests ``floor(P * C_d) >= 1``, which is the same as
``P * C_d >= 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BUCKETS = ("easy", "medium", "hard")


def bucket_of(accuracy: float, hard_below: float = 1 / 3, easy_from: float = 2 / 3) -> str:
    """The difficulty bucket of a prompt from its rollout accuracy.

    >>> bucket_of(6 / 8), bucket_of(3 / 8), bucket_of(2 / 8)
    ('easy', 'medium', 'hard')
    """
    if accuracy >= easy_from - 1e-12:
        return "easy"
    if accuracy >= hard_below - 1e-12:
        return "medium"
    return "hard"


def min_correct(bucket: str, k: int, rounding: str = "ceil") -> int:
    """C_d: the fewest correct rollouts (out of K) a prompt of ``bucket`` has.

    easy: K * 2/3, medium: K * 1/3, rounded up (paper) or down (released code); hard: 1.

    >>> [min_correct(b, 8) for b in BUCKETS], [min_correct(b, 8, "floor") for b in BUCKETS]
    ([6, 3, 1], [5, 2, 1])
    """
    if bucket == "hard":
        return 1
    frac = 2 / 3 if bucket == "easy" else 1 / 3
    x = k * frac
    # guard against 8 * 2/3 = 5.333.. style float noise on exact multiples
    c = math.ceil(x - 1e-9) if rounding == "ceil" else math.floor(x + 1e-9)
    return max(1, c)


def ecr(lengths: Sequence[int], budget: int, c_d: int) -> float:
    """Expected Correct Responses ``P_{l,d} * C_d`` (Laser Eq. 4) of one bucket's monitor
    response lengths at budget l.

    >>> ecr([100, 200, 300, 400], 250, 3)
    1.5
    """
    if not lengths:
        return 0.0
    return sum(1 for n in lengths if n <= budget) / len(lengths) * c_d


def candidate_budgets(target_length: int, max_length: int, step: int = 1024) -> list[int]:
    """[L_T, L_T + step, ..., max_len] (max_len always included).

    >>> candidate_budgets(1000, 3500, 1000)
    [1000, 2000, 3000, 3500]
    """
    out = list(range(target_length, max_length, step))
    if not out or out[-1] != max_length:
        out.append(max_length)
    return out


def adaptive_targets(
    accuracies: Sequence[float],
    lengths: Sequence[Sequence[int]],
    k: int,
    target_length: int,
    max_length: int,
    step: int = 1024,
    rounding: str = "ceil",
) -> dict[str, int]:
    """L_A(d) for every bucket from a monitoring set (Laser Eq. 5).

    ``accuracies[i]`` is prompt i's accuracy over its K rollouts and ``lengths[i]`` their
    token lengths. For each bucket, the smallest candidate budget whose ECR reaches 1; a
    bucket without monitor prompts gets the longest monitor response (the fallback).
    """
    per_bucket: dict[str, list[int]] = {b: [] for b in BUCKETS}
    for acc, ls in zip(accuracies, lengths):
        per_bucket[bucket_of(acc)].extend(ls)
    longest = max((n for ls in lengths for n in ls), default=max_length)
    budgets = candidate_budgets(target_length, max_length, step)
    out = {}
    for b in BUCKETS:
        c_d = min_correct(b, k, rounding)
        out[b] = next(
            (budget for budget in budgets if ecr(per_bucket[b], budget, c_d) >= 1.0 - 1e-9), longest
        )
    return out
