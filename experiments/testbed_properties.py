"""Measure the CPU testbed's properties (issue 4) and write the table in docs/testbed.md.

    python experiments/testbed_properties.py --testbed runs/testbed --out runs/testbed_properties

Evaluates ``TESTBED/model`` on ``TESTBED/data/test.jsonl`` with `evals.run.evaluate`
(grader "testbed", temperature 0.6 by default) and reports:

- accuracy overall and per difficulty (number of terms), next to chance (10%);
- mean completion tokens against the minimal correct trace (`testbed.task.minimal_trace`
  tokenized with the model's tokenizer, EOS included as in the completions);
- accuracy at shorter budgets: a sample counts as correct at budget B when it is correct
  and ended within B tokens. Samples are seeded per problem and sample index
  (`evals.backends`), so this is exactly what a run with ``--max_new_tokens B`` would
  score, without generating again;
- what the model's own checks do (`testbed.teacher.audit_trace`): how many traces made a
  wrong step, how many of those a check fixed, and how many checks were useless;
- the build time recorded in ``TESTBED/build.json``.

Writes ``OUT/properties.json`` and ``OUT/properties.md`` next to the evaluation's
``samples.jsonl`` / ``summary.json``. Reruns reuse the finished evaluation.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import ShortcotError, run_cli  # noqa: E402
from artifacts.jsonl import read_jsonl  # noqa: E402
from artifacts.outdir import atomic_write_text  # noqa: E402
from evals.grading import split_think  # noqa: E402
from testbed.task import minimal_trace, parse_problem  # noqa: E402
from testbed.teacher import audit_trace  # noqa: E402


def budget_accuracy(samples: list[dict], budget: int) -> float:
    """Accuracy had generation stopped at ``budget`` tokens: correct and ended within it."""
    return statistics.mean(
        bool(s["correct"]) and not s["truncated"] and s["tokens"] <= budget for s in samples
    )


def minimal_tokens(tokenizer, problem_text: str) -> int:
    """Tokens of the minimal correct completion, EOS included (as a finished sample's count)."""
    text = minimal_trace(parse_problem(problem_text))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1


def measure(samples: list[dict], problems: dict[str, dict], tokenizer, budgets: list[int]) -> dict:
    min_tok = {pid: minimal_tokens(tokenizer, p["problem"]) for pid, p in problems.items()}
    by_d: dict[int, list[dict]] = defaultdict(list)
    for s in samples:
        by_d[int(s["difficulty"])].append(s)
    audits = []
    for s in samples:
        thinking, _ = split_think(s["completion"])
        audits.append(audit_trace(parse_problem(problems[s["id"]]["problem"]), thinking or ""))
    made_error = [a for a in audits if a.wrong_steps]
    result = {
        "n_samples": len(samples),
        "accuracy": statistics.mean(bool(s["correct"]) for s in samples),
        "chance": 0.1,
        "truncation_rate": statistics.mean(bool(s["truncated"]) for s in samples),
        "mean_tokens": statistics.mean(s["tokens"] for s in samples),
        "median_tokens": statistics.median(s["tokens"] for s in samples),
        "p90_tokens": sorted(s["tokens"] for s in samples)[int(0.9 * (len(samples) - 1))],
        "max_tokens": max(s["tokens"] for s in samples),
        "mean_minimal_tokens": statistics.mean(min_tok[s["id"]] for s in samples),
        "by_difficulty": {
            d: {
                "n": len(rows),
                "accuracy": statistics.mean(bool(s["correct"]) for s in rows),
                "mean_tokens": statistics.mean(s["tokens"] for s in rows),
                "mean_minimal_tokens": statistics.mean(min_tok[s["id"]] for s in rows),
            }
            for d, rows in sorted(by_d.items())
        },
        "budgets": {b: budget_accuracy(samples, b) for b in budgets},
        "checks": {
            "traces_with_a_wrong_step": len(made_error) / len(audits),
            "wrong_steps_fixed_by_a_check": sum(a.caught for a in audits)
            / max(sum(a.wrong_steps for a in audits), 1),
            "checks_per_trace": statistics.mean(a.checks for a in audits),
            "useless_check_share": sum(a.useless_checks for a in audits)
            / max(sum(a.checks for a in audits), 1),
            "rechecks_per_trace": statistics.mean(a.rechecks for a in audits),
            "wrong_sum_share": sum(a.wrong_sums for a in audits)
            / max(sum(a.steps for a in audits), 1),
        },
    }
    result["length_ratio"] = result["mean_tokens"] / result["mean_minimal_tokens"]
    return result


def to_markdown(r: dict, build: dict | None, settings: str) -> str:
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = [
        f"Test mix: {r['n_samples']} samples ({settings}).",
        "",
        "| property | measured | target |",
        "|---|---|---|",
        f"| accuracy (sampling as above) | {pct(r['accuracy'])} (chance 10%) | >= 70% at temperature 0.6 |",
        f"| mean completion tokens / minimal trace | {r['mean_tokens']:.1f} / {r['mean_minimal_tokens']:.1f} = {r['length_ratio']:.2f}x | >= 2.5x |",
        f"| median / p90 / max tokens | {r['median_tokens']:.0f} / {r['p90_tokens']} / {r['max_tokens']} | heavy tail |",
        f"| truncated at the generation limit | {pct(r['truncation_rate'])} | |",
    ]
    if build:
        lines.append(
            f"| build time | {build['seconds']:.0f} s ({len(build['log'])} SFT steps) | <= 20 min |"
        )
    lines += [
        "",
        "| terms (difficulty) | accuracy | mean tokens | minimal trace | ratio |",
        "|---|---|---|---|---|",
    ]
    for d, v in r["by_difficulty"].items():
        lines.append(
            f"| {d} | {pct(v['accuracy'])} | {v['mean_tokens']:.1f} | {v['mean_minimal_tokens']:.1f} | "
            f"{v['mean_tokens'] / v['mean_minimal_tokens']:.2f}x |"
        )
    lines += [
        "",
        "| token budget | " + " | ".join(str(b) for b in r["budgets"]) + " |",
        "|---|" + "---|" * len(r["budgets"]),
        "| accuracy | " + " | ".join(pct(a) for a in r["budgets"].values()) + " |",
    ]
    c = r["checks"]
    lines += [
        "",
        f"Own checks: {pct(c['traces_with_a_wrong_step'])} of traces wrote a wrong step; "
        f"{pct(c['wrong_steps_fixed_by_a_check'])} of wrong steps were fixed by the check after them; "
        f"{c['checks_per_trace']:.2f} step checks and {c['rechecks_per_trace']:.2f} whole re-computations "
        f"per trace; {pct(c['useless_check_share'])} of step checks fixed nothing (useless); "
        f"{pct(c['wrong_sum_share'])} of steps added wrong (arithmetic slips).",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class PropertiesArguments:
    """The experiment's settings."""

    testbed: str = arg("runs/testbed", "a `python -m testbed.build` output folder")
    out: str = arg("runs/testbed_properties", "evaluation + properties output folder")
    split: Literal["test", "monitor"] = arg("test", "which held-out split")
    limit: int | None = arg(None, "first N problems (default: all)")
    samples: int = arg(1, "samples per problem")
    temperature: float = arg(0.6, "sampling temperature (0 = greedy)")
    max_new_tokens: int = arg(512, "generation limit (the longest budget)")
    budgets: list[int] = arg([30, 40, 60, 80, 120, 160, 240, 512], "token budgets")
    batch_size: int = arg(64, "generation batch size")
    force: bool = arg(False, "redo the evaluation from scratch")


def parse_args(argv: Sequence[str] | None = None) -> tuple[PropertiesArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [PropertiesArguments],
        argv,
        prog="experiments.testbed_properties",
        description="Measure the testbed's properties (accuracy, overthinking, budgets).",
    )


def main(argv: Sequence[str] | None = None) -> int:
    from transformers import AutoTokenizer

    from evals.run import EvalConfig, evaluate

    (args,) = parse_args(argv)
    tb = Path(args.testbed)
    if not (tb / "model" / "config.json").exists():
        raise ShortcotError(
            f"{tb} is not a testbed build; run `python -m testbed.build --out {tb}` first"
        )
    data = tb / "data" / f"{args.split}.jsonl"
    cfg = EvalConfig(
        model=str(tb / "model"),
        data=str(data),
        out=args.out,
        grader="testbed",
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        batch_size=args.batch_size,
        limit=args.limit,
        force=args.force,
    )
    evaluate(cfg)
    samples = list(read_jsonl(Path(args.out) / "samples.jsonl"))
    problems = {r["id"]: r for r in read_jsonl(data)}
    wanted = set(list(problems)[: args.limit] if args.limit else problems)
    samples = [s for s in samples if s["id"] in wanted and s["sample"] < args.samples]
    tok = AutoTokenizer.from_pretrained(tb / "model")
    result = measure(samples, problems, tok, args.budgets)
    build = json.loads((tb / "build.json").read_text()) if (tb / "build.json").exists() else None
    if build:
        result["build_seconds"] = build["seconds"]
        result["build_steps"] = len(build["log"])
    settings = f"{args.split} split, temperature {args.temperature}, top-p 0.95, {args.samples} sample(s) per problem, max {args.max_new_tokens} new tokens"
    md = to_markdown(result, build, settings)
    atomic_write_text(Path(args.out) / "properties.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(Path(args.out) / "properties.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    run_cli(main)
