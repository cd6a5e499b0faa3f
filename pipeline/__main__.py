"""`python -m pipeline run|publish`: the whole DLER story in one command.

    python -m pipeline run                                   # CPU testbed, <= 20 min
    python -m pipeline run --config configs/pipeline/r1_1.5b_gpu.yaml
    python -m pipeline run workdir=runs/p2 merge_density=0.5 # key=value overrides
    python -m pipeline publish --which merged --repo me/testbed-dler-merged

Stages (each skipped when its output exists with the same settings, so an interrupted
run resumes): build the testbed, train with DLER, merge back into the base, build a
compressed-CoT dataset and fine-tune the base on it, evaluate all four, compare.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from artifacts.config import load_config
from artifacts.errors import run_cli
from artifacts.outdir import atomic_write_text
from pipeline.config import PipelineConfig
from pipeline.plan import cfg_report_dir, plan
from pipeline.publish import PUBLISHABLE, publish
from pipeline.stages import decide, run_stage


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run every stage (cached stages are skipped)")
    r.add_argument(
        "--config", help="YAML of pipeline.config.PipelineConfig fields (default: the CPU testbed)"
    )
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print the stages and whether each is up to date; run nothing",
    )
    r.add_argument(
        "overrides", nargs="*", help="key=value changes to the config, e.g. workdir=runs/p2"
    )
    u = sub.add_parser(
        "publish",
        help="push one model (or the compressed dataset) of a finished run to the Hub, with "
        "the evaluation table in its card",
    )
    u.add_argument("--config", help="the config the run used (default: the CPU testbed)")
    u.add_argument(
        "--which",
        default="merged",
        choices=list(PUBLISHABLE),
        help="what to publish: a model (dler, merged, distilled) or the compressed dataset "
        "(a Hub dataset repo)",
    )
    u.add_argument("--repo", required=True, help="Hub repo id to create/update, e.g. me/model-name")
    u.add_argument("--private", action="store_true", help="create the repo as private")
    u.add_argument("overrides", nargs="*", help="key=value changes to the config (as given to run)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = load_config(PipelineConfig, args.config, args.overrides)
    if args.command == "publish":
        print(publish(cfg, args.which, args.repo, private=args.private))
        return 0
    stages = plan(cfg)
    state_dir = Path(cfg.workdir) / ".stages"
    if args.dry_run:
        for s in stages:
            flag = decide(s, state_dir).describe()
            runner = " ".join(s.launcher) if s.launcher else "python"
            print(f"{s.name:13s} {flag:10s} {runner} -m {s.module} {' '.join(s.args)}")
        return 0
    start = time.time()
    times = {}
    for s in stages:
        t = time.time()
        status = run_stage(s, state_dir, Path(cfg.workdir) / "logs")
        times[s.name] = (status, time.time() - t)
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
    lines += [f"| {n} | {st} | {sec:.0f} |" for n, (st, sec) in times.items()]
    lines += ["", f"Total wall time of this invocation: {time.time() - start:.0f} s."]
    atomic_write_text(report / "report.md", "\n".join(lines) + "\n")
    print("\n" + table)
    print(f"report: {report / 'report.md'}  plot: {report / 'pareto.png'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
