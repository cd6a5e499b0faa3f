"""The settings of `distill.build` (`BuildConfig`: its flags and recipe keys, one to one).

The generation engine's fields (backend, batch size, dtype, device and the vLLM ones) come
from `evals.backends.EngineOptions`, as in ``evals.run``, so the teacher is sampled with the
same settings spelt the same way; the strategies' own options are
`distill.compress.StrategyOptions`, parsed beside this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from artifacts.cli import arg
from artifacts.errors import ShortcotError
from distill.compress import STRATEGIES
from evals.backends import EngineOptions
from evals.prompts import DEFAULT_PROMPT_TEMPLATE


@dataclass(kw_only=True)
class BuildConfig(EngineOptions):
    """Everything `distill.build.build` needs besides the strategies' options."""

    teacher: str = arg(
        help="model folder / Hub id to sample from, or a JSONL file (or folder of *.jsonl) of "
        "existing traces with id, completion and (unless --data is given) problem and answer fields",
    )
    out: str = arg(help="output folder for the dataset, its card and summary")
    data: str | None = arg(
        None,
        "problems (contract 3): .jsonl/.parquet, a datasets folder, or a preset such as math500; "
        "required for a model teacher, optional for traces (joined by id for missing problem/answer)",
    )
    strategy: str = arg(
        "shortest-correct",
        f"comma-separated pipeline, applied in order, of: {', '.join(STRATEGIES)}",
    )
    format: Literal["disk", "jsonl", "parquet"] = arg(
        "disk",
        "disk = datasets.save_to_disk folder; jsonl / parquet = data.jsonl / data.parquet in the "
        "output folder",
    )
    grader: str = arg("math", "grader name (math, testbed) or module:function")
    detector: str = arg(
        "math",
        "answer detector for steps of the trace (math, last-number, testbed, module:function); "
        "used by first-correct and step-prune",
    )
    # sampling (when --teacher is a model)
    # (the engine: backend, batch_size, dtype, device and vLLM's options come from
    # EngineOptions, shared with evals.run)
    samples: int = arg(8, "chains sampled per problem (N)")
    temperature: float = arg(0.6, "sampling temperature (0 = greedy)")
    top_p: float = arg(0.95, "nucleus sampling top_p")
    max_new_tokens: int = arg(
        4096, "generation cap; a chain that hits it is truncated and never kept"
    )
    seed: int = arg(0, "sampling seed (per sample, so resuming is exact)")
    work_dir: str | None = arg(
        None,
        "where the teacher's samples are written, an evals.run folder that resumes "
        "(default: OUT.work)",
    )
    # data
    split: str | None = arg(None, "split of a datasets folder or Hub dataset")
    limit: int | None = arg(None, "use only the first N problems")
    problem_column: str = arg("problem", "column holding the problem text")
    answer_column: str = arg("answer", "column holding the reference answer")
    id_column: str | None = arg(None, "column holding a unique problem id")
    prompt_template: str = arg(DEFAULT_PROMPT_TEMPLATE, "user-turn template with {problem}")
    system_prompt: str | None = arg(None, "optional system turn")
    prompt_opens_think: Literal["auto", "yes", "no"] = arg(
        "auto",
        "whether the teacher's chat template opens the think block in the prompt "
        "(DeepSeek-R1-Distill, QwQ); then a trace that never writes </think> has no answer and "
        "is dropped. auto: the teacher's template; for trace files, the records' "
        "prompt_opens_think (evals.run writes it), else --tokenizer's template, else no",
    )
    tokenizer: str | None = arg(
        None,
        "tokenizer for token counts (default: the teacher's; with a trace file and no "
        "tokenizer, whitespace words are counted)",
    )
    # strategies that need a model (the others' options: StrategyOptions)
    prune_scorer: Literal["rules", "perplexity"] = arg(
        "rules",
        "step-prune: rules = drop restatements and re-checks; perplexity = drop steps whose "
        "removal barely changes the model's perplexity (SPIRIT)",
    )
    prune_model: str | None = arg(
        None, "step-prune perplexity: the scoring model (default: the teacher)"
    )
    # output
    force: bool = arg(False, "overwrite an existing --out")

    def validate(self) -> None:
        """The checks of the command line (before anything loads)."""
        if self.samples < 1:
            raise ShortcotError(f"--samples must be >= 1, got {self.samples}")
