"""Train a concise reasoning model with RL:
``python -m train.rl --config CONFIG.yaml [--field value ...]``.

Works the same under ``accelerate launch -m train.rl --config ...`` (multi-GPU, DeepSpeed,
FSDP through accelerate's own config). Recipes: ``configs/train/*.yaml``; every field of
`train.config.RLConfig` (TRL's ``GRPOConfig`` and shortcot's settings) and
`train.config.ModelArguments` (TRL's ``ModelConfig``) is a flag and a recipe key.

Layout: checkpoints and logs go to ``work_dir`` (default ``<output_dir>.work``), so an
interrupted run continues with ``--resume``; the final model is written atomically to
``output_dir`` (``--out``) as a standard HF folder (merged when LoRA is used) with a model
card recording the recipe, the training log (``training_log.json``) and the recipe
(``train_config.yaml``, which ``--config`` reads back).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import yaml

from artifacts import cli
from artifacts.errors import ShortcotError, run_cli
from artifacts.outdir import atomic_output_dir, check_output, check_writable
from artifacts.resume import prepare_work_dir
from train.config import ModelArguments, RLConfig, recipe, run_settings, trainer_args

DESCRIPTION = (
    "RL for concise reasoning on TRL's GRPOTrainer: DLER (truncation reward, group-mean / "
    "batch-std advantage, clip-higher, dynamic sampling) and the Laser reward family. "
    "Settings: a YAML recipe (--config, configs/train/) with the flags' names as keys; flags "
    "win over it. Every trl.GRPOConfig and trl.ModelConfig field is a flag."
)
EPILOG = (
    "example: python -m train.rl --config configs/train/dler_testbed.yaml --out runs/dler "
    "--max_steps 50"
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[RLConfig, ModelArguments]:
    """``argv`` (flags and ``--config``) into the run's config and model arguments."""
    return cli.parse_args(
        [RLConfig, ModelArguments], argv, prog="train.rl", description=DESCRIPTION, epilog=EPILOG
    )


def prompt_rows(cfg: RLConfig, spec: str, limit: int | None = None) -> list[dict]:
    """Problems (contract 3, `evals.data.load_problems`) as TRL conversational prompt rows:
    ``{"prompt": [messages], "answer": str, "id": str}``."""
    from evals.data import load_problems
    from evals.prompts import build_messages

    problems = load_problems(
        spec,
        problem_column=cfg.problem_column,
        answer_column=cfg.answer_column,
        id_column=cfg.id_column,
        split=cfg.split,
        limit=limit,
    )
    if not problems:
        raise ShortcotError(f"no problems in {spec}; check the path and the column names")
    return [
        {
            "prompt": build_messages(p.problem, cfg.prompt_template, cfg.system_prompt),
            "answer": str(p.answer),
            "id": str(p.id),
        }
        for p in problems
    ]


def template_opens_think(cfg: RLConfig, tokenizer, chat_template_kwargs=None) -> bool:
    """Whether the rollouts' prompts open the think block (the answer contract,
    `evals.grading.resolve_prompt_opens_think`): ``cfg.prompt_opens_think``, with ``auto``
    rendered the way TRL renders the prompts (the tokenizer's chat template with
    ``chat_template_kwargs``, e.g. Qwen3's ``enable_thinking``)."""
    from evals.grading import PROBE_PROBLEM, resolve_prompt_opens_think
    from evals.prompts import build_messages

    kwargs = chat_template_kwargs or {}
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)

    def render(messages):
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **kwargs
        )

    probe = build_messages(PROBE_PROBLEM, cfg.prompt_template, cfg.system_prompt)
    return resolve_prompt_opens_think(cfg.prompt_opens_think, render, probe)


def build_trainer(
    cfg: RLConfig, model_args: ModelArguments, work: str | Path | None = None, callbacks=None
):
    """Everything from the config to a ready `ShortcotGRPOTrainer` (no training yet); its
    checkpoints go to ``work`` (default ``cfg.work_path()``)."""
    import random

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config

    from artifacts.hub import resolve_local
    from train.length_reward import LengthReward
    from train.trainer import ShortcotGRPOTrainer

    cfg.validate(model_args)
    args = trainer_args(cfg, work if work is not None else cfg.work_path())
    model_dir = resolve_local(model_args.model_name_or_path, revision=model_args.model_revision)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    load = {"attn_implementation": model_args.attn_implementation}
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=model_args.dtype, **{k: v for k, v in load.items() if v is not None}
    )
    rows = prompt_rows(cfg, cfg.data, cfg.limit)
    train_dataset = Dataset.from_list(rows)
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
    reward = LengthReward(cfg, eos_token_ids=eos_ids)
    adaptive = cfg.method.adaptive
    monitor = None
    if adaptive:
        if cfg.laser_d_monitor_data:
            monitor = prompt_rows(cfg, cfg.laser_d_monitor_data, cfg.laser_d_monitor_size)
        else:
            monitor = random.Random(cfg.seed).sample(
                rows, k=min(cfg.laser_d_monitor_size, len(rows))
            )
    reward.prompt_opens_think = template_opens_think(cfg, tokenizer, args.chat_template_kwargs)
    return ShortcotGRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=callbacks,
        advantage=cfg.advantage,
        dynamic_sampling=cfg.dynamic_sampling,
        max_extra_rounds=cfg.max_extra_rounds,
        length_reward=reward,
        laser_d=cfg if adaptive else None,
        monitor_dataset=monitor,
    )


