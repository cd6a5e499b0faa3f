"""The reward methods of ``python -m train.rl``: one registry entry per method.

An entry says everything the rest of the code needs to know about a method: its base
correctness reward R (when ``reward_base`` is ``auto``), its default length coefficient
alpha, whether it needs all G rollouts of a prompt in one reward call (``needs_groups``:
group accuracy or group statistics; `train.trainer` checks that every process holds whole
groups), whether its targets adapt to difficulty (``adaptive``: LASER-D's L_A(d), kept up
to date by the trainer from a monitoring set), and its function from the graded rollouts
to the rewards. The formulas themselves are the pure functions of `train.rewards`; the
functions here only feed them `Rollouts`.

To add a method: write its formula in `train.rewards` with a golden test, a function here
that applies it to `Rollouts`, and one `RewardMethod` in `_METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from train.rewards import (
    arora_zanette_rewards,
    da_dler_target,
    has_repetition,
    is_truncated,
    kimi_rewards,
    l1_exact_reward,
    l1_max_reward,
    laser_de_reward,
    laser_reward,
    truncation_reward,
)

if TYPE_CHECKING:
    from train.length_reward import RewardConfig


@dataclass(frozen=True)
class Rollouts:
    """One reward call's completions, graded: what a method's function reads."""

    rewards: list[float]  # base correctness reward R of each completion
    correct: list[bool]
    lengths: list[int]  # completion tokens, EOS included
    completion_ids: Sequence[Sequence[int]]
    targets: list[int]  # each completion's L_T (LASER-D: its bucket's L_A; DA-DLER: its group's)
    groups: list[list[int]]  # the indices of each prompt's rollouts
    eos_token_ids: list[int]
    alpha: float | None  # the length term's coefficient (None: the method has none)
    config: RewardConfig  # the remaining constants (truncated_factor, l1_delta, repetition_*)


@dataclass(frozen=True)
class RewardMethod:
    """One reward method (see the module docstring)."""

    name: str
    base: str  # "binary" (1/0, DLER) or "laser" (+1/-0.5/-1): R when reward_base is auto
    alpha: float | None  # default coefficient of the length term; None: no such term
    needs_groups: bool  # reads all G rollouts of a prompt in one call
    adaptive: bool  # LASER-D: per-difficulty targets L_A(d) from the monitoring set
    rewards: Callable[[Rollouts], list[float]]
    # a group's own L_T from its accuracy (DA-DLER); None: the configured L_T
    group_target: Callable[[RewardConfig, float, int], int] | None = None


def _truncation(b: Rollouts) -> list[float]:
    factor = b.config.truncated_factor
    return [
        truncation_reward(r, is_truncated(ids, b.eos_token_ids, t), factor)
        for r, ids, t in zip(b.rewards, b.completion_ids, b.targets)
    ]


def _correctness(b: Rollouts) -> list[float]:
    return list(b.rewards)


def _laser(b: Rollouts) -> list[float]:
    return [
        laser_reward(r, c, n, t, b.alpha)
        for r, c, n, t in zip(b.rewards, b.correct, b.lengths, b.targets)
    ]


def _laser_de(b: Rollouts) -> list[float]:
    cfg = b.config
    out = []
    for r, c, n, t, ids in zip(b.rewards, b.correct, b.lengths, b.targets, b.completion_ids):
        rep = cfg.repetition_check and has_repetition(
            ids, cfg.repetition_ngram, cfg.repetition_repeats
        )
        out.append(laser_de_reward(r, c, n, t, b.alpha, repetitive=rep))
    return out


def _l1_exact(b: Rollouts) -> list[float]:
    return [l1_exact_reward(r, n, t, b.alpha) for r, n, t in zip(b.rewards, b.lengths, b.targets)]


def _l1_max(b: Rollouts) -> list[float]:
    delta = b.config.l1_delta
    return [
        l1_max_reward(c, n, t, b.alpha, delta) for c, n, t in zip(b.correct, b.lengths, b.targets)
    ]


def _per_group(formula: Callable[..., list[float]], uses_alpha: bool):
    """Apply a group-level formula (Kimi-1.5, Arora-Zanette) to each prompt's rollouts."""

    def rewards(b: Rollouts) -> list[float]:
        out = [0.0] * len(b.rewards)
        for idx in b.groups:
            args = ([b.rewards[i] for i in idx], [b.correct[i] for i in idx],
                    [b.lengths[i] for i in idx])  # fmt: skip
            vals = formula(*args, alpha=b.alpha) if uses_alpha else formula(*args)
            for i, v in zip(idx, vals):
                out[i] = v
        return out

    return rewards


def _da_dler_target(cfg: RewardConfig, accuracy: float, target_length: int) -> int:
    return da_dler_target(accuracy, cfg.da_short_target, target_length, cfg.da_threshold)


_METHODS = (
    # DLER's truncation penalty: reward 0 without EOS within L_T
    RewardMethod("truncation", base="binary", alpha=None, needs_groups=False, adaptive=False,
                 rewards=_truncation),
    RewardMethod("laser", base="laser", alpha=0.5, needs_groups=False, adaptive=False,
                 rewards=_laser),
    # LASER-D / -DE: bucket targets from each prompt's own group accuracy
    RewardMethod("laser_d", base="laser", alpha=0.5, needs_groups=True, adaptive=True,
                 rewards=_laser),
    RewardMethod("laser_de", base="laser", alpha=0.5, needs_groups=True, adaptive=True,
                 rewards=_laser_de),
    # DA-DLER: the truncation penalty at a per-group target
    RewardMethod("da_dler", base="binary", alpha=None, needs_groups=True, adaptive=False,
                 rewards=_truncation, group_target=_da_dler_target),
    RewardMethod("l1_exact", base="laser", alpha=0.0003, needs_groups=False, adaptive=False,
                 rewards=_l1_exact),
    RewardMethod("l1_max", base="binary", alpha=0.01, needs_groups=False, adaptive=False,
                 rewards=_l1_max),
    RewardMethod("kimi", base="laser", alpha=None, needs_groups=True, adaptive=False,
                 rewards=_per_group(kimi_rewards, uses_alpha=False)),
    RewardMethod("arora_zanette", base="laser", alpha=0.1, needs_groups=True, adaptive=False,
                 rewards=_per_group(arora_zanette_rewards, uses_alpha=True)),
    # no length term: the correctness reward alone
    RewardMethod("correctness", base="binary", alpha=None, needs_groups=False, adaptive=False,
                 rewards=_correctness),
)  # fmt: skip
REWARD_METHODS: dict[str, RewardMethod] = {m.name: m for m in _METHODS}
METHODS = tuple(REWARD_METHODS)
