"""RL steps per second: plain TRL ``GRPOTrainer`` against `train.trainer.ShortcotGRPOTrainer`,
whose rollouts drop finished rows (`train.rollouts`), side by side.

    python benchmarks/rl_rollouts.py --model runs/testbed/model --data runs/testbed/data/train.jsonl

Both trainers get the same GRPOConfig (the testbed recipes' batch: 8 prompts x 8 rollouts,
``max_completion_length`` 48, temperature 1), model, data and reward (minus the completion
length in tokens, so that the reward needs no grader). The subclass runs with
``advantage="grpo"`` (TRL's own advantage), so the only difference is how rollouts are
generated: the two train on the same samples to the same weights, which the script checks
(``identical weights``) as well as timing.

Each trainer trains ``--steps`` steps ``--repeats`` times, interleaved (trl, shortcot, trl,
...) so that load from other processes hits both alike. Reported: the median of TRL's own
per-step ``step_time`` (the first step of each run dropped as warm-up) as steps per second,
and the median time per step spent in ``_generate_single_turn`` (the rollouts), where the
two differ. ``--out`` writes the figures as JSON.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from artifacts.cli import arg, parse_args  # noqa: E402

VARIANTS = ("trl", "shortcot")


@dataclass
class RolloutBenchConfig:
    model: str = arg("runs/testbed/model", "HF model folder (or Hub id)")
    data: str = arg("runs/testbed/data/train.jsonl", "problems (.jsonl with problem / answer)")
    steps: int = arg(6, "optimizer steps per run (the first is dropped as warm-up)")
    repeats: int = arg(3, "interleaved runs per trainer")
    prompts: int = arg(8, "prompts per step")
    num_generations: int = arg(8, "rollouts per prompt")
    max_completion_length: int = arg(48, "generation limit in tokens (the testbed recipes' L_T)")
    temperature: float = arg(1.0, "sampling temperature of the rollouts")
    learning_rate: float = arg(5e-5, "learning rate (the testbed recipes')")
    evict_every: int = arg(16, "shortcot: finished rows leave the batch every N tokens")
    threads: int = arg(1, "torch CPU threads (1 is fastest on a shared CPU)")
    out: str | None = arg(None, "write the results as JSON here")


def _length_reward(completion_ids, **kwargs):
    return [-float(len(ids)) for ids in completion_ids]


def _digest(model) -> str:
    """A hash of the weights, bit for bit."""
    import torch

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def run_variant(variant: str, cfg: RolloutBenchConfig, workdir: Path) -> dict:
    """Train one run; its per-step times, rollout times and final weights' digest."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from evals.data import load_problems
    from evals.prompts import build_messages
    from train.trainer import ShortcotGRPOTrainer

    tok = AutoTokenizer.from_pretrained(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
    problems = load_problems(cfg.data, limit=cfg.prompts * cfg.steps)
    rows = [{"prompt": build_messages(p.problem), "answer": str(p.answer)} for p in problems]
    args = GRPOConfig(
        output_dir=str(workdir),
        num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.prompts * cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        max_steps=cfg.steps,
        learning_rate=cfg.learning_rate,
        temperature=cfg.temperature,
        top_p=1.0,
        loss_type="dapo",
        epsilon_high=0.28,
        beta=0.0,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
    )
    common = dict(
        model=model,
        reward_funcs=[_length_reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    if variant == "trl":
        trainer = GRPOTrainer(**common)
    else:
        trainer = ShortcotGRPOTrainer(**common, advantage="grpo")
        trainer.rollout_evict_every = cfg.evict_every
    # time the rollouts: the base method is the one both variants run (ours wraps it)
    inner = GRPOTrainer._generate_single_turn
    rollout: list[float] = []

    def timed(self, *a, **kw):
        t = time.perf_counter()
        out = inner(self, *a, **kw)
        rollout.append(time.perf_counter() - t)
        return out

    trainer.remove_callback(PrinterCallback)  # the per-step log lines
    GRPOTrainer._generate_single_turn = timed
    try:
        trainer.train()
    finally:
        GRPOTrainer._generate_single_turn = inner
    hist = trainer.state.log_history
    return {
        "step_s": [h["step_time"] for h in hist if "step_time" in h][1:],
        "rollout_s": rollout[1:],
        "digest": _digest(trainer.model),
    }


def main(argv=None) -> int:
    (cfg,) = parse_args(
        [RolloutBenchConfig],
        argv,
        prog="benchmarks.rl_rollouts",
        description=__doc__.split("\n\n")[0],
    )
    import torch

    torch.set_num_threads(cfg.threads)
    step_s: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rollout_s: dict[str, list[float]] = {v: [] for v in VARIANTS}
    digests: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(cfg.repeats):
            for v in VARIANTS:
                res = run_variant(v, cfg, Path(tmp) / f"{v}-{r}")
                step_s[v] += res["step_s"]
                rollout_s[v] += res["rollout_s"]
                digests.add(res["digest"])
    base = statistics.median(step_s["trl"])
    result: dict = {"identical_weights": len(digests) == 1, "config": vars(cfg)}
    print(
        f"{cfg.prompts} prompts x {cfg.num_generations} rollouts, <= {cfg.max_completion_length} "
        f"tokens, {cfg.repeats} interleaved runs x {cfg.steps - 1} timed steps, "
        f"{cfg.threads} thread(s)"
    )
    print("| trainer | steps / s | vs plain TRL | rollout s / step | step s |")
    print("|---|---|---|---|---|")
    for v in VARIANTS:
        med, gen = statistics.median(step_s[v]), statistics.median(rollout_s[v])
        result[v] = {"steps_per_s": 1 / med, "median_step_s": med, "median_rollout_s": gen}
        result[v]["speedup"] = base / med
        print(f"| {v} | {1 / med:.3f} | {base / med:.2f}x | {gen:.3f} | {med:.3f} |")
    print(f"identical weights after training: {result['identical_weights']}")
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=1))
    return 0 if result["identical_weights"] else 1


if __name__ == "__main__":
    sys.exit(main())
