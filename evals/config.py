"""The settings of one evaluation (`EvalConfig`, the ``evals.run`` flags and recipe keys one
to one), their checks, and the part of them that a run's samples depend on
(`generation_settings`: a folder's samples must agree on all of it, so a resume never mixes
two configurations).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Literal

from artifacts.cli import arg
from artifacts.errors import ShortcotError
from evals.budget import DEFAULT_CUE
from evals.engine import EngineOptions
from evals.generation import SamplingParams
from evals.grading import PROMPT_OPENS_THINK
from evals.prompts import DEFAULT_PROMPT_TEMPLATE


@dataclass(kw_only=True)
class EvalSettings:
    """What to evaluate and how to sample and grade it; `EvalConfig` adds the engine."""

    model: str = arg(help="model: local HF folder or Hub id (required, here or in --config)")
    data: str = arg(
        help="problems: .jsonl / .parquet file, datasets.save_to_disk folder, Hub dataset id, "
        "or a preset (math500, aime24, amc23, gsm8k, olympiadbench, minerva)"
    )
    out: str = arg(help="output folder (samples.jsonl, summary.json, summary.md, settings.json)")
    problem_column: str = arg("problem", "column holding the problem text")
    answer_column: str = arg("answer", "column holding the reference answer")
    id_column: str | None = arg(
        None, "column with unique problem ids (default: id/unique_id, else row number)"
    )
    difficulty_column: str | None = arg(
        None, "column with difficulty levels (default: difficulty/level if present)"
    )
    split: str | None = arg(None, "split of a dataset folder or Hub dataset (presets know theirs)")
    limit: int | None = arg(None, "evaluate only the first N problems")
    grader: str = arg(
        "math", "grader: math, testbed, or module:function returning evals.grading.Grade"
    )
    prompt_template: str = arg(
        DEFAULT_PROMPT_TEMPLATE, "user turn; {problem} is replaced by the problem"
    )
    system_prompt: str | None = arg(None, "optional system turn")
    samples: int = arg(1, "samples per problem; pass@1 is averaged over them (papers: 16)")
    max_new_tokens: int = arg(4096, "token limit per completion; longer ones count as truncated")
    temperature: float = arg(0.6, "sampling temperature; 0 = greedy")
    top_p: float = arg(0.95, "nucleus sampling threshold")
    seed: int = arg(0, "sampling seed; each sample is seeded from (seed, prompt, sample index)")
    think_budget: int | None = arg(
        None,
        "budget forcing: stop thinking after B tokens, append budget_cue and let the model "
        "answer (all tokens count)",
    )
    budget_cue: str = arg(
        DEFAULT_CUE, "text appended when the think budget is hit; starts with </think>"
    )
    vote: int | None = arg(
        None,
        "also report majority vote over K samples (needs samples >= K) with the tokens it spends",
    )
    prompt_opens_think: Literal["auto", "yes", "no"] = arg(
        "auto",
        "whether the chat template opens the think block in the prompt (DeepSeek-R1-Distill, "
        "QwQ: the completion holds only '... </think> answer'); then a completion that never "
        "writes </think> has no answer. auto: render the generation prompt and check whether it "
        "ends with an unclosed <think>",
    )
    force: bool = arg(
        False,
        "start over: replace an existing --out (the old one stays until the new run completes)",
    )
    progress: bool = arg(True, "show a progress bar (--no_progress hides it)")


@dataclass(kw_only=True)
class EvalConfig(EngineOptions, EvalSettings):
    """Settings of one evaluation (the CLI flags and recipe keys, one to one): `EvalSettings`
    and the generation engine's fields (backend, batch_size, dtype, device and the vLLM ones)
    from `EngineOptions`, so ``evals.run`` and ``distill.build`` share those. (Bases in this
    order so that the fields, and ``--help``, list the evaluation's own settings first.)"""


# Settings that change what a sample is; a folder's samples must agree on all of them.
# limit, samples, batch_size, vote, device, force and progress may change between reruns.
GENERATION_KEYS = (
    "model",
    "data",
    "problem_column",
    "answer_column",
    "id_column",
    "difficulty_column",
    "split",
    "grader",
    "prompt_template",
    "system_prompt",
    "max_new_tokens",
    "temperature",
    "top_p",
    "seed",
    "backend",
    "dtype",
    "think_budget",
    "budget_cue",
    "prompt_opens_think",
)


def validate(cfg: EvalConfig) -> None:
    """Fail before any work on settings that cannot be right."""
    SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.samples, cfg.seed).validate()
    if "{problem}" not in cfg.prompt_template:
        raise ShortcotError(
            "--prompt-template must contain {problem}; e.g. '{problem}\\nAnswer in \\boxed{}.'"
        )
    if cfg.batch_size < 1:
        raise ShortcotError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.vote is not None and cfg.vote < 2:
        raise ShortcotError(f"--vote needs at least 2 samples to vote, got {cfg.vote}")
    if cfg.vote and cfg.samples < cfg.vote:
        raise ShortcotError(f"--vote {cfg.vote} needs --samples >= {cfg.vote} (got {cfg.samples})")
    if cfg.think_budget is not None and cfg.think_budget >= cfg.max_new_tokens:
        raise ShortcotError(
            f"--think-budget {cfg.think_budget} must be below --max-new-tokens {cfg.max_new_tokens}"
        )
    if cfg.backend not in ("hf", "vllm"):
        raise ShortcotError(f"unknown --backend {cfg.backend!r}; use hf or vllm")
    if cfg.prompt_opens_think not in PROMPT_OPENS_THINK:
        raise ShortcotError(
            f"--prompt-opens-think must be auto, yes or no, got {cfg.prompt_opens_think!r}"
        )
    EngineOptions.from_config(cfg).validate(cfg.backend)


def _canonical(ref: str) -> str:
    """Local paths as absolute paths (so ``./x`` and ``x`` are the same run); ids unchanged."""
    return os.path.abspath(ref) if os.path.exists(ref) else ref


def generation_settings(cfg: EvalConfig) -> dict:
    d = {k: getattr(cfg, k) for k in GENERATION_KEYS}
    d["model"], d["data"] = _canonical(cfg.model), _canonical(cfg.data)
    if cfg.think_budget is None:
        d["budget_cue"] = None  # unused without a budget
    return d


def settings_diff(old: dict, new: dict) -> list[str]:
    """Human-readable differences of the generation settings (empty when they agree).

    A key missing from ``old`` (a folder written before the key existed) counts as its
    default value, so such folders still resume."""
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(EvalConfig)
        if f.default is not dataclasses.MISSING
    }
    return [
        f"{k}: {old.get(k, defaults.get(k))!r} -> {new.get(k)!r}"
        for k in GENERATION_KEYS
        if old.get(k, defaults.get(k)) != new.get(k)
    ]
