"""`python -m merge.sweep`: choose the merge's density and scale by measurement.

DLER (section 4.6) fixed density 0.25 and scale 0.7 by hand. This evaluates a grid of
merges around those values with the evaluation package, reports the accuracy-vs-tokens
Pareto front, and picks the point that keeps the most length gain at base accuracy:
among merges whose accuracy is at least the base's minus ``--tolerance`` points, the one
with the fewest mean tokens (if none qualifies, the most accurate merge).

    python -m merge.sweep --base runs/testbed/model --tuned runs/pipeline/models/dler \\
        --data runs/testbed/data/test.jsonl --eval_config configs/evals/testbed.yaml \\
        --out runs/sweep --densities 0.1 0.25 0.5 --scales 0.5 0.7 1.0

or with a recipe: ``python -m merge.sweep --config configs/merge/sweep_testbed.yaml``.

Resumable: each grid point's evaluation is kept under ``OUT.work/``, keyed by its merge
settings (`merge_key`), and skipped on a rerun that evaluates the same problems x samples
(evaluations themselves resume); merged weights of grid points are deleted after they are
evaluated (``--keep_merges`` keeps them) and the chosen merge is written to ``OUT/best``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from artifacts import cli
from artifacts.cli import HubArguments, arg
from artifacts.errors import ShortcotError, run_cli
from artifacts.hub import push_folder
from artifacts.outdir import atomic_output_dir, check_output
from evals.compare import comparison_rows, difficulty_table, markdown_table, plot_pareto
from evals.run import evaluate
from evals.run import parse_args as parse_eval_args
from merge.config import MergeConfig
from merge.selective import merge_models


def choose(rows: Sequence[dict], base_accuracy: float, tolerance: float) -> int:
    """Index of the chosen merge in ``rows`` (dicts with ``accuracy`` in % and ``mean_tokens``).

    The fewest-token row among those within ``tolerance`` points of ``base_accuracy``; if
    none is, the most accurate row (ties: fewer tokens).

    >>> rows = [{"accuracy": 80.0, "mean_tokens": 50}, {"accuracy": 78.0, "mean_tokens": 30},
    ...         {"accuracy": 70.0, "mean_tokens": 20}]
    >>> choose(rows, 80.0, 2.0), choose(rows, 80.0, 1.0), choose(rows, 95.0, 1.0)
    (1, 0, 0)
    """
    ok = [i for i, r in enumerate(rows) if r["accuracy"] >= base_accuracy - tolerance - 1e-9]
    if ok:
        return min(ok, key=lambda i: (rows[i]["mean_tokens"], -rows[i]["accuracy"]))
    return max(range(len(rows)), key=lambda i: (rows[i]["accuracy"], -rows[i]["mean_tokens"]))


PAPER = (0.25, 0.7)  # DLER section 4.6's hand-picked density and scale, marked in the outputs


def _label(density: float, scale: float) -> str:
    return f"d{density:g}_s{scale:g}" + (" (paper)" if (density, scale) == PAPER else "")


@dataclass
class SweepConfig:
    """Settings of a merge sweep (every field is also a CLI flag and a recipe key)."""

    base: str = arg(help="base model: local folder or Hub id")
    tuned: str = arg(help="concise (RL-tuned) model or LoRA adapter: folder or Hub id")
    data: str = arg(help="evaluation problems (file, datasets folder or preset)")
    out: str = arg(help="output folder: sweep.md, sweep.json, pareto.png, best/")
    densities: list[float] = arg(
        [0.1, 0.25, 0.5], "densities (fraction of |delta| kept), e.g. --densities 0.1 0.25 0.5"
    )
    scales: list[float] = arg([0.5, 0.7, 1.0], "scales on the kept delta, e.g. --scales 0.5 0.7")
    scope: Literal["tensor", "global"] = arg(
        "tensor", "top-k per tensor or over the whole model (default %(default)s)"
    )
    exclude: list[str] = arg(
        [],
        "regexes of tensors kept from the base (repeating --exclude adds more)",
        action="extend",
        metavar="REGEX",
    )
    tolerance: float = arg(
        1.0, "accuracy points below the base still counted as 'base accuracy' (default %(default)s)"
    )
    eval_config: str | None = arg(
        None, "evals.run YAML (e.g. configs/evals/testbed.yaml) for every evaluation"
    )
    grader: str | None = arg(None, "grader name (overrides the eval config)")
    samples: int | None = arg(None, "samples per problem (overrides the eval config)")
    limit: int | None = arg(None, "evaluate on the first N problems only")
    max_new_tokens: int | None = arg(None, "generation limit (overrides the eval config)")
    keep_merges: bool = arg(False, "keep every grid point's merged weights under OUT.work/")
    force: bool = arg(False, "replace an existing --out")


def merge_key(cfg: SweepConfig) -> str:
    """A short key of the merge settings that a grid point's folder name (``d0.25_s0.7``)
    does not show: a rerun with another ``--scope``, ``--exclude`` or pair of models does
    not reuse the merges and evaluations of this one under ``OUT.work/``."""
    settings = {"base": cfg.base, "tuned": cfg.tuned, "scope": cfg.scope, "exclude": cfg.exclude}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def parse_args(argv: Sequence[str] | None = None) -> tuple[SweepConfig, HubArguments]:
    """``[--config recipe.yaml] [--flags]`` -> the sweep's settings and the publishing of
    its chosen merge (``--push_to_hub`` uploads ``OUT/best``)."""
    return cli.parse_args(
        [SweepConfig, HubArguments], argv, prog="merge.sweep", description=__doc__
    )


def main(argv: Sequence[str] | None = None) -> int:
    a, hub = parse_args(argv)
    densities, scales = list(a.densities), list(a.scales)
    for name, values in (("densities", densities), ("scales", scales)):
        if not values:
            raise ShortcotError(f"--{name} is empty; give e.g. --{name} 0.25 0.5")
    if any(not 0 < d <= 1 for d in densities):
        raise ShortcotError(f"densities {densities} must lie in (0, 1]")
    repo = hub.hub_repo()  # a missing repo id fails here, before any evaluation
    out = check_output(a.out, a.force)
    work = out.parent / f"{out.name}.work"

    def eval_cfg(model: str, name: str):
        argv = ["--model", model, "--data", a.data, "--out", str(work / "eval" / name)]
        if a.eval_config:
            argv = ["--config", a.eval_config, *argv]
        for flag, value in (
            ("--grader", a.grader),
            ("--samples", a.samples),
            ("--limit", a.limit),
            ("--max-new-tokens", a.max_new_tokens),
        ):
            if value is not None:
                argv += [flag, str(value)]
        cfg, _ = parse_eval_args(argv)
        cfg.progress = False
        return cfg

    def merge_cfg(density: float, scale: float, dest: Path, force: bool = False) -> MergeConfig:
        return MergeConfig(
            base=a.base,
            tuned=a.tuned,
            out=str(dest),
            density=density,
            scale=scale,
            scope=a.scope,
            exclude=list(a.exclude),
            force=force,
        )

    grid = [(d, s) for d in densities for s in scales]
    key = merge_key(a)
    labels = ["base", "tuned"] + [_label(d, s) for d, s in grid]
    summaries = {}
    bar = tqdm(total=len(labels), desc="sweep", unit="model")
    for name, model in (("base", a.base), ("tuned", a.tuned)):
        summaries[name] = evaluate(eval_cfg(model, name))
        bar.update()
    for d, s in grid:
        name = _label(d, s)
        folder = f"d{d:g}_s{s:g}-{key}"
        done = work / "eval" / folder / "summary.json"
        # reuse a grid point only if it was evaluated on the same problems x samples as the
        # base now (a rerun with a larger --limit grows every point, not just base/tuned)
        same = done.exists() and all(
            json.loads(done.read_text()).get(k) == summaries["base"].get(k)
            for k in ("n_problems", "samples_per_problem")
        )
        if same:
            summaries[name] = json.loads(done.read_text())
        else:
            merged = work / "merges" / folder
            if not (merged / "config.json").exists():
                merge_models(merge_cfg(d, s, merged, force=merged.exists()))
            summaries[name] = evaluate(eval_cfg(str(merged), folder))
            if not a.keep_merges:
                shutil.rmtree(merged, ignore_errors=True)
        bar.set_postfix_str(f"{name}: acc {100 * summaries[name]['accuracy']:.1f}%")
        bar.update()
    bar.close()

    rows = comparison_rows([summaries[n] for n in labels], labels)
    merge_rows = rows[2:]
    best = choose(merge_rows, rows[0]["accuracy"], a.tolerance)
    bd, bs = grid[best]
    with atomic_output_dir(out, force=a.force) as tmp:
        table = markdown_table(rows)
        by_level = difficulty_table([summaries[n] for n in labels], labels)
        (tmp / "sweep.md").write_text(
            f"# Merge sweep\n\n{table}\nChosen: density {bd:g}, scale {bs:g} "
            f"(fewest tokens within {a.tolerance:g} points of the base's accuracy).\n"
            + (
                f"\nBy difficulty (accuracy ± s.e. / mean tokens):\n\n{by_level}"
                if by_level
                else ""
            )
        )
        (tmp / "sweep.json").write_text(
            json.dumps(
                {
                    "rows": rows,
                    "chosen": {"density": bd, "scale": bs, "label": _label(bd, bs)},
                    "tolerance": a.tolerance,
                    "scope": a.scope,
                    "base": a.base,
                    "tuned": a.tuned,
                    "data": a.data,
                },
                indent=2,
            )
        )
        plot_pareto(
            rows,
            tmp / "pareto.png",
            title="Merge sweep: accuracy vs tokens",
            marked={_label(*PAPER)},
        )
        merge_models(merge_cfg(bd, bs, tmp / "best"))
    print(table)
    print(f"chosen: density {bd:g}, scale {bs:g} -> {out / 'best'}")
    if repo:
        url = push_folder(
            out / "best",
            repo,
            private=hub.hub_private_repo,
            commit_message=f"Magnitude-selective merge (density {bd:g}, scale {bs:g}), chosen "
            "by merge.sweep",
        )
        print(f"uploaded to {url}")
    return 0


if __name__ == "__main__":
    run_cli(main)
