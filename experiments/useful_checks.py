"""Are the testbed model's re-checks useful to it? (issue 12, point 5)

    python -m testbed.build --out runs/testbed_checks --preset checks
    python experiments/useful_checks.py --testbed runs/testbed_checks --out runs/useful_checks

Two measurements:

1. What the model's own checks do: sample the testbed model on the test split (T = 0.6)
   and walk every trace with `testbed.teacher.audit_trace`: of the steps the model got
   wrong, how many did the check right after them fix (overall and per difficulty)?
2. What the checks are worth: build the same testbed (same problems, seed, model size
   and SFT steps) from a teacher that writes no checks at all (no step re-checks, no
   slips, no whole re-computations; ``OUT/testbed_no_checks``) and compare accuracy per
   difficulty with the same evaluation.

Writes ``OUT/results.md`` and ``OUT/results.json``; the build and evaluations are cached
(testbed.build by its settings digest, evaluations by evals.run's settings check).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import ShortcotError, run_cli  # noqa: E402
from artifacts.jsonl import read_jsonl  # noqa: E402
from artifacts.outdir import atomic_write_text  # noqa: E402
from evals.grading import split_think  # noqa: E402
from experiments.common import evaluate_model, level  # noqa: E402
from testbed.build import PresetName, build, make_config  # noqa: E402
from testbed.task import parse_problem  # noqa: E402
from testbed.teacher import audit_trace  # noqa: E402

NO_CHECKS = {
    "check_prob_easy": 0.0,
    "check_prob_hard": 0.0,
    "error_prob_easy": 0.0,
    "error_prob_hard": 0.0,
    "arith_prob_easy": 0.0,
    "arith_prob_hard": 0.0,
    "recheck_scale_easy": 0.0,
    "recheck_scale_hard": 0.0,
}


def check_audit(samples_file: Path, data_file: Path) -> dict:
    """Wrong steps and how many the model's own next check fixed, overall and per difficulty."""
    problems = {str(r["id"]): parse_problem(r["problem"]) for r in read_jsonl(data_file)}
    by_d: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # wrong, caught, checks, traces
    for s in read_jsonl(samples_file):
        thinking, _ = split_think(s["completion"])
        a = audit_trace(problems[str(s["id"])], thinking or "")
        for key in ("all", str(s["difficulty"])):
            row = by_d[key]
            row[0] += a.wrong_steps
            row[1] += a.caught
            row[2] += a.checks
            row[3] += 1
    return {
        k: {
            "wrong_steps": w,
            "fixed_by_own_check": c,
            "fixed_share": c / w if w else None,
            "checks_per_trace": n_checks / n,
        }
        for k, (w, c, n_checks, n) in by_d.items()
    }


@dataclass
class UsefulChecksArguments:
    """The experiment's settings."""

    testbed: str = arg("runs/testbed_checks", "a testbed build of --preset")
    preset: PresetName = arg("checks", "the testbed.build preset it was built with")
    out: str = arg("runs/useful_checks", "output folder")
    limit: int = arg(512, "test problems")
    samples: int = arg(4, "samples per problem")
    threads: int = arg(1, "torch CPU threads (1, as testbed.build)")


def parse_args(argv: Sequence[str] | None = None) -> tuple[UsefulChecksArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [UsefulChecksArguments],
        argv,
        prog="experiments.useful_checks",
        description=__doc__.split("\n\n")[0],
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    testbed, out = Path(args.testbed), Path(args.out)
    if not (testbed / "build.json").exists():
        raise ShortcotError(
            f"no testbed at {testbed}; build it with python -m testbed.build --out {testbed}"
        )
    cfg = make_config(args.preset)
    if json.loads((testbed / "build.json").read_text())["digest"] != cfg.digest():
        raise ShortcotError(
            f"{testbed} was not built with --preset {args.preset}; pass the right --preset or --testbed"
        )
    no_checks = out / "testbed_no_checks"
    build(no_checks, replace(cfg, teacher=replace(cfg.teacher, **NO_CHECKS)), threads=args.threads)

    test = testbed / "data" / "test.jsonl"
    runs = {}
    for name, model in (("with checks", testbed / "model"), ("no checks", no_checks / "model")):
        folder = out / "evals" / name.replace(" ", "_")
        summary = evaluate_model(model, test, folder, args.samples, args.limit, max_new_tokens=448)
        runs[name] = {"summary": summary, "audit": check_audit(folder / "samples.jsonl", test)}

    levels = sorted(runs["with checks"]["summary"]["by_difficulty"], key=int)
    lines = [
        f"First {args.limit} test problems x {args.samples} samples, T = 0.6, top-p 0.95, "
        "up to 448 tokens. Accuracy ± s.e. over problems / mean tokens; 'fixed' = the model's "
        "own wrong steps that the check right after them fixed (`testbed.teacher.audit_trace`).",
        "",
        "| model | all | " + " | ".join(f"{d} terms" for d in levels) + " |",
        "|---|---|" + "---|" * len(levels),
    ]
    for name, r in runs.items():
        s = r["summary"]
        cells = [
            f"{100 * s['accuracy']:.1f} ± {100 * s['accuracy_se']:.1f}% / {s['mean_tokens']:.0f} t"
        ]
        for d in levels:
            cells.append(
                f"{100 * level(s, d):.1f} ± {100 * level(s, d, 'accuracy_se'):.1f}% / "
                f"{level(s, d, 'mean_tokens'):.0f} t"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, r in runs.items():
        a = r["audit"]

        def share(k, a=a):
            v = a.get(k, {}).get("fixed_share")
            return "-" if v is None else f"{100 * v:.0f}% of {a[k]['wrong_steps']}"

        lines.append(
            f"| {name}: own wrong steps fixed | {share('all')} | "
            + " | ".join(share(d) for d in levels)
            + " |"
        )
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "results.md", md)
    atomic_write_text(
        out / "results.json",
        json.dumps(
            {k: {"summary": v["summary"], "audit": v["audit"]} for k, v in runs.items()}, indent=1
        ),
    )
    print(md)
    return 0


if __name__ == "__main__":
    run_cli(main)
