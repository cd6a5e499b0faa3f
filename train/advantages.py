"""Advantage estimators for group rollouts (one scalar per completion, shape (N,), with the
N = num_prompts * G completions of a batch ordered group by group).

* `grpo_advantages`: GRPO (DeepSeekMath, arXiv 2402.03300, section 4.1.2):
  ``(R_i - mean_group) / (std_group + eps)``.
* `group_mean_advantages`: Dr. GRPO / RLOO-style ``R_i - mean_group`` without scaling.
* `dler_advantages`: DLER's "group mean, batch std" (arXiv 2510.15110, Eq. 3; veRL's
  ``reinforce_plus_plus_baseline``): ``A_i = R_i - mean_group``, then whitening with the mean
  and *unbiased* variance over all valid completion tokens of the whole batch, every token
  of response i carrying A_i: ``(A - mu_tok) / sqrt(var_tok + 1e-8)``. The token statistics
  are sums, so across processes they are all-reduced (the ``reduce`` argument), which gives
  exactly the single-process result.

Hand-written because TRL has no such estimator: its ``scale_rewards="batch"`` divides by the
sequence-level std of the raw rewards and does not re-centre.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def group_means(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """The mean reward of each completion's group, repeated per completion. A group of one
    has baseline 0 (as veRL)."""
    if group_size == 1:
        return torch.zeros_like(rewards)
    return rewards.view(-1, group_size).mean(dim=1).repeat_interleave(group_size)


def group_mean_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``A_i = R_i - mean(R of i's group)``.

    >>> group_mean_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2).tolist()
    [0.5, -0.5, 0.0, 0.0]
    """
    return rewards - group_means(rewards, group_size)


def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: ``(R_i - mean_group) / (std_group + eps)`` with the unbiased group std (as TRL).

    >>> [round(x, 3) for x in grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2).tolist()]
    [0.707, -0.707, 0.0, 0.0]
    """
    grouped = rewards.view(-1, group_size)
    std = grouped.std(dim=1).repeat_interleave(group_size)
    return (rewards - group_means(rewards, group_size)) / (std + eps)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def dler_advantages(
    rewards: torch.Tensor,
    lengths: torch.Tensor,
    group_size: int,
    eps: float = 1e-8,
    valid: torch.Tensor | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] = _identity,
) -> torch.Tensor:
    """DLER's group-mean, token-weighted batch-whitened advantage (DLER Eq. 3).

    Args:
        rewards: (N,) rewards of this process's completions, whole groups of ``group_size``.
        lengths: (N,) valid completion tokens of each completion (its token weight).
        valid:   (N,) bool; invalid completions (padding groups) get advantage 0 and are left
                 out of the batch statistics. Default: all valid.
        reduce:  sums a (3,) tensor over processes (e.g. ``accelerator.reduce(x, "sum")``);
                 the identity for one process.

    Returns (N,) advantages: ``(A_i - mu) / sqrt(var + eps)`` with ``A_i = R_i - mean_group``,
    ``mu = sum_i L_i A_i / T``, ``var = sum_i L_i (A_i - mu)^2 / (T - 1)``, T = sum_i L_i.

    >>> # groups (1, 0) and (1, 1); lengths 1, 3, 2, 2 -> A = (.5, -.5, 0, 0), T = 8,
    >>> # mu = (.5 - 1.5) / 8 = -.125, var = (.625^2 + 3 * .375^2 + 4 * .125^2) / 7 = .125
    >>> [round(x, 4) for x in dler_advantages(torch.tensor([1., 0., 1., 1.]), torch.tensor([1, 3, 2, 2]), 2).tolist()]
    [1.7678, -1.0607, 0.3536, 0.3536]
    """
    rewards = rewards.float()
    w = lengths.to(rewards.dtype)
    if valid is not None:
        w = w * valid.to(rewards.dtype)
    adv = group_mean_advantages(rewards, group_size)
    s = reduce(torch.stack([(w * adv).sum(), w.sum(), (w * adv * adv).sum()]))
    total = s[1].clamp(min=1.0)
    mu = s[0] / total
    # unbiased token variance: sum w (A - mu)^2 = sum w A^2 - T mu^2, Bessel factor T / (T - 1)
    var = (s[2] - total * mu * mu).clamp(min=0.0) / (total - 1.0).clamp(min=1.0)
    out = (adv - mu) * torch.rsqrt(var + eps)
    if valid is not None:
        out = torch.where(valid.bool(), out, torch.zeros_like(out))
    return out
