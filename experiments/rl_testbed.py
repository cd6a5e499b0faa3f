"""RL methods on the CPU testbed with one compute budget: the results table and plot of docs/results.md.

    python experiments/rl_testbed.py --testbed runs/testbed --out runs/rl_testbed [--set max_steps=40]

Trains truncation-only GRPO, DLER, LASER, LASER-D and LASER-DE from ``TESTBED/model`` with the
recipes ``configs/train/<method>_testbed.yaml`` (same steps, batch, learning rate), evaluates
the untrained model and each trained one with `evals.run.evaluate` on ``TESTBED/data/test.jsonl``
(grader "testbed", temperature 0.6), and writes ``OUT/results.md`` (the table from
`evals.compare`, plus training cost per method), ``OUT/results.json`` and ``OUT/pareto.png``.

Every stage is skipped when its output exists with the same settings (`experiments.common`),
so an interrupted run continues where it stopped (``--force`` starts over). Training and
evaluation are seeded.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import run_cli  # noqa: E402
from artifacts.outdir import atomic_write_text  # noqa: E402
from experiments.common import evaluate_model, require_testbed, train_run  # noqa: E402

METHODS = {
    "truncation": "Truncation GRPO",
    "dler": "DLER",
    "laser": "LASER",
    "laser_d": "LASER-D",
    "laser_de": "LASER-DE",
}


def train_one(method: str, testbed: Path, out: Path, overrides: list[str]) -> dict:
    """Train one method (reused when trained with the same recipe and overrides)."""
    return train_run(f"{method}_testbed", testbed, out / "models" / method, overrides)


def evaluate_one(model: Path, testbed: Path, out: Path, args) -> dict:
    return evaluate_model(
        model,
        testbed / "data" / "test.jsonl",
        out,
        args.samples,
        args.limit,
        args.max_new_tokens,
        args.batch_size,
    )


def results_markdown(rows: list[dict], costs: dict[str, dict], table: str) -> str:
    lines = [
        table,
        "",
        "| run | train time (s) | filtered groups | gen. rounds / step | LASER-D targets (last) |",
        "|---|---|---|---|---|",
    ]
    for key, c in costs.items():
        f = c.get("filtered_fraction")
        r = c.get("generation_rounds")
        t = c.get("laser_d_targets") or {}
        lines.append(
            f"| {METHODS[key]} | {c['train_seconds']:.0f} | {'-' if f is None else f'{100 * f:.0f}%'} | "
            f"{'-' if r is None else f'{r:.2f}'} | {', '.join(f'{k} {v:.0f}' for k, v in t.items()) or '-'} |"
        )
    return "\n".join(lines) + "\n"


@dataclass
class RLTestbedArguments:
    """The experiment's settings."""

    testbed: str = arg("runs/testbed", "testbed folder (model/ and data/)")
    out: str = arg("runs/rl_testbed", "output folder (models, evals, results)")
    methods: list[str] = arg(list(METHODS), f"methods to run, some of: {' '.join(METHODS)}")
    samples: int = arg(1, "evaluation samples per test problem")
    limit: int | None = arg(None, "evaluate on the first N test problems only")
    max_new_tokens: int = arg(320, "evaluation generation limit")
    batch_size: int = arg(128, "evaluation generation batch size")
    threads: int = arg(1, "torch CPU threads (1 is fastest for tiny models on a shared CPU)")
    force: bool = arg(False, "delete OUT and start over")
    train_only: bool = arg(
        False,
        "train and evaluate --methods only, without the baseline and the table "
        "(to run methods in parallel processes; a final run without it writes the table)",
    )
    overrides: list[str] = arg(
        [],
        "train.rl overrides for every recipe, e.g. --set max_steps=20",
        aliases=["--set"],
        metavar="KEY=VALUE",
    )

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")


def parse_args(argv: Sequence[str] | None = None) -> tuple[RLTestbedArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [RLTestbedArguments],
        argv,
        prog="experiments.rl_testbed",
        description=__doc__.split("\n\n")[0],
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    testbed, out = require_testbed(args.testbed), Path(args.out)
    if args.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    if args.train_only:
        for method in args.methods:
            print(f"== {METHODS[method]}", flush=True)
            train_one(method, testbed, out, args.overrides)
            evaluate_one(out / "models" / method, testbed, out / "evals" / method, args)
        return 0
    summaries = [evaluate_one(testbed / "model", testbed, out / "evals" / "untrained", args)]
    labels = ["untrained"]
    costs = {}
    for method in args.methods:
        print(f"== {METHODS[method]}", flush=True)
        costs[method] = train_one(method, testbed, out, args.overrides)
        summaries.append(
            evaluate_one(out / "models" / method, testbed, out / "evals" / method, args)
        )
        labels.append(METHODS[method])

    from evals.compare import comparison_rows, markdown_table, plot_pareto

    rows = comparison_rows(summaries, labels)
    plot_pareto(rows, out / "pareto.png", title="RL on the CPU testbed: accuracy vs tokens")
    md = results_markdown(rows, costs, markdown_table(rows))
    atomic_write_text(out / "results.md", md)
    atomic_write_text(out / "results.json", json.dumps({"rows": rows, "costs": costs}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    run_cli(main)
