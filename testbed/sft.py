"""Supervised fine-tuning of the testbed model: completion-only loss, resumable.

A hand-written torch loop rather than TRL's SFTTrainer, for three reasons measured or
needed here: (1) on a 2-core CPU the step of a 1M-parameter model is short, and CPU
throughput collapses on batches above ~8k padded tokens (measured: 64 x 256 tokens ran
at about a third of the tokens/s of 32 x 256), so each step's batch is split into
length-sorted micro-batches (gradient accumulation with an exact token-mean loss); (2)
resuming the exact batch order after an interruption is one line; (3) the loss is the
same as SFTTrainer's ``completion_only_loss``: prompt tokens are masked with -100 and
the mean is over completion tokens. See docs/development.md for the SFTTrainer timing.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from testbed.build import BuildConfig


def make_batches(
    examples: list[tuple], batch_size: int, seed: int, group: int = 16
) -> list[list[int]]:
    """Batches of example indices: shuffled, then sorted by length within groups of
    ``group`` batches so each batch pads little; batch order shuffled again."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    batches = []
    span = batch_size * group
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: len(examples[i][0]))
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def micro_batches(examples: list[tuple], idx: list[int], max_tokens: int) -> list[list[int]]:
    """Split a batch (sorted by length or not) into pieces of at most ``max_tokens`` padded tokens."""
    idx = sorted(idx, key=lambda i: len(examples[i][0]))
    out, cur = [], []
    for i in idx:
        width = len(examples[i][0])  # the longest so far, since idx is sorted
        if cur and (len(cur) + 1) * width > max_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    return out + [cur] if cur else out


def collate(examples: list[tuple], idx: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, and labels with prompt and padding masked (-100),
    and the teacher's slipped tokens (an example's optional third field: positions in the
    completion) masked too, so the model sees a slip in its context but never learns to
    write one."""
    width = max(len(examples[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), -100, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for r, i in enumerate(idx):
        seq, n_prompt = examples[i][:2]
        ids[r, : len(seq)] = torch.tensor(seq)
        labels[r, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        for pos in examples[i][2] if len(examples[i]) > 2 else ():
            labels[r, n_prompt + pos] = -100
        mask[r, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def n_loss_tokens(example: tuple) -> int:
    """Completion tokens that count in the loss (masked slips excluded)."""
    return len(example[0]) - example[1] - (len(example[2]) if len(example) > 2 else 0)


# ------------------------------------------------------------------------- training


def lr_at(step: int, cfg: BuildConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio``.

    Why not transformers' ``get_cosine_with_min_lr_schedule_with_warmup`` (same shape):
    its warm-up is ``step / warmup`` where ours is ``(step + 1) / warmup``, so the first
    optimizer step would run at learning rate 0 and every warm-up step one step behind.
    Compared float by float over all 400 steps of the default and checks presets, all 30
    warm-up steps differ (the 370 cosine steps are equal); even fed ``step + 1`` during
    warm-up it differs in the last bit at steps 8, 17 and 26 (it rounds ``(step + 1) /
    warmup`` before multiplying by ``lr``). Switching would change the testbed's weights
    and so every number measured on it.

    >>> from testbed.build import PRESETS
    >>> cfg = PRESETS["default"]
    >>> lr_at(0, cfg), lr_at(cfg.warmup_steps - 1, cfg), lr_at(cfg.steps, cfg)
    (6.666666666666667e-05, 0.002, 0.0006)
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    )


def completion_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum (not mean) of next-token cross-entropy over the unmasked labels, so that
    micro-batches add up to the mean over the whole batch's completion tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )


def train_sft(
    model, examples, cfg: BuildConfig, pad_id: int, work: Path | None, progress: bool = True
) -> list:
    """SFT with completion-only loss; checkpoints to ``work`` and resumes from it.

    Hand-written rather than SFTTrainer: measured on this machine (2 cores, 4x128 Llama,
    batch 64) the Trainer's per-step overhead (data collation through datasets, logging,
    accelerate wrapping) was noticeable next to a 0.5 s step, and resuming the exact batch
    order is one line here.
    """
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    batches = make_batches(examples, cfg.batch_size, cfg.seed)
    n_steps = min(cfg.steps, len(batches))
    start, log = 0, []
    ckpt = work / "checkpoint.pt" if work else None
    if ckpt and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, log = state["step"], state["log"]
    torch.manual_seed(cfg.seed + start)
    model.train()
    bar = tqdm(
        range(start, n_steps),
        initial=start,
        total=n_steps,
        desc="testbed SFT",
        disable=not progress,
    )
    t0 = time.time()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        pieces = micro_batches(examples, batches[step], cfg.micro_batch_tokens)
        n_tokens = sum(n_loss_tokens(examples[i]) for i in batches[step])
        loss_sum = 0.0
        for piece in pieces:
            loss = completion_loss(model, collate(examples, piece, pad_id)) / n_tokens
            loss.backward()
            loss_sum += loss.item()
        loss = torch.tensor(loss_sum)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log.append(
            {"step": step + 1, "loss": round(loss.item(), 4), "seconds": round(time.time() - t0, 1)}
        )
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if ckpt and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < n_steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step + 1,
                    "log": log,
                },
                tmp,
            )
            os.replace(tmp, ckpt)
    model.eval()
    return log
