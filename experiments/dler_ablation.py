"""DLER's ablation on the CPU testbed (DLER section 4, Table 2's question): which part of
DLER's optimiser matters under a truncation penalty tight enough that many groups start
with all-zero reward.

    python experiments/dler_ablation.py --testbed runs/testbed --out runs/dler_ablation

Trains, from ``TESTBED/model``, with the same truncation reward at ``--target_length``
(generation capped there too) and the same compute budget, for each seed:

- ``naive``: truncation GRPO (group std, no dynamic sampling, symmetric clip;
  ``configs/train/truncation_testbed.yaml``);
- ``dler``: DLER (group-mean / batch-std advantage, dynamic sampling, clip-higher;
  ``configs/train/dler_testbed.yaml`` as is: one fixed L_T, no staged target);
- ``dler - batch std``, ``dler - dynamic sampling``, ``dler - clip higher``: DLER with one
  part switched off (``advantage=grpo`` / ``dynamic_sampling=false`` / ``epsilon_high=0.2``);
- ``da-dler``: DLER with DA-DLER's difficulty-aware target (easy prompts, correct ratio
  >= 0.5, get ``--da_short_target``; the others ``--target_length``).

Before training it measures the budget's hardness on the base model: 8 samples of each of
the first ``--probe_prompts`` training prompts at the training temperature (1.0) and
``--target_length`` tokens, and the share of those groups with no sample rewarded
(correct and finished within L_T): the groups that start with all-zero reward.

Each model is evaluated on the first ``--limit`` test problems x ``--samples`` samples
(T = 0.6); the table reports mean ± s.e. over seeds (s.e. = std / sqrt(seeds)) of accuracy
overall and on the hardest difficulty, and of mean tokens. Writes ``OUT/results.md`` and
``OUT/results.json``. Every run is cached by its settings (`experiments.common`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import run_cli  # noqa: E402
from artifacts.jsonl import read_jsonl  # noqa: E402
from artifacts.outdir import atomic_write_text  # noqa: E402
from experiments.common import (  # noqa: E402
    evaluate_model,
    level,
    mean_se,
    require_testbed,
    train_run,
)

# name -> (recipe, overrides that make the variant)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "naive": ("truncation_testbed", []),
    "dler": ("dler_testbed", []),
    "dler - batch std": ("dler_testbed", ["advantage=grpo"]),
    "dler - dynamic sampling": ("dler_testbed", ["dynamic_sampling=false"]),
    "dler - clip higher": ("dler_testbed", ["epsilon_high=0.2"]),
    "da-dler": ("dler_testbed", ["reward_method=da_dler"]),
}


def zero_reward_groups(samples_file: Path, target: int) -> float:
    """Share of prompts none of whose samples is correct and finished within ``target`` tokens."""
    groups: dict[str, bool] = {}
    for r in read_jsonl(samples_file):
        ok = bool(r["correct"]) and not r["truncated"] and int(r["tokens"]) <= target
        groups[str(r["id"])] = groups.get(str(r["id"]), False) or ok
    return sum(not v for v in groups.values()) / max(len(groups), 1)


def slug(name: str) -> str:
    return name.replace(" - ", "_no_").replace(" ", "_").replace("-", "_")


def fmt(ms: tuple[float, float], scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * ms[0]:.{digits}f} ± {scale * ms[1]:.{digits}f}"


@dataclass
class AblationArguments:
    """The experiment's settings."""

    testbed: str = arg("runs/testbed", "testbed folder (model/ and data/)")
    out: str = arg("runs/dler_ablation", "output folder")
    seeds: list[int] = arg([0, 1, 2], "training seeds")
    variants: list[str] = arg(
        list(VARIANTS), "variants to train, some of: " + ", ".join(f"'{v}'" for v in VARIANTS)
    )
    steps: int = arg(40, "optimizer steps per run")
    target_length: int = arg(40, "L_T (and generation cap)")
    da_short_target: int = arg(32, "DA-DLER's easy-prompt L_T")
    probe_prompts: int = arg(128, "prompts for the zero-group probe")
    limit: int = arg(512, "test problems per evaluation")
    samples: int = arg(2, "evaluation samples per problem")
    threads: int = arg(1, "torch CPU threads")

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")


