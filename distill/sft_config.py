"""The settings of `distill.sft`, TRL's way: ``TrlParser((script arguments, SFTConfig,
ModelConfig))`` as in TRL's own ``trl sft`` script, one recipe of flat keys for all three.

- `DistillArguments`: what TRL's ``ScriptArguments`` holds there: the data, and what this
  command adds (the work folder, ``--resume``, ``--force``, merging LoRA on save).
- `DistillSFTConfig`: TRL's `SFTConfig` (every ``TrainingArguments`` field: learning rate,
  schedule, batch, checkpoints, ``push_to_hub`` / ``hub_model_id`` / ``hub_private_repo``),
  with our defaults. ``output_dir`` (``--out``) is the final model folder; the trainer
  writes its checkpoints to the work folder instead.
- `StudentConfig`: TRL's `ModelConfig`: the student (``--student``), its dtype and LoRA
  (``use_peft``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``, ...).

Defaults follow the self-training paper's setting for distilling a model's own concise
chains (arXiv 2502.20122: a few epochs of plain SFT at a small learning rate); the CPU
testbed recipe (``configs/distill/sft_testbed.yaml``) raises the learning rate for its
tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trl import ModelConfig, SFTConfig

from artifacts.cli import arg


@dataclass
class DistillArguments:
    """The data and the run's housekeeping (TRL's ScriptArguments, for this command)."""

    data: str = arg(
        help="the --out of distill.build (any --format), a .jsonl/.parquet file, or a Hub dataset id"
    )
    work_dir: str | None = arg(None, "checkpoint folder for --resume (default: OUT.work)")
    merge_lora: bool = arg(
        False, "merge the LoRA adapter into the weights on save (needs --use_peft)"
    )
    resume: bool = arg(False, "continue from the last checkpoint in the work folder")
    force: bool = arg(False, "overwrite an existing --out (and restart over old checkpoints)")


@dataclass
class DistillSFTConfig(SFTConfig):
    """TRL's SFTConfig with this command's defaults (the fields redeclared here); every other
    field keeps TRL's default and meaning."""

    output_dir: str = arg(
        help="final model folder (written atomically at the end; checkpoints go to work_dir)",
        aliases=["--out"],
    )
    learning_rate: float = arg(1e-5, "peak learning rate")
    num_train_epochs: float = arg(2.0, "passes over the data")
    warmup_steps: float = arg(
        0.0, "linear warmup: < 1 = fraction of the steps, >= 1 = number of steps"
    )
    lr_scheduler_type: str = arg(
        "cosine", "transformers scheduler name (cosine, linear, constant, ...)"
    )
    max_length: int | None = arg(4096, "tokens per example; longer ones are truncated")
    seed: int = arg(0, "random seed")
    gradient_checkpointing: bool = arg(False, "trade compute for memory")
    assistant_only_loss: bool = arg(
        True,
        "loss on the assistant turn only (false = on the whole conversation); distill.sft "
        "uses TRL's assistant_only_loss or, for templates without generation markers, "
        "completion_only_loss",
    )
    save_steps: float = arg(200, "checkpoint every N steps (into the work folder)")
    save_total_limit: int | None = arg(2, "checkpoints kept")
    bf16: bool | None = arg(
        None,
        "bf16 mixed precision; default: on when the student's dtype is bfloat16, or when no "
        "dtype is given and the GPU supports bf16; off on CPU",
    )

    def __post_init__(self):
        # bf16 left unset is decided by distill.sft from the student's dtype (a ModelConfig
        # field, not known here); TRL would turn None into True, which fails on CPU.
        self.auto_bf16 = self.bf16 is None
        if self.auto_bf16:
            self.bf16 = False
        super().__post_init__()


@dataclass
class StudentConfig(ModelConfig):
    """TRL's ModelConfig: the student and LoRA, with this command's defaults."""

    model_name_or_path: str = arg(
        help="student model folder or Hub id (its chat template formats the data)",
        aliases=["--student"],
    )
    dtype: Literal["float32", "bfloat16", "float16"] | None = arg(
        None, "model dtype: float32, bfloat16 or float16 (default float32)"
    )
    lora_target_modules: list[str] | None = arg(
        ["all-linear"], "modules LoRA adapts: all-linear, or module names (q_proj v_proj)"
    )
