"""Every recipe in configs/train parses through ``train.rl``'s parser, the settings the
trainer gets are pinned (testbed recipes, defaults), the GPU recipes carry the papers'
values (docs/algorithms.md §1 and §3), and every flag has a help text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from artifacts.errors import ShortcotError
from train.config import (
    RESUMABLE_KEYS,
    ModelArguments,
    RLConfig,
    recipe,
    run_settings,
    trainer_args,
)
from train.rl import parse_args

CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "train").glob("*.yaml"))
TESTBED = [p for p in CONFIGS if "testbed" in p.name]


@pytest.fixture(autouse=True)
def _bf16_as_on_a_gpu(monkeypatch):
    """The GPU recipes ask for bf16, which transformers refuses on a CPU machine."""
    import transformers.training_args as ta

    monkeypatch.setattr(ta, "is_torch_bf16_gpu_available", lambda: True)


def parse(path, *flags):
    return parse_args(["--config", str(path), "--out", "x", *flags])


@pytest.fixture(params=CONFIGS, ids=lambda p: p.name)
def path(request):
    return request.param


def test_recipe_parses(path):
    cfg, model_args = parse(path)
    cfg.validate(model_args)
    assert model_args.model_name_or_path and cfg.data and cfg.output_dir == "x"
    assert cfg.work_path() == "x.work"


def test_recipe_saved_with_the_model_reads_back(tmp_path, path):
    cfg, model_args = parse(path)
    saved = tmp_path / "train_config.yaml"
    saved.write_text(yaml.safe_dump(recipe(cfg, model_args)))
    again, again_model = parse_args(["--config", str(saved)])
    assert trainer_args(again, "w").to_dict() == trainer_args(cfg, "w").to_dict()
    assert dataclasses.asdict(again_model) == dataclasses.asdict(model_args)


# The trainer settings of the testbed recipes (the pipeline's numbers depend on them), as the
# nested-recipe train.rl gave them to GRPOConfig before the flat configuration.
COMMON = dict(learning_rate=5e-5, lr_scheduler_type="constant", weight_decay=0.01,
              max_grad_norm=1.0, num_generations=8, per_device_train_batch_size=64,
              gradient_accumulation_steps=1, steps_per_generation=1, generation_batch_size=64,
              num_iterations=1, temperature=1.0, top_p=1.0, epsilon=0.2, loss_type="dapo",
              beta=0.0, entropy_coef=0.0, warmup_steps=0, seed=0, save_steps=50,
              save_total_limit=2, logging_steps=1, bf16=False, gradient_checkpointing=False,
              use_vllm=False, report_to=[], mask_truncated_completions=False,
              scale_rewards="group", save_strategy="steps", push_to_hub=False)  # fmt: skip
PINNED = {
    "dler_testbed.yaml": dict(max_steps=150, max_completion_length=48, epsilon_high=0.28,
                              delta=10.0, reward_method="truncation", target_length=48,
                              advantage="dler", dynamic_sampling=True, max_extra_rounds=2),
    "dler_testbed_staged.yaml": dict(max_steps=210, max_completion_length=48, epsilon_high=0.28,
                                     delta=10.0, target_length=48,
                                     target_schedule=[[0, 48], [150, 32]], advantage="dler",
                                     dynamic_sampling=True, max_extra_rounds=2),
    "dler_testbed_tight.yaml": dict(max_steps=60, max_completion_length=48, epsilon_high=0.28,
                                    delta=10.0, target_length=32, advantage="dler",
                                    dynamic_sampling=True),
    "truncation_testbed.yaml": dict(max_steps=150, max_completion_length=48, epsilon_high=0.2,
                                    delta=None, advantage="grpo", dynamic_sampling=False),
    "laser_testbed.yaml": dict(max_steps=150, max_completion_length=256, epsilon_high=0.28,
                               delta=3.0, reward_method="laser", reward_alpha=0.5,
                               advantage="grpo", dynamic_sampling=False),
    "laser_d_testbed.yaml": dict(max_completion_length=256, delta=3.0, reward_method="laser_d",
                                 laser_d_every_steps=20, laser_d_monitor_size=32,
                                 laser_d_budget_step=32, laser_d_rounding="ceil",
                                 laser_d_monitor_data="runs/testbed/data/monitor.jsonl"),
    "laser_de_testbed.yaml": dict(max_completion_length=256, delta=3.0, reward_method="laser_de",
                                  repetition_check=False, laser_d_budget_step=32),
}  # fmt: skip


@pytest.mark.parametrize("path", TESTBED, ids=lambda p: p.name)
def test_testbed_recipes_give_the_trainer_the_pinned_settings(path):
    cfg, model_args = parse(path)
    args = trainer_args(cfg, "w")
    for key, want in {**COMMON, **PINNED[path.name]}.items():
        got = getattr(args, key)
        assert (got.value if hasattr(got, "value") else got) == want, key
    assert cfg.grader == "testbed" and model_args.dtype == "float32" and not model_args.use_peft


def test_defaults_are_dlers_recipe():
    """The defaults shortcot sets over GRPOConfig's (and the ones it relies on)."""
    cfg, model_args = parse_args(["--out", "x"])
    args = trainer_args(cfg, "w")
    want = dict(learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0,
                weight_decay=0.01, max_grad_norm=1.0, num_generations=16,
                per_device_train_batch_size=16, gradient_accumulation_steps=1, num_iterations=1,
                max_steps=450, max_completion_length=4000, temperature=1.0, top_p=1.0,
                epsilon=0.2, epsilon_high=0.28, delta=10.0, beta=0.0, entropy_coef=0.0,
                loss_type="dapo", mask_truncated_completions=False, scale_rewards="group",
                use_vllm=False, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
                bf16=False, gradient_checkpointing=False, seed=0, logging_steps=1,
                save_steps=50, save_total_limit=2, report_to=[], run_name=None,
                save_strategy="steps", output_dir="w", push_to_hub=False)  # fmt: skip
    for key, value in want.items():
        got = getattr(args, key)
        assert (got.value if hasattr(got, "value") else got) == value, key
    assert (cfg.reward_method, cfg.target_length, cfg.advantage, cfg.dynamic_sampling) == (
        "truncation",
        4000,
        "dler",
        True,
    )
    assert (model_args.use_peft, model_args.lora_r, model_args.lora_alpha) == (False, 16, 32)
    assert model_args.lora_dropout == 0.0 and model_args.lora_merge
    assert model_args.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert model_args.dtype == "float32"
    assert cfg.output_dir == "x"  # the trainer's copy got the work folder, not the config
    group_mean, _ = parse_args(["--out", "x", "--advantage", "group_mean"])
    assert trainer_args(group_mean, "w").scale_rewards == "none"


