"""What the testbed experiment scripts share: train a recipe, evaluate a model, aggregate seeds.

Every cached result is keyed by its settings, the way the pipeline keys its stages: a
trained model is reused only when the recipe file's content and the overrides are the
same (``OUT.settings.json`` beside it), and an evaluation is `evals.run`'s own resumable
folder, which refuses other generation settings and grows with ``--limit``. So a rerun
with other settings retrains / re-evaluates instead of mixing results.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from artifacts.outdir import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def require_testbed(path: str | Path) -> Path:
    """``path`` as a Path, or a one-line error saying how to build the testbed there."""
    from artifacts.errors import ShortcotError

    path = Path(path)
    if not (path / "model" / "config.json").exists():
        raise ShortcotError(
            f"no testbed at {path}; build it with python -m testbed.build --out {path}"
        )
    return path


def recipe_path(name: str) -> Path:
    """``configs/train/<name>.yaml`` of this checkout (or ``name`` itself if it is a file)."""
    p = Path(name)
    return p if p.suffix in (".yaml", ".yml") else ROOT / "configs" / "train" / f"{name}.yaml"


def _settings(recipe: Path, overrides: Sequence[str]) -> dict:
    return {
        "recipe": str(recipe.name),
        "recipe_sha256": hashlib.sha256(recipe.read_bytes()).hexdigest()[:16],
        "overrides": list(overrides),
    }


def train_run(recipe: str | Path, testbed: Path, out: Path, overrides: Sequence[str] = ()) -> dict:
    """Train ``recipe`` from ``testbed/model`` into ``out`` (an HF model folder); returns its
    training cost. ``overrides`` are ``key=value`` settings of ``train.rl`` (its flags'
    names). Reused only when made with the same recipe content and overrides; an
    interrupted run resumes from its checkpoints."""
    from train.rl import parse_args, train

    recipe = recipe_path(str(recipe))
    overrides = [
        f"model_name_or_path={testbed / 'model'}",
        f"data={testbed / 'data' / 'train.jsonl'}",
        f"output_dir={out}",
        *(
            [f"laser_d_monitor_data={testbed / 'data' / 'monitor.jsonl'}"]
            if "laser_d" in recipe.name  # laser_d and laser_de recipes
            else []
        ),
        *overrides,
    ]
    settings = _settings(recipe, overrides)
    settings_file = out.parent / f"{out.name}.settings.json"
    cost_file = out.parent / f"{out.name}.cost.json"
    if (
        (out / "config.json").exists()
        and cost_file.exists()
        and settings_file.exists()
        and json.loads(settings_file.read_text()) == settings
    ):
        return json.loads(cost_file.read_text())
    work = Path(f"{out}.work")
    if settings_file.exists() and json.loads(settings_file.read_text()) != settings:
        shutil.rmtree(work, ignore_errors=True)  # checkpoints of other settings: start over
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(settings_file, json.dumps(settings, indent=1))
    flags = [x for kv in overrides for x in ("--" + kv.split("=", 1)[0], kv.split("=", 1)[1])]
    resume = work.exists() and any(work.glob("checkpoint-*"))
    cfg, model_args = parse_args(
        ["--config", str(recipe), *flags, "--force", *(["--resume"] if resume else [])]
    )
    start = time.perf_counter()
    train(cfg, model_args)
    seconds = time.perf_counter() - start
    log = json.loads((out / "training_log.json").read_text())
    steps = [h for h in log if "reward" in h]

    def mean_of(key, first=None, last=None):
        rows = steps[:first] if first else steps[-last if last else 0 :]
        vals = [h[key] for h in rows if h.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    cost = {
        "train_seconds": round(seconds, 1),
        "steps": cfg.max_steps,
        "completions_per_step": cfg.per_device_train_batch_size,
        "filtered_fraction": mean_of("dynamic_sampling/filtered_fraction"),
        "first_step_filtered_fraction": mean_of("dynamic_sampling/filtered_fraction", first=1),
        "generation_rounds": mean_of("dynamic_sampling/rounds"),
        "first_steps_reward": mean_of("reward", first=5),
        "final_train_length": mean_of("completions/mean_length", last=10),
        "final_train_accuracy": mean_of("shortcot/accuracy", last=10),
        "laser_d_targets": {
            k.split("/")[-1]: v
            for h in log
            for k, v in h.items()
            if k.startswith("laser_d/target_")
        },
    }
    atomic_write_text(cost_file, json.dumps(cost, indent=1))
    return cost


def evaluate_model(
    model: Path,
    data: Path,
    out: Path,
    samples: int,
    limit: int | None,
    max_new_tokens: int = 320,
    batch_size: int = 128,
    temperature: float = 0.6,
    top_p: float = 0.95,
) -> dict:
    """`evals.run.evaluate` (the papers' T 0.6 / top-p 0.95 unless given) with the testbed grader. Resumable and
    settings-checked by evals.run itself: finished samples are reused (the model is loaded
    only when some are missing), and a folder made with other settings is refused."""
    from evals.run import EvalConfig, evaluate

    cfg = EvalConfig(
        model=str(model),
        data=str(data),
        out=str(out),
        grader="testbed",
        samples=samples,
        max_new_tokens=max_new_tokens,
        limit=limit,
        batch_size=batch_size,
        temperature=temperature,
        top_p=top_p,
        seed=0,
        progress=False,
    )
    return evaluate(cfg)


def level(summary: dict, difficulty: int | str, key: str = "accuracy") -> float | None:
    """One difficulty level's metric from an evaluation summary."""
    return (summary.get("by_difficulty") or {}).get(str(difficulty), {}).get(key)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error over seeds (sample std / sqrt(n); 0 for one value).

    >>> mean_se([1.0, 2.0, 3.0])
    (2.0, 0.5773502691896258)
    """
    values = list(values)
    if len(values) < 2:
        return (values[0], 0.0) if values else (math.nan, math.nan)
    return statistics.mean(values), statistics.stdev(values) / math.sqrt(len(values))
