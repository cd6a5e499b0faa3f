"""Compressed-CoT distillation on the CPU testbed: the table in docs/results.md.

    python experiments/distill_testbed.py                       # runs/testbed -> runs/distill_testbed
    python experiments/distill_testbed.py --train_limit 64 --test_limit 32 --testbed /tmp/tb_tiny

1. `distill.build`: sample ``--samples`` chains per training problem from the testbed
   model itself, keep the shortest correct, cut it at the first correct solution and
   prune redundant re-checks (``--strategy``; answer detector ``testbed``).
2. `distill.sft`: fine-tune the testbed model on that dataset (full fine-tuning).
3. `evals.run.evaluate`: base and distilled model on the test split (grader ``testbed``),
   and optionally extra models (``--extra NAME=PATH ...``, e.g. the DLER model) and a control
   fine-tuned on the same problems' uncompressed correct chains (``--control``), which
   separates the effect of compression from that of one more round of SFT.
4. ``OUT/results.md`` / ``results.json``: accuracy (with its standard error), mean
   tokens, and the change against the base.

Every stage is skipped when its output exists (and evaluation resumes), so a rerun
continues where an interrupted one stopped. Keeps to the 2 shared CPU cores: torch uses
``--threads`` threads.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import run_cli  # noqa: E402
from distill.build import BuildConfig, build  # noqa: E402
from distill.compress import StrategyOptions  # noqa: E402
from distill.sft import train  # noqa: E402
from distill.sft_config import DistillArguments, DistillSFTConfig, StudentConfig  # noqa: E402
from evals.run import EvalConfig, evaluate  # noqa: E402


def stage(name: str, out: Path, fn):
    if out.exists():
        print(f"[{name}] {out} exists, skipped")
        return None
    t0 = time.time()
    print(f"[{name}] ...")
    res = fn()
    print(f"[{name}] done in {time.time() - t0:.0f} s")
    return res


@dataclass
class DistillTestbedArguments:
    """The experiment's settings."""

    testbed: str = arg("runs/testbed", "testbed build folder (model/, data/)")
    out: str = arg("runs/distill_testbed", "where datasets, models, evals and results go")
    strategy: str = arg("shortest-correct,first-correct,step-prune", "distill.build pipeline")
    keep_verification: bool = arg(False, "first-correct keeps one verification round")
    train_limit: int = arg(128, "training problems to sample from")
    samples: int = arg(4, "chains sampled per training problem")
    test_limit: int = arg(256, "test problems")
    eval_samples: int = arg(2, "samples per test problem")
    max_new_tokens: int = arg(448, "generation cap (the testbed model has 512 positions)")
    batch_size: int = arg(512, "generation batch size (512 is fastest per sequence on CPU)")
    lr: float = arg(5e-4, "SFT learning rate")
    epochs: float = arg(4.0, "SFT epochs")
    sft_batch_size: int = arg(16, "SFT batch size")
    control: bool = arg(False, "also fine-tune on uncompressed correct chains")
    extra: list[str] = arg([], "more models to evaluate", metavar="NAME=PATH")
    threads: int = arg(2, "torch CPU threads")
    teacher_traces: int | None = arg(
        None,
        "instead of the model experiment: compare the strategies on N problems x --samples "
        "traces of the testbed's long-chain teacher (no model needed; seconds)",
        metavar="N",
    )
    tokenizer: str | None = arg(
        None, "with --teacher_traces: tokenizer for token counts (default: the testbed model's)"
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[DistillTestbedArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [DistillTestbedArguments], argv, prog="experiments.distill_testbed", description=__doc__
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)
    if args.teacher_traces:
        tok = args.tokenizer or str(Path(args.testbed) / "model")
        table = strategy_table(args.teacher_traces, args.samples, tok)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "strategies.md").write_text(table + "\n")
        print(table)
        return 0

    import torch

    torch.set_num_threads(args.threads)
    tb, out = Path(args.testbed), Path(args.out)
    model = tb / "model"
    if not (model / "config.json").exists():
        print(
            f"error: no testbed model at {model}; build it with python -m testbed.build --out {tb}",
            file=sys.stderr,
        )
        return 2
    train_data, test_data = tb / "data" / "train.jsonl", tb / "data" / "test.jsonl"
    out.mkdir(parents=True, exist_ok=True)

    def build_cfg(strategy: str, dest: Path) -> BuildConfig:
        return BuildConfig(
            teacher=str(model), data=str(train_data), out=str(dest), strategy=strategy, grader="testbed",
            detector="testbed", samples=args.samples, max_new_tokens=args.max_new_tokens, limit=args.train_limit,
            batch_size=args.batch_size, work_dir=str(out / "samples"),
        )  # fmt: skip

    options = StrategyOptions(keep_verification=args.keep_verification)

    stage(
        "build compressed dataset",
        out / "data",
        lambda: build(build_cfg(args.strategy, out / "data"), options),
    )
    datasets_ = {"compressed": out / "data"}
    if args.control:
        # The same samples (same work folder), one correct chain per problem, uncompressed.
        ctrl = build_cfg("any-correct", out / "data_control")
        stage("build control dataset", out / "data_control", lambda: build(ctrl, options))
        datasets_["control"] = out / "data_control"

    for name, data in datasets_.items():
        recipe = (
            DistillArguments(data=str(data)),
            DistillSFTConfig(
                output_dir=str(out / f"sft_{name}"), learning_rate=args.lr, num_train_epochs=args.epochs,
                per_device_train_batch_size=args.sft_batch_size, max_length=512, warmup_steps=0.05,
                save_steps=100, logging_steps=10, seed=0,
            ),
            StudentConfig(model_name_or_path=str(model)),
        )  # fmt: skip
        stage(f"sft on {name}", out / f"sft_{name}", lambda r=recipe: train(*r))

    models = {"base": model, "sft-compressed": out / "sft_compressed"}
    if args.control:
        models["sft-uncompressed (control)"] = out / "sft_control"
    for item in args.extra:
        name, _, path = item.partition("=")
        models[name] = Path(path)
    summaries = {}
    for name, m in models.items():
        slug = name.split(" ")[0]
        cfg = EvalConfig(
            model=str(m), data=str(test_data), out=str(out / "eval" / slug), grader="testbed",
            samples=args.eval_samples, limit=args.test_limit, max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size, progress=True,
        )  # fmt: skip
        print(f"[eval {name}] ...")
        summaries[name] = evaluate(cfg)

    ds_summary = json.loads((out / "data" / "summary.json").read_text())
    table = results_table(summaries, ds_summary, args)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {"settings": asdict(args), "dataset": ds_summary, "eval": summaries},
            indent=2,
            default=str,
        )
    )
    print(table)
    return 0


