"""Golden tests for train.advantages (numbers worked out by hand in the comments)."""

from __future__ import annotations

import torch

from train.advantages import dler_advantages, group_mean_advantages, grpo_advantages


def test_group_mean():
    # groups (3, 1) and (2, 2): means 2 and 2
    out = group_mean_advantages(torch.tensor([3.0, 1.0, 2.0, 2.0]), 2)
    assert out.tolist() == [1.0, -1.0, 0.0, 0.0]


def test_grpo_matches_hand_values():
    # group (1, 0, 0, 1): mean .5, unbiased std sqrt(1/3) = .57735 -> +-.5 / (.57735 + 1e-4)
    out = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4)
    expected = 0.5 / (3**-0.5 + 1e-4)
    torch.testing.assert_close(out, torch.tensor([expected, -expected, -expected, expected]))


def test_dler_token_weighted_whitening_by_hand():
    # rewards (1, 0 | 1, 1 | 0, 1) in groups of 2 -> A = (.5, -.5, 0, 0, -.5, .5)
    # lengths (2, 4, 1, 1, 1, 3): T = 12 tokens
    # mu = (2*.5 - 4*.5 - 1*.5 + 3*.5) / 12 = 0
    # var = (2*.25 + 4*.25 + .25 + 3*.25) / 11 = 2.5 / 11 (unbiased over tokens)
    # A_norm = A / sqrt(2.5/11 + 1e-8)
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    lengths = torch.tensor([2, 4, 1, 1, 1, 3])
    out = dler_advantages(r, lengths, 2)
    s = (2.5 / 11 + 1e-8) ** 0.5
    torch.testing.assert_close(out, torch.tensor([0.5, -0.5, 0.0, 0.0, -0.5, 0.5]) / s)


def test_dler_recentres_unlike_trl_batch_scaling():
    # groups (1, 0) lengths (1, 3): A = (.5, -.5), T = 4, mu = (.5 - 1.5)/4 = -.25,
    # var = (1 * .75^2 + 3 * .25^2) / 3 = (.5625 + .1875) / 3 = .25 -> std .5
    out = dler_advantages(torch.tensor([1.0, 0.0]), torch.tensor([1, 3]), 2)
    torch.testing.assert_close(out, torch.tensor([1.5, -0.5]), atol=1e-6, rtol=1e-6)


def test_dler_invalid_samples_are_zero_and_excluded():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    lengths = torch.tensor([1, 3, 5, 7])
    valid = torch.tensor([True, True, False, False])
    out = dler_advantages(r, lengths, 2, valid=valid)
    torch.testing.assert_close(out, torch.tensor([1.5, -0.5, 0.0, 0.0]), atol=1e-6, rtol=1e-6)


def test_dler_across_processes_equals_single_process():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    lengths = torch.tensor([3, 9, 4, 4, 2, 6, 5, 1])
    full = dler_advantages(r, lengths, 2)
    # two "processes" holding 2 groups each; reduce = sum of both processes' statistics
    halves = [(r[:4], lengths[:4]), (r[4:], lengths[4:])]

    def stats(rr, ll):
        a = group_mean_advantages(rr, 2)
        w = ll.float()
        return torch.stack([(w * a).sum(), w.sum(), (w * a * a).sum()])

    total = stats(*halves[0]) + stats(*halves[1])
    parts = [dler_advantages(rr, ll, 2, reduce=lambda x: total) for rr, ll in halves]
    torch.testing.assert_close(torch.cat(parts), full)


def test_doctests_of_the_formula_modules():
    import doctest

    import train.advantages
    import train.laser_d
    import train.length_reward
    import train.rewards
    import train.sampling

    for mod in (
        train.advantages,
        train.laser_d,
        train.length_reward,
        train.rewards,
        train.sampling,
    ):
        result = doctest.testmod(mod)
        assert result.failed == 0 and result.attempted > 0, mod.__name__