def parse_args(argv: Sequence[str] | None = None) -> tuple[AblationArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [AblationArguments],
        argv,
        prog="experiments.dler_ablation",
        description=__doc__.split("\n\n")[0],
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    testbed, out = require_testbed(args.testbed), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    L = args.target_length

    probe = out / f"probe_L{L}"
    evaluate_model(
        testbed / "model",
        testbed / "data" / "train.jsonl",
        probe,
        samples=8,
        limit=args.probe_prompts,
        max_new_tokens=L,
        temperature=1.0,
        top_p=1.0,
    )
    zero = zero_reward_groups(probe / "samples.jsonl", L)
    print(f"groups with all-zero reward at the start (L_T {L}): {100 * zero:.1f}%", flush=True)

    test = testbed / "data" / "test.jsonl"
    base = evaluate_model(testbed / "model", test, out / "evals" / "base", args.samples, args.limit)
    hardest = max(int(k) for k in base["by_difficulty"])
    common = [
        f"max_steps={args.steps}",
        f"target_length={L}",
        f"max_completion_length={L}",
        "target_schedule=[]",
        f"da_short_target={args.da_short_target}",
        f"save_steps={args.steps}",
    ]
    results: dict[str, list[dict]] = {}
    for name in args.variants:
        recipe, extra = VARIANTS[name]
        for seed in args.seeds:
            run = f"{slug(name)}_s{seed}"
            print(f"== {name}, seed {seed}", flush=True)
            cost = train_run(
                recipe, testbed, out / "models" / run, [*common, *extra, f"seed={seed}"]
            )
            s = evaluate_model(
                out / "models" / run, test, out / "evals" / run, args.samples, args.limit
            )
            results.setdefault(name, []).append(
                {
                    "seed": seed,
                    "accuracy": s["accuracy"],
                    "hard_accuracy": level(s, hardest),
                    "mean_tokens": s["mean_tokens"],
                    "hard_tokens": level(s, hardest, "mean_tokens"),
                    "train_seconds": cost["train_seconds"],
                    "filtered_fraction": cost["filtered_fraction"],
                    "first_steps_reward": cost["first_steps_reward"],
                }
            )

    lines = [
        f"Truncation reward at L_T = {L} tokens, {args.steps} steps x 64 completions, seeds "
        f"{args.seeds}; groups with all-zero reward at the start: {100 * zero:.1f}% "
        f"({args.probe_prompts} training prompts x 8 samples of the base model at T = 1.0). "
        f"Evaluation: first {args.limit} test problems x {args.samples} samples, T = 0.6; "
        "mean ± s.e. over seeds.",
        "",
        f"| run | accuracy (%) | {hardest} terms (%) | mean tokens | {hardest}-term tokens | "
        "reward, first 5 steps | filtered groups (%) | train s |",
        "|---|---|---|---|---|---|---|---|",
        f"| base (untrained) | {100 * base['accuracy']:.1f} ± {100 * base['accuracy_se']:.1f}* | "
        f"{100 * level(base, hardest):.1f} ± {100 * level(base, hardest, 'accuracy_se'):.1f}* | "
        f"{base['mean_tokens']:.1f} | {level(base, hardest, 'mean_tokens'):.1f} | - | - | - |",
    ]
    for name, rows in results.items():

        def ms(key, rows=rows):
            return mean_se([r[key] for r in rows if r[key] is not None])

        ff = [r["filtered_fraction"] for r in rows if r["filtered_fraction"] is not None]
        lines.append(
            f"| {name} | {fmt(ms('accuracy'))} | {fmt(ms('hard_accuracy'))} | "
            f"{fmt(ms('mean_tokens'), 1)} | {fmt(ms('hard_tokens'), 1)} | "
            f"{fmt(ms('first_steps_reward'), 1, 3)} | "
            f"{f'{100 * sum(ff) / len(ff):.0f}' if ff else '-'} | "
            f"{sum(r['train_seconds'] for r in rows) / len(rows):.0f} |"
        )
    lines += ["", "*s.e. over problems for the untrained base (one model, no seeds)."]
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "results.md", md)
    atomic_write_text(
        out / "results.json",
        json.dumps({"zero_reward_groups": zero, "hardest": hardest, "runs": results}, indent=1),
    )
    print(md)
    return 0


if __name__ == "__main__":
    run_cli(main)
