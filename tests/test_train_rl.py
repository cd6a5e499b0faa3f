"""`python -m train.rl` end to end on a tiny model: a saved HF folder with a card, LASER-D
targets in the log, and resume from a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_train_trainer import parity_grade  # noqa: F401  (the grader the recipe names)
from transformers import AutoModelForCausalLM

from train import rl
from train.trainer import ShortcotGRPOTrainer


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train ~10x faster on one thread than on two on a shared, loaded CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _recipe(tmp_path, model_dir, **extra):
    data = tmp_path / "train.jsonl"
    with data.open("w") as f:
        for i in range(8):
            f.write(
                json.dumps({"id": f"p{i}", "problem": f"What is {i} + 1?", "answer": str(2 * i)})
                + "\n"
            )
    cfg = {
        "model_name_or_path": str(model_dir),
        "data": str(data),
        "reward_method": "laser_d",
        "grader": "test_train_trainer:parity_grade",
        "target_length": 6,
        "laser_d_every_steps": 2,
        "laser_d_monitor_size": 4,
        "laser_d_budget_step": 1,
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_completion_length": 8,
        "learning_rate": 1e-3,
        "max_steps": 2,
        "save_steps": 1,
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_trains_and_saves_hf_folder_with_card(tmp_path, tiny_model_dir, monkeypatch):
    import artifacts.hub

    pushed = []
    monkeypatch.setattr(artifacts.hub, "push_folder", lambda *a, **k: pushed.append((a, k)))
    recipe = _recipe(tmp_path, tiny_model_dir)
    out = tmp_path / "model"
    argv = ["--config", str(recipe), "--out", str(out), "--dynamic_sampling", "false",
            "--push_to_hub", "--hub_model_id", "user/concise", "--hub_private_repo"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        rl.run_cli(rl.main, argv)
    assert exit_info.value.code == 0
    # uploaded by shortcot after the atomic move (the Trainer never pushes on its own)
    assert pushed == [((out, "user/concise"), {"private": True})]
    # the saved recipe reads back with --config
    cfg, model_args = rl.parse_args(["--config", str(out / "train_config.yaml")])
    assert (cfg.reward_method, cfg.laser_d_every_steps, cfg.max_steps) == ("laser_d", 2, 2)
    assert model_args.model_name_or_path == str(tiny_model_dir) and not cfg.dynamic_sampling
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "training_log.json",
    ):
        assert (out / name).exists(), name
    card = (out / "README.md").read_text()
    assert "laser_d" in card and "target_length" in card
    # a local start model: no base_model link, and neither it nor the data named by absolute path
    assert "base_model" not in card.split("---")[1]
    assert str(tmp_path) not in card and str(tiny_model_dir) not in card
    log = json.loads((out / "training_log.json").read_text())
    assert any("laser_d/target_easy" in h for h in log)
    assert any("shortcot/accuracy" in h for h in log)
    assert not (tmp_path / "model.work").exists()  # checkpoints removed after success
    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any((a - b).abs().sum() > 0 for a, b in zip(trained.parameters(), base.parameters()))

    # existing output is not overwritten without --force
    with pytest.raises(SystemExit) as exit_info:
        rl.run_cli(rl.main, ["--config", str(recipe), "--out", str(out)])
    assert exit_info.value.code == 2


def test_resume_continues_from_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    recipe = _recipe(tmp_path, tiny_model_dir, reward_method="truncation", grader="math")
    work = tmp_path / "work"
    first = rl.parse_args(
        ["--config", str(recipe), "--out", str(tmp_path / "a"), "--work_dir", str(work),
         "--keep_checkpoints"]
    )  # fmt: skip
    rl.train(*first)
    assert (work / "checkpoint-2").exists()

    calls = []
    original = ShortcotGRPOTrainer._generate_and_score_completions

    def counting(self, inputs):
        calls.append(self.state.global_step)
        return original(self, inputs)

    monkeypatch.setattr(ShortcotGRPOTrainer, "_generate_and_score_completions", counting)
    # without --resume an existing checkpoint folder is an error, not silently overwritten
    again = ["--config", str(recipe), "--out", str(tmp_path / "b"), "--work_dir", str(work),
             "--max_steps", "3"]  # fmt: skip
    with pytest.raises(rl.ShortcotError, match="--resume"):
        rl.train(*rl.parse_args(again))
    rl.train(*rl.parse_args([*again, "--resume"]))
    assert calls == [2]  # only step 3 was trained: steps 1-2 came from checkpoint-2
    log = json.loads((tmp_path / "b" / "training_log.json").read_text())
    assert max(h["step"] for h in log) == 3


def test_lora_run_saves_a_merged_standard_folder(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir, max_steps=1, use_peft=True, lora_r=4, lora_alpha=8)
    out = tmp_path / "lora"
    rl.train(*rl.parse_args(["--config", str(recipe), "--out", str(out), "--no_dynamic_sampling"]))
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    trained = dict(AutoModelForCausalLM.from_pretrained(out).named_parameters())
    base = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters())
    assert set(trained) == set(base)  # a plain model, no lora_ tensors
    assert any(not torch.equal(trained[k], base[k]) for k in trained if "q_proj" in k)
    assert all(torch.equal(trained[k], base[k]) for k in trained if "mlp" in k)  # not adapted


def test_bf16_checkpoint_trains_in_float32_and_is_saved_in_bf16(tmp_path, tiny_model_dir):
    """A bf16 checkpoint is trained on float32 master weights (dtype, default; AdamW
    on bf16 weights rounds small updates away) and saved in bf16 again; dtype auto
    trains in the checkpoint's own dtype."""
    bf16_dir = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(
        bf16_dir
    )
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            (bf16_dir / f.name).write_bytes(f.read_bytes())
    recipe = _recipe(tmp_path, bf16_dir, dynamic_sampling=False)

    def trainer_dtype(*flags):
        cfg, model_args = rl.parse_args(["--config", str(recipe), "--out", str(tmp_path / "x"),
                                         *flags])  # fmt: skip
        trainer = rl.build_trainer(cfg, model_args, tmp_path / "work")
        return next(trainer.model.parameters()).dtype

    assert trainer_dtype() == torch.float32
    assert trainer_dtype("--dtype", "auto") == torch.bfloat16
    out = tmp_path / "out"
    rl.train(*rl.parse_args(["--config", str(recipe), "--out", str(out)]))
    saved = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert next(saved.parameters()).dtype == torch.bfloat16
    with pytest.raises(rl.ShortcotError, match="dtype"):
        rl.parse_args(["--config", str(recipe), "--out", "y", "--dtype", "fp8"])
