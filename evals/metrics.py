"""Metrics of an evaluation: accuracy against tokens (pure functions on plain lists).

The protocol is that of DLER / Laser (docs/algorithms.md §5): K samples per problem,
pass@1 averaged over the samples, and the number of generated tokens. Inference-time
baselines (majority vote, DLER's test-time scaling comparison) are reported with the
tokens they spend, so that accuracy can be compared at an equal token budget.

Per-sample records are dicts with at least ``id``, ``sample``, ``tokens``, ``correct``
and ``truncated``; optional ``thinking_tokens`` / ``answer_tokens`` (None without a think
block), ``answer``, ``formatted``, ``difficulty``, ``gen_seconds``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean; None for no values (JSON-friendly, unlike NaN)."""
    return sum(values) / len(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks
    (numpy's default "linear" method: position ``(n - 1) * q / 100``).

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    >>> percentile([10, 20, 30, 40, 50], 90)
    46.0
    """
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def pass_at_1(correct_by_problem: Sequence[Sequence[bool]]) -> tuple[float | None, float | None]:
    """pass@1 averaged over K samples per problem, and its standard error.

    Each problem's score is its fraction of correct samples ``p_i = c_i / K_i``; pass@1 is
    ``mean_i p_i`` (docs/algorithms.md §5.1). The standard error is taken over problems,
    treating the benchmark's problems as the sample of interest:
    ``s.e. = std(p_i, ddof=1) / sqrt(P)`` (the standard error of the mean of the
    per-problem scores, as recommended by Miller 2024, "Adding Error Bars to Evals", for
    several samples per question). Sampling noise of the K draws
    is inside ``p_i``, so more samples per problem shrink it too. None when P < 2.

    >>> pass_at_1([[True, False], [True, True], [False, False]])
    (0.5, 0.28867513459481287)
    """
    scores = [sum(c) / len(c) for c in correct_by_problem if len(c)]
    if not scores:
        return None, None
    m = sum(scores) / len(scores)
    if len(scores) < 2:
        return m, None
    var = sum((s - m) ** 2 for s in scores) / (len(scores) - 1)
    return m, math.sqrt(var / len(scores))


def token_stats(tokens: Sequence[int]) -> dict:
    """Mean, median and 90th percentile of completion lengths (in tokens)."""
    return {
        "mean_tokens": mean(tokens),
        "median_tokens": percentile(tokens, 50),
        "p90_tokens": percentile(tokens, 90),
    }


def rate(flags: Sequence[bool]) -> float | None:
    """Fraction of True (e.g. the truncation rate: completions without EOS within the limit)."""
    return sum(map(bool, flags)) / len(flags) if flags else None


def tokens_per_correct(tokens: Sequence[int], correct: Sequence[bool]) -> float | None:
    """All tokens generated divided by the number of correct completions: what one correct
    answer costs. None when nothing was correct.

    >>> tokens_per_correct([100, 300, 200], [True, False, True])
    300.0
    """
    n_correct = sum(map(bool, correct))
    return sum(tokens) / n_correct if n_correct else None


def throughput(total_tokens: int, seconds: float) -> float | None:
    """Generated tokens per second of generation wall time."""
    return total_tokens / seconds if seconds > 0 else None


def _norm_answer(answer: str) -> str:
    return "".join(answer.split())


def majority_vote(
    answers: Sequence[str | None], correct: Sequence[bool]
) -> tuple[str | None, bool]:
    """Majority vote over one group of samples (self-consistency, Wang et al. 2023).

    Answers are compared as strings up to whitespace; samples without an answer do not
    vote. Ties go to the answer seen first. The vote is correct when the samples that gave
    the winning answer were graded correct. Returns (winning answer, correct).

    >>> majority_vote(["2", "3", "3", None], [True, False, False, False])
    ('3', False)
    >>> majority_vote(["2", "3", None, "2 "], [True, False, False, True])
    ('2', True)
    >>> majority_vote([None, None], [False, False])
    (None, False)
    """
    keyed = [(_norm_answer(a), i) for i, a in enumerate(answers) if a is not None]
    if not keyed:
        return None, False
    counts = Counter(k for k, _ in keyed)
    first_seen = {}
    for k, i in keyed:
        first_seen.setdefault(k, i)
    winner = max(counts, key=lambda k: (counts[k], -first_seen[k]))
    i = first_seen[winner]
    return answers[i], bool(correct[i])


def vote_accuracy(
    samples_by_problem: Sequence[Sequence[tuple[str | None, bool, int]]], k: int
) -> dict:
    """maj@k accuracy and the tokens it spends.

    Each problem's samples ``(answer, correct, tokens)`` (in sample order) are cut into
    ``floor(K / k)`` consecutive groups of ``k``; each group votes (`majority_vote`). A
    problem scores the mean of its groups' votes, and accuracy / s.e. follow `pass_at_1`.
    ``tokens_per_problem`` is the mean over groups of the summed tokens of the ``k``
    samples: what one voted answer costs, to compare with pass@1's mean tokens at an
    equal budget. Leftover samples (K not a multiple of k) are unused.

    >>> r = vote_accuracy([[("1", True, 10), ("2", False, 20), ("1", True, 30), ("2", False, 40)]], 2)
    >>> r["accuracy"], r["tokens_per_problem"], r["groups"]
    (1.0, 50.0, 2)
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    votes, costs, groups = [], [], 0
    for samples in samples_by_problem:
        n_groups = len(samples) // k
        if n_groups == 0:
            continue
        results = []
        for g in range(n_groups):
            group = samples[g * k : (g + 1) * k]
            results.append(majority_vote([s[0] for s in group], [s[1] for s in group])[1])
            costs.append(sum(s[2] for s in group))
        votes.append(results)
        groups += n_groups
    acc, se = pass_at_1(votes)
    return {
        "k": k,
        "accuracy": acc,
        "accuracy_se": se,
        "tokens_per_problem": mean(costs),
        "groups": groups,
        "n_problems": len(votes),
    }


def _by_problem(records: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[str(r["id"])].append(r)
    for g in groups.values():
        g.sort(key=lambda r: r["sample"])
    return groups


def _core(records: Sequence[dict]) -> dict:
    groups = _by_problem(records)
    acc, se = pass_at_1([[bool(r["correct"]) for r in g] for g in groups.values()])
    tokens = [int(r["tokens"]) for r in records]
    return {
        "accuracy": acc,
        "accuracy_se": se,
        **token_stats(tokens),
        "truncation_rate": rate([r["truncated"] for r in records]),
        "n_problems": len(groups),
        "n_samples": len(records),
    }


def _difficulty_key(value) -> tuple:
    """Sort difficulties numerically when they are numbers ("Level 2" < "Level 10")."""
    s = str(value)
    digits = "".join(c for c in s if c.isdigit())
    return (0, int(digits), s) if digits else (1, 0, s)


def summarize(records: Sequence[dict], vote_k: int | None = None) -> dict:
    """The summary of an evaluation from its per-sample records.

    Keys: ``accuracy``, ``accuracy_se`` (`pass_at_1`), ``mean_tokens``, ``median_tokens``,
    ``p90_tokens``, ``truncation_rate``, ``n_problems``, ``n_samples``,
    ``samples_per_problem``, ``format_rate``, ``n_ungradable`` (samples the grader could
    not check in bounded time; counted as incorrect), ``mean_thinking_tokens`` /
    ``mean_answer_tokens`` (over samples with a think block; None if none has one),
    ``think_block_rate``, ``tokens_per_correct``, ``total_tokens``, ``gen_seconds``,
    ``throughput_tokens_per_s``, ``by_difficulty`` (level -> the core keys, when the data
    has difficulties) and ``vote`` (`vote_accuracy`, when ``vote_k`` is given).
    """
    out = _core(records)
    groups = _by_problem(records)
    sizes = sorted({len(g) for g in groups.values()})
    out["samples_per_problem"] = sizes[0] if len(sizes) == 1 else sizes
    out["format_rate"] = rate([r.get("formatted", r.get("answer") is not None) for r in records])
    out["n_ungradable"] = sum(bool(r.get("ungradable")) for r in records)
    think = [r for r in records if r.get("thinking_tokens") is not None]
    out["think_block_rate"] = rate([r.get("thinking_tokens") is not None for r in records])
    out["mean_thinking_tokens"] = mean([r["thinking_tokens"] for r in think])
    out["mean_answer_tokens"] = mean([r["answer_tokens"] for r in think])
    tokens = [int(r["tokens"]) for r in records]
    out["tokens_per_correct"] = tokens_per_correct(tokens, [r["correct"] for r in records])
    out["total_tokens"] = sum(tokens)
    seconds = sum(float(r.get("gen_seconds") or 0.0) for r in records)
    out["gen_seconds"] = seconds
    out["throughput_tokens_per_s"] = throughput(sum(tokens), seconds)
    levels: dict = defaultdict(list)
    for r in records:
        if r.get("difficulty") is not None:
            levels[r["difficulty"]].append(r)
    out["by_difficulty"] = {
        str(level): _core(levels[level]) for level in sorted(levels, key=_difficulty_key)
    }
    if vote_k:
        out["vote"] = vote_accuracy(
            [
                [(r.get("answer"), bool(r["correct"]), int(r["tokens"])) for r in g]
                for g in groups.values()
            ],
            vote_k,
        )
    return out
