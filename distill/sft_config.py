"""The typed recipe of `distill.sft` (the schema of ``configs/distill/*.yaml`` and the CLI).

Defaults follow the self-training paper's setting for distilling a model's own concise
chains (arXiv 2502.20122: a few epochs of plain SFT at a small learning rate); the CPU
testbed recipe (``configs/distill/sft_testbed.yaml``) raises the learning rate for its
tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SFTRecipe:
    """Fine-tuning a student on a compressed-CoT dataset with TRL's SFTTrainer."""

    student: str = ""  # model folder or Hub id; its chat template formats the data
    data: str = (
        ""  # the --out of distill.build (any --format), a .jsonl/.parquet, or a Hub dataset id
    )
    out: str = ""  # final model folder (written atomically at the end)
    work_dir: str | None = None  # checkpoints for --resume (default: OUT.work)
    # optimisation
    learning_rate: float = 1e-5
    num_train_epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0.0  # < 1: fraction of the training steps; >= 1: number of steps
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 4096  # tokens per example (longer ones are truncated by TRL)
    seed: int = 0
    dtype: str | None = (
        None  # model dtype: float32 | bfloat16 | float16 (default: as saved / float32 on CPU)
    )
    gradient_checkpointing: bool = False
    # loss
    assistant_only_loss: bool = True  # loss on the assistant turn only (see distill.sft)
    # LoRA (peft)
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"  # or a comma-separated list: q_proj,v_proj
    merge_lora: bool = False  # merge the adapter into the weights on save
    # checkpoints and logs
    save_steps: int = 200
    save_total_limit: int = 2
    logging_steps: int = 10
    resume: bool = False
    report_to: str = "none"
