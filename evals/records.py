"""What an ``evals.run`` writes per sample and at the end: the record of one sample (a line
of ``samples.jsonl``, with its thinking / answer token split) and the summary as markdown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evals.budget import find_subsequence
from evals.data import Problem
from evals.generation import Completion

if TYPE_CHECKING:
    from evals.config import EvalConfig


def think_split(
    token_ids: list[int], close_ids: list[int], think_open: bool
) -> tuple[int | None, int]:
    """(thinking tokens, answer tokens) of one completion.

    The think block ends just after the last ``</think>`` (its ids ``close_ids``). A
    completion that never closed it is all thinking when a think block was opened (by the
    chat template or the completion, ``think_open``), else it has no think block
    (thinking None). Simplification: text before a ``<think>`` opened mid-completion
    counts as thinking too (R1-style models open it first or in the prompt).

    >>> think_split([1, 2, 9, 3], [9], True)
    (3, 1)
    >>> think_split([1, 2], [9], True)
    (2, 0)
    >>> think_split([1, 2], [9], False)
    (None, 2)
    """
    end = find_subsequence(token_ids, close_ids)
    if end != -1:
        return end, len(token_ids) - end
    if think_open:
        return len(token_ids), 0
    return None, len(token_ids)


def make_record(
    problem: Problem,
    sample: int,
    completion: Completion,
    grade,
    think_tokens: tuple[int | None, int],
    forced: bool,
    gen_seconds: float,
    prompt_opens_think: bool = False,
) -> dict:
    """One line of samples.jsonl. It carries the problem, its reference and whether the
    prompt opened the think block, so the file alone is a ``distill.build --teacher``."""
    return {
        "id": problem.id,
        "sample": sample,
        "difficulty": problem.difficulty,
        "problem": problem.problem,
        "reference": problem.answer,
        "prompt_opens_think": prompt_opens_think,
        "completion": completion.text,
        "tokens": completion.num_tokens,
        "thinking_tokens": think_tokens[0],
        "answer_tokens": think_tokens[1],
        "answer": grade.answer,
        "correct": bool(grade.correct),
        "formatted": bool(grade.formatted),
        "ungradable": bool(getattr(grade, "ungradable", False)),
        "truncated": not completion.finished,
        "forced": forced,
        "gen_seconds": gen_seconds,
    }


def summary_markdown(summary: dict, cfg: EvalConfig) -> str:
    """The summary as markdown tables (overall, per difficulty, majority vote)."""

    def f(x, spec=".1f"):
        return "-" if x is None else format(x, spec)

    acc = f"{100 * summary['accuracy']:.1f}" if summary["accuracy"] is not None else "-"
    se = f"{100 * summary['accuracy_se']:.1f}" if summary["accuracy_se"] is not None else "-"
    lines = [
        f"# Evaluation of `{cfg.model}` on `{cfg.data}`",
        "",
        f"{summary['n_problems']} problems x {summary['samples_per_problem']} samples, "
        f"temperature {cfg.temperature}, top-p {cfg.top_p}, max {cfg.max_new_tokens} new tokens"
        + (f", think budget {cfg.think_budget}" if cfg.think_budget else "")
        + ".",
        "",
        "| accuracy (%) | s.e. | mean tokens | median | p90 | thinking | answer | truncated (%) | tokens / correct | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {acc} | {se} | {f(summary['mean_tokens'])} | {f(summary['median_tokens'])} | "
        f"{f(summary['p90_tokens'])} | {f(summary['mean_thinking_tokens'])} | "
        f"{f(summary['mean_answer_tokens'])} | {f(100 * summary['truncation_rate'])} | "
        f"{f(summary['tokens_per_correct'])} | {f(summary['throughput_tokens_per_s'])} |",
    ]
    if summary.get("n_ungradable"):
        lines += [
            "",
            f"{summary['n_ungradable']} sample(s) could not be graded in bounded time "
            "(ungradable, counted as incorrect).",
        ]
    if summary["by_difficulty"]:
        lines += [
            "",
            "| difficulty | problems | accuracy (%) | s.e. | mean tokens | truncated (%) |",
            "|---|---|---|---|---|---|",
        ]
        for level, s in summary["by_difficulty"].items():
            se_l = f(100 * s["accuracy_se"]) if s["accuracy_se"] is not None else "-"
            lines.append(
                f"| {level} | {s['n_problems']} | {f(100 * s['accuracy'])} | {se_l} | "
                f"{f(s['mean_tokens'])} | {f(100 * s['truncation_rate'])} |"
            )
    if summary.get("vote"):
        v = summary["vote"]
        acc_v = f(100 * v["accuracy"]) if v["accuracy"] is not None else "-"
        lines += [
            "",
            f"Majority vote over {v['k']} samples (maj@{v['k']}): accuracy {acc_v} % "
            f"at {f(v['tokens_per_problem'])} tokens per problem ({v['groups']} groups).",
        ]
    return "\n".join(lines) + "\n"
