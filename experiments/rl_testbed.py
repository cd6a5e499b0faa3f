"""RL methods on the CPU testbed with one compute budget: the README's results table and plot.

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

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--testbed", default="runs/testbed", help="testbed folder (model/ and data/)")
    p.add_argument(
        "--out", default="runs/rl_testbed", help="output folder (models, evals, results)"
    )
    p.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="methods to run"
    )
    p.add_argument("--samples", type=int, default=1, help="evaluation samples per test problem")
    p.add_argument(
        "--limit", type=int, default=None, help="evaluate on the first N test problems only"
    )
    p.add_argument("--max-new-tokens", type=int, default=320, help="evaluation generation limit")
    p.add_argument("--batch-size", type=int, default=128, help="evaluation generation batch size")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest for tiny models on a shared CPU)",
    )
    p.add_argument("--force", action="store_true", help="delete OUT and start over")
    p.add_argument(
        "--train-only",
        action="store_true",
        help="train and evaluate --methods only, without the baseline and the table "
        "(to run methods in parallel processes; a final run without it writes the table)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides for every recipe, e.g. --set max_steps=20",
    )
    args = p.parse_args(argv)
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
