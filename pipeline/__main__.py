"""`python -m pipeline run|publish`: the whole DLER story in one command.

    python -m pipeline run                                   # CPU testbed
    python -m pipeline run --config configs/pipeline/r1_1.5b_gpu.yaml
    python -m pipeline run --workdir runs/p2 --merge_density 0.5 --rl_args '{max_steps: 20}'
    python -m pipeline publish --which merged --hub_model_id me/testbed-dler-merged

Stages (each skipped when its output exists with the same settings, so an interrupted
run resumes): build the testbed, train with DLER, merge back into the base, build a
compressed-CoT dataset and fine-tune the base on it, evaluate all four, compare.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from artifacts.cli import arg, parse_args
from artifacts.errors import ShortcotError, run_cli
from artifacts.outdir import atomic_write_text
from pipeline.config import PipelineConfig
from pipeline.plan import cfg_report_dir, plan, state_dir
from pipeline.publish import publish
from pipeline.stages import decide, run_all

COMMANDS = ("run", "publish")


@dataclass
class RunArguments:
    """``python -m pipeline run`` only."""

    dry_run: bool = arg(False, "print the stages and whether each is up to date; run nothing")


@dataclass
class PublishArguments:
    """``python -m pipeline publish`` only: push one artifact of a finished run to the Hub,
    with the evaluation table in its card."""

    which: Literal["dler", "merged", "distilled", "dataset"] = arg(
        "merged",
        "what to publish: a model (dler, merged, distilled) or the compressed dataset "
        "(a Hub dataset repo)",
    )
    hub_model_id: str = arg("", "Hub repo id to create or update, e.g. me/model-name")
    hub_private_repo: bool = arg(False, "create the repo as private")


def parse(argv: Sequence[str] | None = None) -> tuple[str, PipelineConfig, object]:
    """(command, the run's config, the command's own arguments)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            return "help", PipelineConfig(), None
        raise ShortcotError(
            "say what to do first: python -m pipeline run ... or python -m pipeline publish ..."
        )
    command, rest = argv[0], argv[1:]
    extra = RunArguments if command == "run" else PublishArguments
    cfg, args = parse_args(
        [PipelineConfig, extra], rest, prog=f"pipeline {command}", description=__doc__
    )
    return command, cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    command, cfg, args = parse(argv)
    if command == "help":
        return 0
    if command == "publish":
        if not args.hub_model_id:
            raise ShortcotError("publish needs --hub_model_id user/name; add it")
        print(publish(cfg, args.which, args.hub_model_id, private=args.hub_private_repo))
        return 0
    stages = plan(cfg)
    if args.dry_run:
        for s in stages:
            flag = decide(s, state_dir(cfg)).describe()
            runner = " ".join(s.launcher) if s.launcher else "python"
            env = "".join(f"{k}={v} " for k, v in s.env.items())
            print(f"{s.name:13s} {flag:10s} {env}{runner} -m {s.module} {' '.join(s.args)}")
            for key, value in (s.config or {}).items():
                print(f"{'':25s}{key}: {value}")
        return 0
    start = time.time()
    jobs = cfg.resolved_jobs()
    if jobs > 1:
        print(
            f"[pipeline] up to {jobs} stages at once; each stage's output is in "
            f"{Path(cfg.workdir) / 'logs'}",
            flush=True,
        )
    times = run_all(stages, state_dir(cfg), Path(cfg.workdir) / "logs", jobs)
    report = cfg_report_dir(cfg)
    table = (report / "table.md").read_text()
    lines = [
        "# shortcot pipeline report",
        "",
        table,
        "",
        "![Pareto plot](pareto.png)",
        "",
        "| stage | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {s.name} | {times[s.name][0]} | {times[s.name][1]:.0f} |" for s in stages]
    lines += ["", f"Total wall time of this invocation: {time.time() - start:.0f} s."]
    atomic_write_text(report / "report.md", "\n".join(lines) + "\n")
    print("\n" + table)
    print(f"report: {report / 'report.md'}  plot: {report / 'pareto.png'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
