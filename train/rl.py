"""Train a concise reasoning model with RL: ``python -m train.rl --config CONFIG.yaml [key=value ...]``.

Works the same under ``accelerate launch -m train.rl --config ...`` (multi-GPU, DeepSpeed,
FSDP through accelerate's own config). Recipes: ``configs/train/*.yaml``.

Layout: checkpoints and logs go to ``work_dir`` (default ``OUT.work``), so an interrupted run
continues with ``--resume``; the final model is written atomically to ``OUT`` as a standard
HF folder (merged when LoRA is used) with a model card recording the recipe, the training
log (``training_log.json``) and the config (``train_config.yaml``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

from artifacts.config import config_to_dict, load_config
from artifacts.errors import ShortcotError, run_cli
from artifacts.outdir import atomic_output_dir, check_output, check_writable
from artifacts.resume import prepare_work_dir
from train.config import KEY_HELP, RESUMABLE_KEYS, RLConfig

LASER_D_METHODS = ("laser_d", "laser_de")


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


def grpo_args(cfg: RLConfig, output_dir: str | Path):
    """TRL's ``GRPOConfig`` for ``cfg``; settings TRL rejects are a one-line error."""
    from trl import GRPOConfig

    try:
        return GRPOConfig(output_dir=str(output_dir), **cfg.to_grpo_kwargs())
    except (TypeError, ValueError) as err:
        raise ShortcotError(
            f"TRL rejects these training settings ({' '.join(str(err).split())}); "
            "fix the key in the recipe or the key=value overrides"
        ) from err


def build_trainer(cfg: RLConfig, output_dir: str | Path, callbacks=None):
    """Everything from the config to a ready `ShortcotGRPOTrainer` (no training yet)."""
    import random

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from artifacts.hub import resolve_local
    from train.rewards import LengthReward
    from train.trainer import ShortcotGRPOTrainer

    cfg.validate()
    args = grpo_args(cfg, output_dir)  # TRL's own checks, before the model is loaded
    model_dir = resolve_local(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=cfg.model_dtype)
    rows = prompt_rows(cfg, cfg.data, cfg.limit)
    train_dataset = Dataset.from_list(rows)
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
    reward = LengthReward(cfg.reward, eos_token_ids=eos_ids)
    monitor = None
    if cfg.reward.method in LASER_D_METHODS:
        if cfg.laser_d.monitor_data:
            monitor = prompt_rows(cfg, cfg.laser_d.monitor_data, cfg.laser_d.monitor_size)
        else:
            monitor = random.Random(cfg.seed).sample(
                rows, k=min(cfg.laser_d.monitor_size, len(rows))
            )
    peft_config = None
    if cfg.lora.enabled:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    reward.prompt_opens_think = template_opens_think(cfg, tokenizer, args.chat_template_kwargs)
    return ShortcotGRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        advantage=cfg.advantage,
        dynamic_sampling=cfg.dynamic_sampling,
        max_extra_rounds=cfg.max_extra_rounds,
        length_reward=reward,
        laser_d=cfg.laser_d if cfg.reward.method in LASER_D_METHODS else None,
        monitor_dataset=monitor,
    )


def _summary(cfg: RLConfig) -> str:
    from artifacts.cards import public_ref

    r = cfg.reward
    return (
        f"Trained from `{public_ref(cfg.model)}` with shortcot's RL recipe: reward `{r.method}` "
        f"(target length {r.target_length} tokens, grader `{r.grader}`), advantage `{cfg.advantage}`, "
        f"dynamic sampling {'on' if cfg.dynamic_sampling else 'off'}, {cfg.max_steps} steps of "
        f"{cfg.per_device_train_batch_size} completions per device x {cfg.gradient_accumulation_steps} "
        f"accumulation ({cfg.num_generations} rollouts per prompt), lr {cfg.learning_rate}."
    )


def checkpoint_dtype(model: str):
    """The dtype a checkpoint is stored in (its config's ``dtype``; float32 if unsaid)."""
    import torch
    from transformers import AutoConfig

    from artifacts.hub import resolve_local

    config = AutoConfig.from_pretrained(resolve_local(model))
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def save_final(trainer, cfg: RLConfig, folder: Path) -> None:
    """Save the trained model (LoRA merged if asked), tokenizer, card, log and config."""
    from artifacts.cards import hub_id, write_model_card

    model = trainer.accelerator.unwrap_model(trainer.model)
    adapter = cfg.lora.enabled and not cfg.lora.merge
    if cfg.lora.enabled and cfg.lora.merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if not adapter:  # trained in float32 master weights: save in the checkpoint's dtype
        model = model.to(checkpoint_dtype(cfg.model))
    model.save_pretrained(folder)
    trainer.processing_class.save_pretrained(folder)
    recipe = config_to_dict(cfg)
    (folder / "train_config.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (folder / "training_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    write_model_card(
        folder,
        title=f"{Path(cfg.out).name}",
        summary=_summary(cfg),
        recipe=recipe,
        base_model=hub_id(cfg.model),
        base_model_relation="adapter" if adapter else "finetune",
        tags=["dler" if cfg.advantage == "dler" else "grpo", cfg.reward.method, "trl"],
        library_name="peft" if adapter else "transformers",
    )


def train(cfg: RLConfig, force: bool = False, resume: bool = False) -> Path:
    """Run one training job; returns the output folder."""
    from artifacts.hub import resolve_local
    from evals.grading import get_grader

    cfg.validate()
    out = check_output(cfg.out, force)
    work = Path(cfg.work_dir or f"{cfg.out}.work")
    check_writable(work.parent, "work_dir")
    get_grader(cfg.reward.grader)  # a wrong grader fails now, not after loading the model
    with warnings.catch_warnings():  # only a check here; the real run shows TRL's warnings
        warnings.simplefilter("ignore")
        grpo_args(cfg, work)
    resolve_local(cfg.model)  # an empty folder or a typo fails before the work folder exists
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in RESUMABLE_KEYS}
    last = prepare_work_dir(work, settings, resume=resume, force=force)
    trainer = build_trainer(cfg, work)
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if trainer.accelerator.is_main_process:
        with atomic_output_dir(out, force=force) as tmp:
            save_final(trainer, cfg, tmp)
        if not cfg.keep_checkpoints:
            shutil.rmtree(work, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.rl",
        description=(
            "RL for concise reasoning on TRL's GRPOTrainer: DLER (truncation reward, group-mean / "
            "batch-std advantage, clip-higher, dynamic sampling) and the Laser reward family. "
            "Settings come from a YAML recipe (configs/train/) and key=value overrides."
        ),
        epilog=KEY_HELP
        + "\nexample: python -m train.rl --config configs/train/dler_testbed.yaml out=runs/dler max_steps=50",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML recipe (fields of train.config.RLConfig)")
    p.add_argument(
        "overrides",
        nargs="*",
        help="key=value overrides applied after the file, e.g. learning_rate=5e-5 reward.target_length=48",
    )
    p.add_argument("--out", help="output folder of the final model (same as out=...)")
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing output and discard old checkpoints",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in the work dir"
    )
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the final folder to this Hub repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out={args.out}")
    cfg = load_config(RLConfig, args.config, overrides)
    out = train(cfg, force=args.force, resume=args.resume)
    print(f"saved {out}")
    from accelerate import PartialState

    if args.push_to_hub and PartialState().is_main_process:
        from artifacts.hub import push_folder

        print(push_folder(out, args.push_to_hub, private=args.private))
    return 0


if __name__ == "__main__":
    run_cli(main)
