"""Fine-tune a student on a compressed-CoT dataset: ``python -m distill.sft``.

    python -m distill.sft --student runs/testbed/model --data runs/distill/data \\
        --out runs/distill/sft --config configs/distill/sft_testbed.yaml
    python -m distill.sft --student Qwen/Qwen2.5-1.5B-Instruct --data DIR --out OUT \\
        --lora --merge-lora learning_rate=1e-4

TRL's `SFTTrainer` does the training; this module only decides three things:

- Loss on the assistant turn only. With a chat template that has ``{% generation %}``
  markers (the testbed's does), or one TRL knows how to patch with them
  (`trl.chat_template_utils.get_training_chat_template`: Qwen, Llama-3, DeepSeek-R1
  distills, ...), TRL's ``assistant_only_loss=True`` masks everything but the assistant
  turn. For any other template the rows are converted to prompt/completion form
  (prompt = the turns before the last, completion = the assistant turn) and TRL's
  ``completion_only_loss`` masks the prompt instead; the CLI says so when it happens.
- Checkpoints go to a work folder (``OUT.work``) so ``--resume`` continues an interrupted
  run; the final model is written atomically to ``--out``.
- LoRA (peft) is saved as an adapter, or merged into the weights with ``--merge-lora``.
  The card records the data and the full recipe.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from artifacts.cards import hub_id, public_ref, write_model_card
from artifacts.config import load_config
from artifacts.errors import ShortcotError, run_cli
from artifacts.outdir import atomic_output_dir, check_output, check_writable
from artifacts.resume import prepare_work_dir
from distill.dataset import load_rows
from distill.sft_config import SFTRecipe

# Recipe keys that may change when a run is resumed (--resume): where things go, how long
# it runs, how it logs. Any other change makes the checkpoints another run's.
RESUMABLE_KEYS = (
    "out",
    "work_dir",
    "resume",
    "max_steps",
    "num_train_epochs",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "report_to",
)


def loss_mode(tokenizer) -> str:
    """How the assistant-only loss is obtained for this tokenizer's chat template:
    ``"assistant"`` (TRL's assistant_only_loss; the template has, or TRL can add,
    generation markers) or ``"completion"`` (prompt/completion fallback)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ShortcotError(
            "the student's tokenizer has no chat template; use a chat/instruct model or add one"
        )
    if has_generation_markers(template):
        return "assistant"
    try:
        get_training_chat_template(tokenizer)
        return "assistant"
    except ValueError:
        return "completion"


def to_prompt_completion(dataset):
    """Conversational rows -> prompt/completion rows (the assistant turn is the completion)."""

    def split(row):
        msgs = row["messages"]
        return {"prompt": msgs[:-1], "completion": msgs[-1:]}

    return dataset.map(split, remove_columns=["messages"])


def _check_rows(dataset) -> None:
    if "messages" not in dataset.column_names:
        raise ShortcotError(
            f"the dataset has no 'messages' column (columns: {dataset.column_names}); pass the --out of distill.build"
        )
    if len(dataset) == 0:
        raise ShortcotError("the dataset is empty; build one with distill.build first")
    last = dataset[0]["messages"][-1]
    if last.get("role") != "assistant":
        raise ShortcotError(
            "the last message of each row must be the assistant turn; pass the --out of distill.build"
        )


def _dtype(name: str | None):
    import torch

    if name is None:
        return None
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ShortcotError(f"unknown dtype {name!r}; use one of {', '.join(table)}")
    return table[name]


