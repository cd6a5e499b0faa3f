"""Every recipe in configs/train loads into RLConfig, and the GPU recipes carry the papers'
values (docs/algorithms.md §1 and §3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifacts.config import load_config
from train.config import RLConfig

CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_loads(path):
    cfg = load_config(RLConfig, path, ["out=x"])
    cfg.validate()
    kw = cfg.to_grpo_kwargs()
    import dataclasses

    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(kw) <= fields


@pytest.mark.parametrize("name", ["dler_r1_1.5b.yaml", "dler_r1_7b.yaml"])
def test_dler_recipes_match_the_paper(name):
    cfg = load_config(RLConfig, Path(CONFIGS[0]).parent / name, ["out=x"])
    assert cfg.reward.method == "truncation" and cfg.reward.target_length == 4000
    assert cfg.reward.truncated_factor == 0.0
    assert cfg.advantage == "dler" and cfg.dynamic_sampling
    assert (cfg.epsilon, cfg.epsilon_high, cfg.delta, cfg.loss_type) == (0.2, 0.28, 10.0, "dapo")
    assert (cfg.learning_rate, cfg.weight_decay, cfg.max_grad_norm, cfg.beta) == (
        1e-6,
        0.01,
        1.0,
        5e-4,
    )
    assert (cfg.temperature, cfg.top_p, cfg.num_generations, cfg.entropy_coef) == (
        1.0,
        1.0,
        16,
        0.0,
    )
    # 512 prompts x 16 rollouts per rollout step on 8 GPUs; mini-batches of 64 prompts
    assert cfg.per_device_train_batch_size * 8 * cfg.steps_per_generation == 512 * 16
    assert cfg.per_device_train_batch_size * 8 * cfg.gradient_accumulation_steps == 64 * 16


@pytest.mark.parametrize(
    "name,method,target",
    [
        ("laser_1.5b.yaml", "laser", 2048),
        ("laser_d_1.5b.yaml", "laser_d", 4096),
        ("laser_de_1.5b.yaml", "laser_de", 4096),
    ],
)
def test_laser_recipes_match_the_paper(name, method, target):
    cfg = load_config(RLConfig, Path(CONFIGS[0]).parent / name, ["out=x"])
    assert (cfg.reward.method, cfg.reward.target_length, cfg.reward.resolved_alpha()) == (
        method,
        target,
        0.5,
    )
    assert cfg.reward.resolved_base() == "laser"
    assert (cfg.num_generations, cfg.temperature, cfg.learning_rate) == (8, 0.6, 1e-6)
    assert (cfg.epsilon, cfg.epsilon_high, cfg.beta, cfg.entropy_coef) == (0.2, 0.28, 0.001, 0.001)
    assert cfg.max_completion_length == 16384
    assert cfg.per_device_train_batch_size * 8 * cfg.gradient_accumulation_steps == 128 * 8
    if method != "laser":
        assert (cfg.laser_d.every_steps, cfg.laser_d.monitor_size, cfg.laser_d.rounding) == (
            20,
            500,
            "ceil",
        )


def test_help_documents_every_key():
    import dataclasses

    from train.config import KEY_HELP, LaserDConfig, LoraSettings
    from train.rewards import RewardConfig

    for cls, prefix in (
        (RLConfig, ""),
        (RewardConfig, "reward."),
        (LaserDConfig, "laser_d."),
        (LoraSettings, "lora."),
    ):
        for f in dataclasses.fields(cls):
            if cls is RLConfig and f.name in ("reward", "laser_d", "lora"):
                continue
            assert prefix + f.name in KEY_HELP, prefix + f.name