def strategy_table(n: int, samples: int, tokenizer_path: str, seed: int = 0) -> str:
    """Each strategy on the testbed teacher's traces: tokens kept, and whether the kept traces
    still sum every term and keep every check that fixed an error (`testbed.teacher.audit_trace`,
    the testbed's own auditor)."""
    import random

    from transformers import AutoTokenizer

    from distill.answers import bind_detector, get_detector
    from distill.compress import make_strategy, run_pipeline
    from distill.steps import split_completion
    from distill.strategies import Context, Trace
    from evals.grading import get_grader
    from testbed.task import minimal_trace, sample_problem
    from testbed.teacher import audit_trace, teacher_completion

    tok = AutoTokenizer.from_pretrained(tokenizer_path)

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    rng = random.Random(seed)
    problems = [sample_problem(rng, rng.randint(2, 9)) for _ in range(n)]
    traces = [[teacher_completion(p, rng) for _ in range(samples)] for p in problems]
    grade, det = get_grader("testbed"), get_detector("testbed")
    pipelines = {
        "any-correct (uncompressed)": ["any-correct"],
        "shortest-correct": ["shortest-correct"],
        "first-correct": ["first-correct"],
        "first-correct + verification": ["first-correct"],
        "step-prune": ["step-prune"],
        "any-correct,first-correct,step-prune": ["any-correct", "first-correct", "step-prune"],
        "shortest-correct,first-correct,step-prune": [
            "shortest-correct",
            "first-correct",
            "step-prune",
        ],
    }
    all_mean = sum(count(t) for ts in traces for t in ts) / (n * samples)
    lines = [
        f"| strategy (testbed teacher, {n} problems x {samples} traces) | mean tokens kept | vs all traces "
        "| traces still complete | error fixes kept |",
        "|---|---|---|---|---|",
    ]
    for name, pipe in pipelines.items():
        opts = StrategyOptions(keep_verification="verification" in name)
        strategies = [(s, make_strategy(s, opts)) for s in pipe]
        kept, complete, fixes, fixes_before = [], 0, 0, 0
        for p, ts in zip(problems, traces):
            ctx = Context(str(p.answer), grade, count, bind_detector(det, p.text))
            raw = [Trace(t, count(t), count(t), True, k) for k, t in enumerate(ts)]
            res = run_pipeline(raw, ctx, strategies)
            for t in res.kept:
                kept.append(t.num_tokens)
                a = audit_trace(p, split_completion(t.text).thinking)
                src = audit_trace(p, split_completion(ts[t.sample]).thinking)
                complete += a.complete
                fixes += a.caught
                fixes_before += src.caught
        mean = sum(kept) / len(kept)
        lines.append(
            f"| {name} | {mean:.1f} | {mean / all_mean - 1:+.1%} | {complete / len(kept):.1%} "
            f"| {fixes}/{fixes_before} |"
        )
    floor = sum(count(minimal_trace(p)) for p in problems) / n
    lines.append(
        f"| (minimal correct trace, the floor) | {floor:.1f} | {floor / all_mean - 1:+.1%} | 100.0% | - |"
    )
    return "\n".join(lines)


def results_table(summaries: dict, ds: dict, args) -> str:
    base = summaries["base"]
    lines = [
        "| model | accuracy (%) | mean tokens | tokens vs base | accuracy vs base (points) | truncated (%) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        acc, se = 100 * s["accuracy"], 100 * s["accuracy_se"]
        dt = s["mean_tokens"] / base["mean_tokens"] - 1
        da = 100 * (s["accuracy"] - base["accuracy"])
        change = "-" if name == "base" else f"{dt:+.1%}"
        dacc = "-" if name == "base" else f"{da:+.1f}"
        trunc = 100 * s["truncation_rate"]
        lines.append(
            f"| {name} | {acc:.1f} ± {se:.1f} | {s['mean_tokens']:.1f} | {change} | {dacc} | {trunc:.1f} |"
        )
    lines += [
        "",
        f"Test split: {base['n_problems']} problems x {args.eval_samples} samples, temperature 0.6, top_p 0.95, "
        f"max {args.max_new_tokens} new tokens; accuracy ± its standard error.",
        f"Distillation data: {ds['examples']} examples from {ds['problems']} training problems x {args.samples} "
        f"samples of the base model (strategy `{ds['strategy']}`); mean tokens {ds['mean_tokens_all_samples']:.1f} "
        f"(all samples) -> {ds['mean_compressed_tokens']:.1f} (kept, compressed); compression ratio "
        f"{ds['compression_ratio']:.3f} against each kept chain's own original.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)
