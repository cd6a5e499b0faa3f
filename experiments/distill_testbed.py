"""Compressed-CoT distillation on the CPU testbed: the README table.

    python experiments/distill_testbed.py                       # runs/testbed -> runs/distill_testbed
    python experiments/distill_testbed.py --train-limit 64 --test-limit 32 --testbed /tmp/tb_tiny

1. `distill.build`: sample ``--samples`` chains per training problem from the testbed
   model itself, keep the shortest correct, cut it at the first correct solution and
   prune redundant re-checks (``--strategy``; answer detector ``testbed``).
2. `distill.sft`: fine-tune the testbed model on that dataset (full fine-tuning).
3. `evals.run.evaluate`: base and distilled model on the test split (grader ``testbed``),
   and optionally extra models (``--extra NAME=PATH``, e.g. the DLER model) and a control
   fine-tuned on the same problems' uncompressed correct chains (``--control``), which
   separates the effect of compression from that of one more round of SFT.
4. ``OUT/results.md`` / ``results.json``: accuracy (with its standard error), mean
   tokens, and the change against the base.

Every stage is skipped when its output exists (and evaluation resumes), so a rerun
continues where an interrupted one stopped. Keeps to the 2 shared CPU cores: torch uses
``--threads`` threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--testbed", default="runs/testbed", help="testbed build folder (model/, data/)")
    p.add_argument(
        "--out", default="runs/distill_testbed", help="where datasets, models, evals and results go"
    )
    p.add_argument(
        "--strategy",
        default="shortest-correct,first-correct,step-prune",
        help="distill.build pipeline",
    )
    p.add_argument(
        "--keep-verification",
        action="store_true",
        help="first-correct keeps one verification round",
    )
    p.add_argument("--train-limit", type=int, default=128, help="training problems to sample from")
    p.add_argument("--samples", type=int, default=4, help="chains sampled per training problem")
    p.add_argument("--test-limit", type=int, default=256, help="test problems")
    p.add_argument("--eval-samples", type=int, default=2, help="samples per test problem")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=448,
        help="generation cap (the testbed model has 512 positions)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=512,
        help="generation batch size (512 is fastest per sequence on CPU)",
    )
    p.add_argument("--lr", type=float, default=5e-4, help="SFT learning rate")
    p.add_argument("--epochs", type=float, default=4.0, help="SFT epochs")
    p.add_argument("--sft-batch-size", type=int, default=16, help="SFT batch size")
    p.add_argument(
        "--control", action="store_true", help="also fine-tune on uncompressed correct chains"
    )
    p.add_argument(
        "--extra", action="append", default=[], metavar="NAME=PATH", help="more models to evaluate"
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--teacher-traces",
        type=int,
        metavar="N",
        help="instead of the model experiment: compare the strategies on N problems x --samples "
        "traces of the testbed's long-chain teacher (no model needed; seconds)",
    )
    p.add_argument(
        "--tokenizer",
        help="with --teacher-traces: tokenizer for token counts (default: the testbed model's)",
    )
    args = p.parse_args(argv)
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
            {"settings": vars(args), "dataset": ds_summary, "eval": summaries},
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
    sys.exit(main())
