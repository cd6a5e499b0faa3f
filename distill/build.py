"""Build a compressed-CoT dataset: ``python -m distill.build --teacher M --data D --out DIR``.

    # sample 8 chains per problem from a model, keep the shortest correct, cut it at its
    # first correct solution (keeping one verification), save as a datasets folder
    python -m distill.build --teacher runs/testbed/model --data runs/testbed/data/train.jsonl \\
        --grader testbed --samples 8 --strategy shortest-correct,first-correct \\
        --keep_verification --out runs/distill/data

    # compress traces that already exist (a JSONL of id/problem/answer/completion records,
    # e.g. the work folder's samples.jsonl or evals.run's samples.jsonl)
    python -m distill.build --teacher runs/distill/data.work/samples.jsonl \\
        --strategy step-prune --format jsonl --out runs/distill/pruned

    # a recipe (its keys are the flags' names); flags given after it win
    python -m distill.build --config configs/distill/build_testbed.yaml --out runs/distill/data

The flow (docs/algorithms.md §4), three steps with plain data between them:

1. sample (`distill.teacher.sample`): N traces per problem from the teacher, sampled by the
   evaluation's engine (`evals.run.evaluate`) into ``--work_dir``, an ``evals.run`` folder
   that resumes, or read from a trace file; records that cannot be parsed are skipped and
   counted.
2. compress (`distill.compress.compress`): grade the traces with the shared grader under the
   answer contract (only finished, formatted, correct traces enter; a trace that never
   closes its think block has no answer), apply the strategies of `distill.strategies` in
   the order given, re-verify; the kept chains as chat-format rows, and every drop's reason.
3. save (`distill.dataset.save_dataset`): the dataset folder, its card, ``summary.json`` /
   ``summary.md``; then the Hub upload (``--push_to_hub --hub_model_id user/name``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from artifacts.cli import HubArguments
from artifacts.cli import parse_args as parse_cli
from artifacts.errors import ShortcotError, run_cli
from artifacts.outdir import check_output
from distill.answers import get_detector
from distill.build_config import BuildConfig
from distill.compress import StrategyOptions, compress, parse_pipeline
from distill.dataset import FORMATS, save_dataset
from distill.teacher import sample
from evals.backends import EngineOptions
from evals.grading import PROMPT_OPENS_THINK, get_grader


def check(cfg: BuildConfig, hub: HubArguments) -> None:
    """Fail on settings that cannot work before hours of sampling, not after."""
    parse_pipeline(cfg.strategy)
    if cfg.format not in FORMATS:
        raise ShortcotError(f"unknown --format {cfg.format!r}; use one of {', '.join(FORMATS)}")
    if cfg.prune_scorer not in ("rules", "perplexity"):
        raise ShortcotError(f"unknown --prune-scorer {cfg.prune_scorer!r}; use rules or perplexity")
    if cfg.prompt_opens_think not in PROMPT_OPENS_THINK:
        raise ShortcotError(
            f"--prompt-opens-think must be auto, yes or no, got {cfg.prompt_opens_think!r}"
        )
    check_output(cfg.out, cfg.force)
    EngineOptions.from_config(cfg).validate(cfg.backend)
    get_grader(cfg.grader)
    get_detector(cfg.detector)
    teacher_path = Path(cfg.teacher).expanduser()
    if teacher_path.suffix == ".jsonl" and not teacher_path.exists():
        raise ShortcotError(f"trace file {teacher_path} does not exist; check the --teacher path")
    hub.hub_repo()


def build(
    cfg: BuildConfig, options: StrategyOptions | None = None, hub: HubArguments | None = None
) -> dict:
    """Run the whole build (sample, compress, save, publish); returns the summary (also
    written to ``out/summary.json``)."""
    options = options or StrategyOptions()
    hub = hub or HubArguments()
    check(cfg, hub)
    samples = sample(cfg)
    dataset = compress(cfg, options, samples)
    # the settings as a recipe: the flags' names, so build_config.json is a valid --config
    recipe = {**asdict(cfg), **asdict(options), **asdict(hub)}
    recipe.pop("force")
    save_dataset(
        cfg.out, dataset.rows, dataset.summary, fmt=cfg.format, force=cfg.force,
        teacher=cfg.teacher, recipe=recipe,
    )  # fmt: skip
    if samples.work_dir is not None:
        print(f"raw samples kept in {samples.work_dir / 'samples.jsonl'} (reusable as --teacher)")
    print(f"wrote {len(dataset.rows)} examples to {cfg.out}")
    repo = hub.hub_repo()
    if repo:
        from artifacts.hub import push_folder

        url = push_folder(cfg.out, repo, private=hub.hub_private_repo, repo_type="dataset")
        print(f"pushed to {url}")
    return dataset.summary


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[BuildConfig, StrategyOptions, HubArguments]:
    """The command line (and its ``--config`` recipe) as (settings, strategy options, Hub)."""
    cfg, options, hub = parse_cli(
        [BuildConfig, StrategyOptions, HubArguments],
        argv,
        prog="distill.build",
        description="Build a compressed chain-of-thought dataset (chat format, for SFT) from a "
        "teacher model's samples or from existing traces.",
        epilog=__doc__.split("\n\n", 1)[1],
    )
    cfg.validate()
    options.validate()
    return cfg, options, hub


def main(argv: Sequence[str] | None = None) -> int:
    build(*parse_args(argv))
    return 0


if __name__ == "__main__":
    run_cli(main)
