"""Fine-tune a student on a compressed-CoT dataset: ``python -m distill.sft``.

    python -m distill.sft --config configs/distill/sft_testbed.yaml \\
        --student runs/testbed/model --data runs/distill/data --out runs/distill/sft
    python -m distill.sft --student Qwen/Qwen2.5-1.5B-Instruct --data DIR --out OUT \\
        --use_peft --merge_lora --learning_rate 1e-4

The settings are TRL's (`distill.sft_config`): `SFTConfig`'s fields (``--learning_rate``,
``--max_steps``, ``--save_steps``, ``--push_to_hub`` ...), `ModelConfig`'s (``--student``
= ``--model_name_or_path``, ``--dtype``, ``--use_peft``, ``--lora_r`` ...) and the data and
housekeeping flags; a ``--config`` recipe takes the same names as keys.

TRL's `SFTTrainer` does the training; this module only decides three things:

- Loss on the assistant turn only. With a chat template that has ``{% generation %}``
  markers (the testbed's does), or one TRL knows how to patch with them
  (`trl.chat_template_utils.get_training_chat_template`: Qwen, Llama-3, DeepSeek-R1
  distills, ...), TRL's ``assistant_only_loss=True`` masks everything but the assistant
  turn. For any other template the rows are converted to prompt/completion form
  (prompt = the turns before the last, completion = the assistant turn) and TRL's
  ``completion_only_loss`` masks the prompt instead; the CLI says so when it happens.
- Checkpoints go to a work folder (``--work_dir``, default ``OUT.work``) so ``--resume``
  continues an interrupted run; the final model is written atomically to ``--out``
  (``output_dir``), and uploaded from there with ``--push_to_hub`` (the trainer itself
  never pushes).
- LoRA (peft, from TRL's ``ModelConfig``: ``get_peft_config``) is saved as an adapter, or
  merged into the weights with ``--merge_lora``. The card records the data and the recipe
  (every setting that differs from its default).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from artifacts.cards import hub_id, public_ref, write_model_card
from artifacts.cli import hub_repo
from artifacts.cli import parse_args as parse_cli
from artifacts.errors import ShortcotError, run_cli
from artifacts.outdir import atomic_output_dir, check_output, check_writable
from artifacts.resume import prepare_work_dir
from distill.dataset import load_rows
from distill.sft_config import DistillArguments, DistillSFTConfig, StudentConfig

# Recipe keys that may change when a run is resumed (--resume): where things go, how long
# it runs, how it logs. Any other change makes the checkpoints another run's.
RESUMABLE_KEYS = (
    "output_dir",
    "work_dir",
    "resume",
    "force",
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
    from artifacts.dtypes import torch_dtype

    return None if name is None else torch_dtype(name)


def mixed_precision(config: DistillSFTConfig, dtype: str | None) -> tuple[bool, bool]:
    """(bf16, fp16) for the trainer: bf16 as given, or, left unset, on for a bfloat16
    student and, with no dtype given, where the GPU supports it (fp32 on CPU); fp16 as
    given or for a float16 student."""
    import torch

    bf16 = config.bf16
    if config.auto_bf16:
        bf16 = dtype == "bfloat16" or (
            dtype is None and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        )
    return bool(bf16), bool(config.fp16 or dtype == "float16")


def trainer_config(config: DistillSFTConfig, model_args: StudentConfig, work: Path, mode: str):
    """The `trl.SFTConfig` the trainer gets: ``config`` with the checkpoints in the work
    folder, no Hub upload (the final folder is uploaded after the atomic move), the loss
    mode of this template, and the precision of `mixed_precision`."""
    from trl import SFTConfig

    bf16, fp16 = mixed_precision(config, model_args.dtype)
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(SFTConfig) if f.init}
    values.update(
        output_dir=str(work),
        push_to_hub=False,
        hub_model_id=None,
        hub_private_repo=None,
        assistant_only_loss=mode == "assistant",
        completion_only_loss=mode == "completion",
        bf16=bf16,
        fp16=fp16,
    )
    return SFTConfig(**values)


def _given(obj, **required) -> dict:
    """The init fields of ``obj`` that differ from a default instance (built with
    ``required``), plus ``required``'s: what the recipe and the flags set."""
    default = type(obj)(**{k: "" for k in required})
    return {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if f.init and (f.name in required or getattr(obj, f.name) != getattr(default, f.name))
    }