def _summary(cfg: RLConfig, model_args: ModelArguments) -> str:
    from artifacts.cards import public_ref

    return (
        f"Trained from `{public_ref(model_args.model_name_or_path)}` with shortcot's RL recipe: "
        f"reward `{cfg.reward_method}` (target length {cfg.target_length} tokens, grader "
        f"`{cfg.grader}`), advantage `{cfg.advantage}`, dynamic sampling "
        f"{'on' if cfg.dynamic_sampling else 'off'}, {cfg.max_steps} steps of "
        f"{cfg.per_device_train_batch_size} completions per device x "
        f"{cfg.gradient_accumulation_steps} accumulation ({cfg.num_generations} rollouts per "
        f"prompt), lr {cfg.learning_rate}."
    )


def checkpoint_dtype(model: str, revision: str | None = None):
    """The dtype a checkpoint is stored in (its config's ``dtype``; float32 if unsaid)."""
    import torch
    from transformers import AutoConfig

    from artifacts.hub import resolve_local

    config = AutoConfig.from_pretrained(resolve_local(model, revision=revision))
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def save_final(trainer, cfg: RLConfig, model_args: ModelArguments, folder: Path) -> None:
    """Save the trained model (LoRA merged if asked), tokenizer, card, log and recipe."""
    from artifacts.cards import hub_id, write_model_card

    model = trainer.accelerator.unwrap_model(trainer.model)
    lora = model_args.use_peft
    adapter = lora and not model_args.lora_merge
    if lora and model_args.lora_merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if not adapter:  # trained in float32 master weights: save in the checkpoint's dtype
        model = model.to(checkpoint_dtype(model_args.model_name_or_path, model_args.model_revision))
    model.save_pretrained(folder)
    trainer.processing_class.save_pretrained(folder)
    settings = recipe(cfg, model_args)
    (folder / "train_config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (folder / "training_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    write_model_card(
        folder,
        title=f"{Path(cfg.output_dir).name}",
        summary=_summary(cfg, model_args),
        recipe=settings,
        base_model=hub_id(model_args.model_name_or_path),
        base_model_relation="adapter" if adapter else "finetune",
        tags=["dler" if cfg.advantage == "dler" else "grpo", cfg.reward_method, "trl"],
        library_name="peft" if adapter else "transformers",
    )


def train(cfg: RLConfig, model_args: ModelArguments) -> Path:
    """Run one training job (``cfg.resume`` / ``cfg.force`` as the flags); returns the output
    folder."""
    from artifacts.hub import resolve_local
    from evals.grading import get_grader

    cfg.validate(model_args)
    out = check_output(cfg.output_dir, cfg.force)
    work = Path(cfg.work_path())
    check_writable(work.parent, "work_dir")
    get_grader(cfg.grader)  # a wrong grader fails now, not after loading the model
    # an empty folder or a typo fails before the work folder exists
    resolve_local(model_args.model_name_or_path, revision=model_args.model_revision)
    settings = run_settings(cfg, model_args)
    last = prepare_work_dir(work, settings, resume=cfg.resume, force=cfg.force)
    trainer = build_trainer(cfg, model_args, work)
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if trainer.accelerator.is_main_process:
        with atomic_output_dir(out, force=cfg.force) as tmp:
            save_final(trainer, cfg, model_args, tmp)
        if not cfg.keep_checkpoints:
            shutil.rmtree(work, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    cfg, model_args = parse_args(argv)
    out = train(cfg, model_args)
    print(f"saved {out}")
    from accelerate import PartialState

    repo = cfg.hub_repo()
    if repo and PartialState().is_main_process:
        from artifacts.hub import push_folder

        print(push_folder(out, repo, private=bool(cfg.hub_private_repo)))
    return 0


if __name__ == "__main__":
    run_cli(main)
