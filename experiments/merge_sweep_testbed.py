"""The merge trade-off on the testbed story (issue 12, point 3): `merge.sweep` over density x
scale between the testbed model and the pipeline's DLER model, the paper's 0.25 / 0.7 marked.

    python experiments/merge_sweep_testbed.py --pipeline runs/pipeline --out runs/merge_sweep

A thin wrapper: it runs ``python -m merge.sweep`` with the pipeline's models, test split and
evaluation recipe (resumable and keyed by settings there), then prints the table and the
per-difficulty table from ``OUT/sweep.md``; the plot is ``OUT/pareto.png``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from artifacts.errors import ShortcotError, run_cli  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--testbed", default="runs/testbed", help="testbed folder (the base model)")
    p.add_argument("--pipeline", default="runs/pipeline", help="pipeline workdir (models/dler)")
    p.add_argument("--out", default="runs/merge_sweep", help="merge.sweep output folder")
    p.add_argument("--densities", default="0.1,0.25,0.5")
    p.add_argument("--scales", default="0.5,0.7,1.0")
    p.add_argument("--limit", type=int, default=512, help="test problems")
    p.add_argument("--samples", type=int, default=2, help="samples per problem")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    tuned = Path(args.pipeline) / "models" / "dler"
    if not (tuned / "config.json").exists():
        raise ShortcotError(f"no DLER model at {tuned}; run python -m pipeline run first")
    from merge.sweep import main as sweep

    sweep_args = [
        "--base", str(Path(args.testbed) / "model"),
        "--tuned", str(tuned),
        "--data", str(Path(args.testbed) / "data" / "test.jsonl"),
        "--eval-config", str(ROOT / "configs" / "evals" / "testbed.yaml"),
        "--densities", *args.densities.split(","),
        "--scales", *args.scales.split(","),
        "--limit", str(args.limit),
        "--samples", str(args.samples),
        "--out", args.out,
    ]  # fmt: skip
    sweep([*sweep_args, *(["--force"] if args.force else [])])
    print((Path(args.out) / "sweep.md").read_text())
    return 0


if __name__ == "__main__":
    run_cli(main)
