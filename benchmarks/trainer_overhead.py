"""Step time of `train.trainer.ShortcotGRPOTrainer` against plain TRL ``GRPOTrainer``.

    python benchmarks/trainer_overhead.py --model runs/testbed/model --data runs/testbed/data/train.jsonl

Both trainers get the same GRPOConfig, model, data and reward function (`LengthReward`,
truncation). Compared:

* ``trl``: plain ``GRPOTrainer`` (GRPO advantage);
* ``dler``: the subclass with the DLER advantage (what DLER adds per step: capturing the
  rewards, one 3-number all-reduce and the whitening);
* ``dler+ds``: the subclass with dynamic sampling too; its extra generation rounds are work,
  not overhead, so it is reported with its rounds per step.

Each variant trains ``--steps`` steps ``--repeats`` times, interleaved (trl, dler, dler+ds,
trl, ...) so that load from other processes hits them alike; the figure is the median of
TRL's own per-step ``step_time`` (first step of each run dropped as warm-up). On a shared
CPU that end-to-end figure is noisy, so the script also times the subclass's own code
directly ("own code": its ``_generate_and_score_completions`` minus the TRL call inside it,
i.e. reward capture, the DLER advantage, the all-reduce and, with dynamic sampling, the batch
assembly). Goal: the DLER additions cost under 10%.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import run_cli  # noqa: E402


def run_variant(variant: str, args, workdir: Path) -> tuple[list[float], float | None, list[float]]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from train.config import RLConfig
    from train.length_reward import LengthReward, RewardConfig
    from train.rl import prompt_rows
    from train.trainer import ShortcotGRPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    cfg = RLConfig(data=args.data, output_dir=str(workdir / "unused"), limit=512)
    rows = prompt_rows(cfg, args.data, 512)
    eos = model.generation_config.eos_token_id
    reward = LengthReward(
        RewardConfig(
            reward_method="truncation", grader=args.grader, target_length=args.max_completion_length
        ),
        eos_token_ids=[eos] if isinstance(eos, int) else list(eos),
    )
    gargs = GRPOConfig(
        output_dir=str(workdir / variant),
        num_generations=args.num_generations,
        per_device_train_batch_size=args.batch,
        max_completion_length=args.max_completion_length,
        max_steps=args.steps,
        learning_rate=5e-5,
        loss_type="dapo",
        epsilon_high=0.28,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        bf16=False,
        seed=0,
        disable_tqdm=True,
    )
    common = dict(
        model=model,
        reward_funcs=[reward],
        args=gargs,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    added: list[float] = []  # seconds per step spent in the subclass's own code
    if variant == "trl":
        trainer = GRPOTrainer(**common)
        trainer.train()
    else:
        trainer = ShortcotGRPOTrainer(
            **common,
            advantage="dler",
            dynamic_sampling=variant == "dler+ds",
            max_extra_rounds=4,
            length_reward=reward,
        )
        # time the subclass's method around TRL's (inner) one: the difference is what DLER adds
        inner_fn, outer_fn = (
            GRPOTrainer._generate_and_score_completions,
            ShortcotGRPOTrainer._generate_and_score_completions,
        )
        inner: list[float] = []

        def timed_inner(self, inputs):
            t = time.perf_counter()
            out = inner_fn(self, inputs)
            inner.append(time.perf_counter() - t)
            return out

        def timed_outer(self, inputs):
            n = len(inner)
            t = time.perf_counter()
            out = outer_fn(self, inputs)
            added.append(time.perf_counter() - t - sum(inner[n:]))
            return out

        GRPOTrainer._generate_and_score_completions = timed_inner
        ShortcotGRPOTrainer._generate_and_score_completions = timed_outer
        try:
            trainer.train()
        finally:
            GRPOTrainer._generate_and_score_completions = inner_fn
            ShortcotGRPOTrainer._generate_and_score_completions = outer_fn
    hist = trainer.state.log_history
    times = [h["step_time"] for h in hist if "step_time" in h][1:]
    rounds = [h["dynamic_sampling/rounds"] for h in hist if "dynamic_sampling/rounds" in h]
    return times, (statistics.mean(rounds) if rounds else None), added[1:]


@dataclass
class TrainerOverheadArguments:
    """The benchmark's settings."""

    model: str = arg("runs/testbed/model", "HF model folder")
    data: str = arg("runs/testbed/data/train.jsonl", "problems (.jsonl)")
    grader: str = arg("testbed", "grader name (math | testbed | module:function)")
    steps: int = arg(11, "steps per run (the first is dropped)")
    repeats: int = arg(3, "interleaved runs per variant")
    batch: int = arg(64, "completions per step")
    num_generations: int = arg(8, "rollouts per prompt")
    max_completion_length: int = arg(48, "generation limit (tokens)")
    threads: int = arg(1, "torch CPU threads (1 is fastest on a shared CPU)")
    out: str | None = arg(None, "write the results as JSON here")


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainerOverheadArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [TrainerOverheadArguments],
        argv,
        prog="benchmarks.trainer_overhead",
        description=__doc__.split("\n\n")[0],
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    variants = ["trl", "dler", "dler+ds"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    rounds: dict[str, list[float]] = {v: [] for v in variants}
    added: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for v in variants:
                t, rd, a = run_variant(v, args, Path(tmp) / f"{v}-{r}")
                times[v] += t
                added[v] += a
                if rd is not None:
                    rounds[v].append(rd)
    base = statistics.median(times["trl"])
    result = {}
    print(
        "| trainer | median step (s) | vs plain TRL | own code per step (ms) | own code / step | generation rounds / step |"
    )
    print("|---|---|---|---|---|---|")
    for v in variants:
        med = statistics.median(times[v])
        rd = statistics.mean(rounds[v]) if rounds[v] else 1.0
        own = statistics.median(added[v]) if added[v] else 0.0
        result[v] = {
            "median_step_s": med,
            "overhead_pct": 100 * (med / base - 1),
            "rounds": rd,
            "n": len(times[v]),
            "own_code_ms": 1000 * own,
            "own_code_pct": 100 * own / med,
        }
        print(
            f"| {v} | {med:.3f} | {100 * (med / base - 1):+.1f}% | {1000 * own:.1f} | {100 * own / med:.1f}% | {rd:.2f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    run_cli(main)
