"""LASER-D adaptive targets: the worked example of Laser Eq. 4-5 on a small monitoring set."""

from __future__ import annotations

from train.laser_d import adaptive_targets, bucket_of, candidate_budgets, ecr, min_correct


def test_buckets_and_min_correct():
    assert [bucket_of(a / 8) for a in (8, 6, 5, 3, 2, 0)] == [
        "easy",
        "easy",
        "medium",
        "medium",
        "hard",
        "hard",
    ]
    assert [min_correct(b, 8) for b in ("easy", "medium", "hard")] == [6, 3, 1]  # paper (ceil)
    assert [min_correct(b, 8, "floor") for b in ("easy", "medium", "hard")] == [
        5,
        2,
        1,
    ]  # code (floor)
    assert [min_correct(b, 3) for b in ("easy", "medium", "hard")] == [2, 1, 1]  # exact multiples
    assert candidate_budgets(100, 400, 100) == [100, 200, 300, 400]
    assert ecr([50, 150, 250, 350], 200, 6) == 3.0


# Monitoring set: K = 8 rollouts per prompt, L_T = 100, max 400, step 100 -> budgets 100..400.
EASY_1 = [80, 90, 150, 160, 170, 250, 300, 390]  # 7/8 correct -> easy
EASY_2 = [100, 180, 190, 210, 220, 230, 240, 260]  # 6/8 correct -> easy
MEDIUM = [60, 150, 200, 260, 280, 330, 350, 380]  # 3/8 correct -> medium
HARD = [120, 300, 330, 340, 350, 360, 370, 350]  # 1/8 correct -> hard


def test_worked_example_paper_rounding():
    # easy: 16 responses, C = ceil(8 * 2/3) = 6.
    #   l=100: 3 of 16 (80, 90, 100) -> P = 3/16 = .1875, ECR = 1.125 >= 1 -> L_A = 100
    # medium: 8 responses, C = ceil(8/3) = 3.
    #   l=100: 1/8 -> .375 ; l=200: 3/8 (60, 150, 200) -> 1.125 >= 1 -> L_A = 200
    # hard: C = 1, needs P = 1: longest hard response 370 -> first budget >= 370 is 400
    out = adaptive_targets(
        [7 / 8, 6 / 8, 3 / 8, 1 / 8],
        [EASY_1, EASY_2, MEDIUM, HARD],
        k=8,
        target_length=100,
        max_length=400,
        step=100,
    )
    assert out == {"easy": 100, "medium": 200, "hard": 400}


def test_worked_example_code_rounding():
    # easy: C = 5: l=100 -> 5 * 3/16 = .9375 < 1 ; l=200 -> 8/16 (80..190) -> 2.5 -> L_A = 200
    # medium: C = 2: l=200 -> 2 * 3/8 = .75 < 1 ; l=300 -> 5/8 -> 1.25 -> L_A = 300
    out = adaptive_targets(
        [7 / 8, 6 / 8, 3 / 8, 1 / 8],
        [EASY_1, EASY_2, MEDIUM, HARD],
        k=8,
        target_length=100,
        max_length=400,
        step=100,
        rounding="floor",
    )
    assert out == {"easy": 200, "medium": 300, "hard": 400}


def test_empty_bucket_falls_back_to_longest_response():
    out = adaptive_targets(
        [1.0], [[10, 20, 30, 40]], k=4, target_length=50, max_length=200, step=50
    )
    # easy: C = ceil(8/3) = 3, l=50: P = 1 -> 3 -> 50 ; medium and hard empty -> longest = 40
    assert out == {"easy": 50, "medium": 40, "hard": 40}