def train(
    r: SFTRecipe, force: bool = False, push_to_hub: str | None = None, private: bool = False
) -> dict:
    """Run SFT per the recipe; returns the training summary (also in ``out/train_summary.json``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from artifacts.hub import resolve_local

    if not r.student or not r.data or not r.out:
        raise ShortcotError(
            "--student, --data and --out are required (on the command line or in --config)"
        )
    if r.merge_lora and not r.lora:
        raise ShortcotError("--merge-lora needs --lora; drop --merge-lora for full fine-tuning")
    if r.max_steps == 0 or r.max_steps < -1:
        raise ShortcotError(
            f"max_steps must be -1 (train for num_train_epochs) or >= 1, got {r.max_steps}"
        )
    if r.max_steps == -1 and not r.num_train_epochs > 0:
        raise ShortcotError(f"num_train_epochs must be > 0, got {r.num_train_epochs}")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps"):
        if getattr(r, key) < 1:
            raise ShortcotError(f"{key} must be >= 1, got {getattr(r, key)}")
    check_output(r.out, force)
    check_writable(Path(r.work_dir or f"{r.out.rstrip('/')}.work").parent, "--work-dir")
    student = resolve_local(r.student)
    tokenizer = AutoTokenizer.from_pretrained(str(student))
    dataset = load_rows(r.data)
    _check_rows(dataset)
    mode = loss_mode(tokenizer) if r.assistant_only_loss else "full"
    if mode == "completion":
        print(
            "note: the student's chat template has no {% generation %} markers and TRL cannot patch it; "
            "converting rows to prompt/completion so the loss stays on the assistant turn"
        )
        dataset = to_prompt_completion(dataset)

    work = Path(r.work_dir or f"{r.out.rstrip('/')}.work")
    settings = {k: v for k, v in asdict(r).items() if k not in RESUMABLE_KEYS}
    last = prepare_work_dir(work, settings, resume=r.resume, force=force)
    if last:
        print(f"resuming from {last}")

    model = AutoModelForCausalLM.from_pretrained(
        str(student), dtype=_dtype(r.dtype) or torch.float32
    )
    peft_config = None
    if r.lora:
        from peft import LoraConfig

        targets = r.lora_target_modules
        peft_config = LoraConfig(
            r=r.lora_r,
            lora_alpha=r.lora_alpha,
            lora_dropout=r.lora_dropout,
            target_modules=targets
            if targets == "all-linear"
            else [t.strip() for t in targets.split(",")],
            task_type="CAUSAL_LM",
        )
    args = SFTConfig(
        output_dir=str(work),
        learning_rate=r.learning_rate,
        num_train_epochs=r.num_train_epochs,
        max_steps=r.max_steps,
        per_device_train_batch_size=r.per_device_train_batch_size,
        gradient_accumulation_steps=r.gradient_accumulation_steps,
        warmup_steps=r.warmup_steps,
        lr_scheduler_type=r.lr_scheduler_type,
        weight_decay=r.weight_decay,
        max_grad_norm=r.max_grad_norm,
        max_length=r.max_length,
        seed=r.seed,
        gradient_checkpointing=r.gradient_checkpointing,
        assistant_only_loss=mode == "assistant",
        completion_only_loss=mode == "completion",
        save_strategy="steps",
        save_steps=r.save_steps,
        save_total_limit=r.save_total_limit,
        logging_steps=r.logging_steps,
        report_to=r.report_to,
        # mixed precision by default where it is supported (GPU), fp32 on CPU
        bf16=r.dtype == "bfloat16"
        or (r.dtype is None and torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        fp16=r.dtype == "float16",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)

    summary = {
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "examples": len(dataset),
        "loss_mode": mode,
        "runtime_s": result.metrics.get("train_runtime"),
    }
    recipe = asdict(r)
    with atomic_output_dir(r.out, force=force) as tmp:
        final = trainer.model
        adapter = r.lora and not r.merge_lora
        if r.lora and r.merge_lora:
            final = final.merge_and_unload()
        final.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "train_summary.json").write_text(json.dumps(summary, indent=2))
        write_model_card(
            tmp,
            title=f"{Path(public_ref(r.student)).name} distilled on compressed chains of thought",
            summary=(
                f"`{public_ref(r.student)}` fine-tuned with TRL's SFTTrainer on `{public_ref(r.data)}` "
                f"({len(dataset)} examples; {'LoRA adapter' if adapter else 'LoRA merged' if r.lora else 'full fine-tuning'}; "
                f"loss on the assistant turn: {mode}). Final train loss {result.training_loss:.4f} after "
                f"{result.global_step} steps."
            ),
            recipe=recipe,
            base_model=hub_id(r.student),
            base_model_relation="adapter" if adapter else "finetune",
            tags=["distillation", "sft", *(["lora"] if r.lora else [])],
            library_name="peft" if adapter else "transformers",
        )
    print(json.dumps(summary, indent=2))
    print(f"wrote {r.out}")
    if push_to_hub:
        from artifacts.hub import push_folder

        print(f"pushed to {push_folder(r.out, push_to_hub, private=private)}")
    return summary


_HELP = {
    "student": "student model folder or Hub id (its chat template formats the data)",
    "data": "the --out of distill.build (any --format), a .jsonl/.parquet file, or a Hub dataset id",
    "out": "final model folder (written atomically at the end)",
    "work_dir": "checkpoint folder for --resume (default: OUT.work)",
    "learning_rate": "peak learning rate",
    "num_train_epochs": "passes over the data",
    "max_steps": "optimizer steps (> 0 overrides --num-train-epochs)",
    "per_device_train_batch_size": "examples per device per step",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "warmup_steps": "linear warmup: < 1 = fraction of the steps, >= 1 = number of steps",
    "lr_scheduler_type": "transformers scheduler name (cosine, linear, constant, ...)",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "gradient clipping norm",
    "max_length": "tokens per example; longer ones are truncated",
    "seed": "random seed",
    "dtype": "model dtype: float32, bfloat16 or float16 (default float32)",
    "gradient_checkpointing": "trade compute for memory",
    "assistant_only_loss": "loss on the assistant turn only (false = on the whole conversation)",
    "lora": "train a LoRA adapter (peft) instead of all weights",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA alpha (scale = alpha / r)",
    "lora_dropout": "LoRA dropout",
    "lora_target_modules": "all-linear or a comma-separated list of module names",
    "merge_lora": "merge the LoRA adapter into the weights on save (needs --lora)",
    "save_steps": "checkpoint every N steps (into the work folder)",
    "save_total_limit": "checkpoints kept",
    "logging_steps": "log every N steps",
    "resume": "continue from the last checkpoint in the work folder",
    "report_to": "trainer loggers (none, tensorboard, wandb, ...)",
}


def parse_args(argv: Sequence[str] | None):
    p = argparse.ArgumentParser(
        prog="python -m distill.sft",
        description="Fine-tune a student on a compressed-CoT dataset with TRL's SFTTrainer (full or LoRA). "
        "Settings come from --config YAML, then flags, then trailing key=value overrides.",
    )
    p.add_argument(
        "--config",
        help="YAML recipe (fields of distill.sft_config.SFTRecipe), e.g. configs/distill/sft_testbed.yaml",
    )
    defaults = SFTRecipe()
    for f in fields(SFTRecipe):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_ = f"{_HELP[f.name]} (default: {default!r})"
        if isinstance(default, bool):
            p.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_
            )
        else:
            kind = {int: int, float: float}.get(type(default), str)
            p.add_argument(flag, dest=f.name, type=kind, default=None, help=help_)
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing --out (and restart over old checkpoints)",
    )
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the model folder to this Hub repo")
    p.add_argument("--private", action="store_true", help="make the Hub repo private")
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides of recipe fields, e.g. learning_rate=1e-4"
    )
    ns = p.parse_args(argv)
    flags = [
        f"{f.name}={json.dumps(getattr(ns, f.name))}"
        for f in fields(SFTRecipe)
        if getattr(ns, f.name) is not None
    ]
    recipe = load_config(SFTRecipe, ns.config, [*flags, *ns.overrides])
    return recipe, ns


def main(argv: Sequence[str] | None = None) -> int:
    recipe, ns = parse_args(argv)
    train(recipe, force=ns.force, push_to_hub=ns.push_to_hub, private=ns.private)
    return 0


if __name__ == "__main__":
    run_cli(main)