def _check(args: DistillArguments, config: DistillSFTConfig, model_args: StudentConfig) -> None:
    """Bad settings as one-line errors, before anything loads."""
    if not model_args.model_name_or_path or not args.data or not config.output_dir:
        raise ShortcotError(
            "--student, --data and --out are required (on the command line or in --config)"
        )
    if args.merge_lora and not model_args.use_peft:
        raise ShortcotError("--merge_lora needs --use_peft; drop --merge_lora for full fine-tuning")
    if config.max_steps == 0 or config.max_steps < -1:
        raise ShortcotError(
            f"max_steps must be -1 (train for num_train_epochs) or >= 1, got {config.max_steps}"
        )
    if config.max_steps == -1 and not config.num_train_epochs > 0:
        raise ShortcotError(f"num_train_epochs must be > 0, got {config.num_train_epochs}")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps"):
        if getattr(config, key) < 1:
            raise ShortcotError(f"{key} must be >= 1, got {getattr(config, key)}")
    if config.resume_from_checkpoint:
        raise ShortcotError(
            "resume_from_checkpoint is not used by distill.sft; pass --resume to continue from "
            "the last checkpoint in the work folder"
        )
    hub_repo(config.push_to_hub, config.hub_model_id)  # without a repo: bad input
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise ShortcotError("distill.sft does not load quantized students; drop load_in_4bit/8bit")


def train(args: DistillArguments, config: DistillSFTConfig, model_args: StudentConfig) -> dict:
    """Run SFT; returns the training summary (also in ``out/train_summary.json``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer, get_peft_config

    from artifacts.hub import resolve_local

    _check(args, config, model_args)
    out = config.output_dir
    check_output(out, args.force)
    check_writable(Path(args.work_dir or f"{out.rstrip('/')}.work").parent, "--work-dir")
    revision = None if model_args.model_revision == "main" else model_args.model_revision
    student = resolve_local(model_args.model_name_or_path, revision=revision)
    tokenizer = AutoTokenizer.from_pretrained(str(student))
    dataset = load_rows(args.data)
    _check_rows(dataset)
    mode = loss_mode(tokenizer) if config.assistant_only_loss else "full"
    if mode == "completion":
        print(
            "note: the student's chat template has no {% generation %} markers and TRL cannot patch it; "
            "converting rows to prompt/completion so the loss stays on the assistant turn"
        )
        dataset = to_prompt_completion(dataset)

    work = Path(args.work_dir or f"{out.rstrip('/')}.work")
    sft_args = trainer_config(config, model_args, work, mode)
    record = {**sft_args.to_dict(), **dataclasses.asdict(model_args), **dataclasses.asdict(args)}
    settings = {k: v for k, v in record.items() if k not in RESUMABLE_KEYS}
    settings = json.loads(json.dumps(settings, default=str))  # as the work folder records it
    last = prepare_work_dir(work, settings, resume=args.resume, force=args.force)
    if last:
        print(f"resuming from {last}")

    load = {"attn_implementation": model_args.attn_implementation}
    model = AutoModelForCausalLM.from_pretrained(
        str(student),
        dtype=_dtype(model_args.dtype) or torch.float32,
        **{k: v for k, v in load.items() if v is not None},
    )
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)

    summary = {
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "examples": len(dataset),
        "loss_mode": mode,
        "runtime_s": result.metrics.get("train_runtime"),
    }
    lora = model_args.use_peft
    recipe = {
        **_given(args, data=args.data),
        **_given(config, output_dir=out),
        **_given(model_args, model_name_or_path=model_args.model_name_or_path),
    }
    recipe.pop("force", None)
    with atomic_output_dir(out, force=args.force) as tmp:
        final = trainer.model
        adapter = lora and not args.merge_lora
        if lora and args.merge_lora:
            final = final.merge_and_unload()
        final.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "train_summary.json").write_text(json.dumps(summary, indent=2))
        student_ref = public_ref(model_args.model_name_or_path)
        write_model_card(
            tmp,
            title=f"{Path(student_ref).name} distilled on compressed chains of thought",
            summary=(
                f"`{student_ref}` fine-tuned with TRL's SFTTrainer on `{public_ref(args.data)}` "
                f"({len(dataset)} examples; {'LoRA adapter' if adapter else 'LoRA merged' if lora else 'full fine-tuning'}; "
                f"loss on the assistant turn: {mode}). Final train loss {result.training_loss:.4f} after "
                f"{result.global_step} steps."
            ),
            recipe=recipe,
            base_model=hub_id(model_args.model_name_or_path),
            base_model_relation="adapter" if adapter else "finetune",
            tags=["distillation", "sft", *(["lora"] if lora else [])],
            library_name="peft" if adapter else "transformers",
        )
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    if config.push_to_hub:
        from artifacts.hub import push_folder

        private = bool(config.hub_private_repo)
        print(f"pushed to {push_folder(out, config.hub_model_id, private=private)}")
    return summary


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[DistillArguments, DistillSFTConfig, StudentConfig]:
    """The command line (and its ``--config`` recipe) as (data and housekeeping, TRL's
    SFTConfig, TRL's ModelConfig)."""
    return parse_cli(
        [DistillArguments, DistillSFTConfig, StudentConfig],
        argv,
        prog="distill.sft",
        description="Fine-tune a student on a compressed-CoT dataset with TRL's SFTTrainer "
        "(full or LoRA).",
        epilog=__doc__.split("\n\n", 1)[1],
    )


def main(argv: Sequence[str] | None = None) -> int:
    train(*parse_args(argv))
    return 0


if __name__ == "__main__":
    run_cli(main)