@pytest.mark.parametrize("name", ["dler_r1_1.5b.yaml", "dler_r1_7b.yaml"])
def test_dler_recipes_match_the_paper(name):
    cfg, _ = parse(CONFIGS[0].parent / name)
    assert cfg.reward_method == "truncation" and cfg.target_length == 4000
    assert cfg.truncated_factor == 0.0
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
    assert cfg.activation_checkpointing and cfg.vllm_max_model_length == 5120
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
    cfg, _ = parse(CONFIGS[0].parent / name)
    assert (cfg.reward_method, cfg.target_length, cfg.resolved_alpha()) == (method, target, 0.5)
    assert cfg.resolved_base() == "laser"
    assert (cfg.num_generations, cfg.temperature, cfg.learning_rate) == (8, 0.6, 1e-6)
    assert (cfg.epsilon, cfg.epsilon_high, cfg.beta, cfg.entropy_coef) == (0.2, 0.28, 0.001, 0.001)
    assert cfg.max_completion_length == 16384
    assert cfg.per_device_train_batch_size * 8 * cfg.gradient_accumulation_steps == 128 * 8
    if method != "laser":
        assert (cfg.laser_d_every_steps, cfg.laser_d_monitor_size, cfg.laser_d_rounding) == (
            20,
            500,
            "ceil",
        )


def test_help_documents_every_field():
    from artifacts.cli import make_parser

    for cls in (RLConfig, ModelArguments):
        for f in dataclasses.fields(cls):
            if f.init:
                assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
    text = " ".join(make_parser([RLConfig, ModelArguments], "train.rl").format_help().split())
    for flag in ("--reward_method", "--out", "--model", "--laser_d_every_steps", "--lora_merge",
                 "--use_peft", "--resume", "--force", "--push_to_hub", "--work_dir"):  # fmt: skip
        assert flag in text, flag
    assert "shortcot default: 'constant'" in text  # our defaults say so


def test_flags_win_over_the_recipe_and_bad_input_is_one_line(tmp_path):
    cfg, model_args = parse(TESTBED[0], "--max_steps", "7", "--model", "m", "--use_peft",
                            "--lora_target_modules", "q_proj")  # fmt: skip
    assert cfg.max_steps == 7 and model_args.model_name_or_path == "m"
    assert model_args.lora_target_modules == ["q_proj"]  # a list of names, not TRL's regex
    cases = {
        ("--reward", "laser"): "unrecognized argument",
        ("--reward_method", "nope"): "invalid choice",
        ("--num_generations", "3"): "does not divide",
        ("--max_steps", "0"): "max_steps must be >= 1",
        ("--push_to_hub",): "--hub_model_id",
        ("--target_schedule", "[[0]]"): "target_schedule",
        ("--dtype", "fp8"): "invalid choice",
        ("--delta", "x"): "invalid",
    }
    for flags, message in cases.items():
        with pytest.raises(ShortcotError, match=message):
            parse(TESTBED[0], *flags)
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward_methd: laser\n")
    with pytest.raises(ShortcotError, match="did you mean reward_method"):
        parse_args(["--config", str(bad)])
    cfg, model_args = parse_args(["--load_in_4bit", "--out", "x", "--data", "d", "--model", "m"])
    with pytest.raises(ShortcotError, match="quantized"):
        cfg.validate(model_args)
    cfg, model_args = parse_args(["--data", "d", "--model", "m"])
    with pytest.raises(
        ShortcotError, match="output_dir is empty; set it in the recipe or with --out"
    ):
        cfg.validate(model_args)


def test_run_settings_leave_out_what_a_resume_may_change():
    cfg, model_args = parse(TESTBED[0])
    settings = run_settings(cfg, model_args)
    assert not set(RESUMABLE_KEYS) & set(settings)
    assert settings["learning_rate"] == 5e-5 and settings["model_name_or_path"]
    longer, _ = parse(TESTBED[0], "--max_steps", "300", "--resume", "--out", "y")
    assert run_settings(longer, model_args) == settings
    other, _ = parse(TESTBED[0], "--learning_rate", "1e-4")
    assert run_settings(other, model_args) != settings
