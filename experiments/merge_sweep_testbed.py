"""The merge trade-off on the testbed story (issue 12, point 3): `merge.sweep` over density x
scale between the testbed model and the pipeline's DLER model, the paper's 0.25 / 0.7 marked.

    python experiments/merge_sweep_testbed.py --pipeline runs/pipeline --out runs/merge_sweep

A thin wrapper: it runs ``python -m merge.sweep`` with the pipeline's models, test split and
evaluation recipe (resumable and keyed by settings there), then prints the table and the
per-difficulty table from ``OUT/sweep.md``; the plot is ``OUT/pareto.png``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import ShortcotError, run_cli  # noqa: E402


@dataclass
class MergeSweepTestbedArguments:
    """The experiment's settings."""

    testbed: str = arg("runs/testbed", "testbed folder (the base model)")
    pipeline: str = arg("runs/pipeline", "pipeline workdir (models/dler)")
    out: str = arg("runs/merge_sweep", "merge.sweep output folder")
    densities: list[float] = arg([0.1, 0.25, 0.5], "densities of the grid")
    scales: list[float] = arg([0.5, 0.7, 1.0], "scales of the grid")
    limit: int = arg(512, "test problems")
    samples: int = arg(2, "samples per problem")
    force: bool = arg(False, "replace an existing --out")


def parse_args(argv: Sequence[str] | None = None) -> tuple[MergeSweepTestbedArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [MergeSweepTestbedArguments],
        argv,
        prog="experiments.merge_sweep_testbed",
        description=__doc__.split("\n\n")[0],
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)
    tuned = Path(args.pipeline) / "models" / "dler"
    if not (tuned / "config.json").exists():
        raise ShortcotError(f"no DLER model at {tuned}; run python -m pipeline run first")
    from merge.sweep import main as sweep

    sweep_args = [
        "--base", str(Path(args.testbed) / "model"),
        "--tuned", str(tuned),
        "--data", str(Path(args.testbed) / "data" / "test.jsonl"),
        "--eval-config", str(ROOT / "configs" / "evals" / "testbed.yaml"),
        "--densities", *map(str, args.densities),
        "--scales", *map(str, args.scales),
        "--limit", str(args.limit),
        "--samples", str(args.samples),
        "--out", args.out,
    ]  # fmt: skip
    sweep([*sweep_args, *(["--force"] if args.force else [])])
    print((Path(args.out) / "sweep.md").read_text())
    return 0


if __name__ == "__main__":
    run_cli(main)
