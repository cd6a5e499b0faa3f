"""The configuration of ``python -m train.rl``: `RLConfig`, TRL's ``GRPOConfig`` extended
with shortcot's settings, and `ModelArguments`, TRL's ``ModelConfig`` (the model and LoRA).
Every field is a flag ``--name`` and a key of a ``--config`` recipe (``configs/train/``).

Every ``GRPOConfig`` field keeps its TRL name and meaning; the defaults that shortcot
changes are overridden below (each one's ``--help`` says so). Our own settings are flat
fields: the problems (`ProblemArguments`), the reward (`train.length_reward.RewardConfig`),
LASER-D's monitor (`LaserDArguments`), and the advantage, dynamic sampling and run folders
(`RLConfig`).

How the DLER / Laser optimiser settings map onto TRL 1.16 (docs/algorithms.md §1.3):

* clip-higher: ``epsilon`` (low, 0.2) and ``epsilon_high`` (0.28);
* dual-clip c = 10: TRL's ``delta`` caps the ratio at ``delta`` inside
  ``-min(r * A, clip(r) * A)``; for ``delta > 1 + epsilon_high`` this equals PPO dual-clip
  (Ye et al. 2020; veRL ``clip_ratio_c``) ``max(min(...), c * A)`` for A < 0, and changes
  nothing for A > 0 (there ``clip(r) <= 1 + epsilon_high < delta``), so no override is needed;
* token-mean loss: ``loss_type="dapo"`` (sum over the batch's tokens / number of tokens);
* KL: ``beta`` with TRL's k3 estimator (veRL's ``low_var_kl``, unclamped);
* entropy bonus: ``entropy_coef``.

Folders: ``output_dir`` (``--out``) is the final model folder, written atomically at the
end; the Trainer's checkpoints and logs go to ``work_dir`` (default ``<output_dir>.work``),
so the Trainer is given a copy of the config with ``output_dir = work_dir`` and
``push_to_hub`` off (`trainer_args`): shortcot uploads the final folder itself.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Literal

from transformers.trainer_utils import SchedulerType
from trl import GRPOConfig, ModelConfig

from artifacts.cli import arg, hub_repo
from artifacts.errors import ShortcotError
from evals.grading import PROMPT_OPENS_THINK
from evals.prompts import DEFAULT_PROMPT_TEMPLATE
from train.length_reward import RewardConfig

# Settings that may change when a run is resumed (``--resume``): where things go, how long it
# runs, how it logs, where it is published. Any other change makes the checkpoints another
# run's.
RESUMABLE_KEYS = (
    "output_dir",
    "work_dir",
    "max_steps",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "report_to",
    "run_name",
    "keep_checkpoints",
    "rollout_evict_every",  # the same samples either way (train.rollouts)
    "resume",
    "force",
    "push_to_hub",
    "hub_model_id",
    "hub_private_repo",
)


def world_size() -> int:
    """Training processes (``accelerate launch`` / torchrun set WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _ours(name: str, default: Any, why: str, **metadata) -> Any:
    """A ``GRPOConfig`` field with shortcot's default: TRL's help text, then ours."""
    parent = GRPOConfig.__dataclass_fields__[name].metadata
    meta = {k: v for k, v in parent.items() if k != "help"} | metadata
    note = f"shortcot default: {default!r}" + (f", {why}" if why else "")
    return arg(default, f"{parent.get('help', '')} [{note}]", **meta)


@dataclass
class ProblemArguments:
    """The training problems and how they are put to the model."""

    data: str = arg(
        "",
        "training problems: .jsonl / .parquet / a datasets folder / a preset / a Hub id "
        "(evals.data.load_problems)",
    )
    problem_column: str = arg("problem", "column holding the problem text")
    answer_column: str = arg("answer", "column holding the reference answer")
    id_column: str | None = arg(None, "column holding a problem id (default: the row number)")
    split: str | None = arg(None, "dataset split (Hub datasets and folders)")
    limit: int | None = arg(None, "use only the first N problems")
    prompt_template: str = arg(
        DEFAULT_PROMPT_TEMPLATE, "the user message; {problem} is replaced by the problem"
    )
    system_prompt: str | None = arg(None, "a system message before the user message")
    prompt_opens_think: Literal["auto", "yes", "no"] = arg(
        "auto",
        "the chat template opens <think> in the prompt (R1-Distill, QwQ), so a completion "
        "without </think> has no answer (bad format); auto renders the template to see",
    )


@dataclass
class LaserDArguments:
    """LASER-D's adaptive targets (used by the adaptive reward methods, laser_d and
    laser_de; `train.laser_d`)."""

    laser_d_every_steps: int = arg(
        20, "LASER-D: re-sample the monitoring set every N optimizer steps (and at step 0)"
    )
    laser_d_monitor_data: str = arg(
        "",
        "LASER-D: problems of the monitoring set (like data); empty: a random "
        "laser_d_monitor_size subset of the training problems",
    )
    laser_d_monitor_size: int = arg(
        500, "LASER-D: monitoring prompts (Laser: 500), each with num_generations rollouts"
    )
    laser_d_rounding: Literal["ceil", "floor"] = arg(
        "ceil", "LASER-D: C_d rounding, ceil (the paper: 6, 3, 1 for K = 8) or floor (its code)"
    )
    laser_d_budget_step: int = arg(
        1024,
        "LASER-D: spacing of the candidate budgets target_length, +step, ..., "
        "max_completion_length",
    )


@dataclass
class RLConfig(GRPOConfig, LaserDArguments, RewardConfig, ProblemArguments):
    """Everything one RL run needs but the model (`ModelArguments`). See
    ``configs/train/*.yaml`` for the published recipes."""

    # -- GRPOConfig fields with shortcot's defaults (DLER's recipe, CPU-friendly logging)
    output_dir: str | None = arg(
        "",
        "the final model folder, written when training ends (the Trainer's checkpoints go to "
        "work_dir)",
        aliases=["--out"],
    )
    learning_rate: float = _ours("learning_rate", 1e-6, "DLER and Laser")
    lr_scheduler_type: SchedulerType | str = _ours("lr_scheduler_type", "constant", "DLER")
    weight_decay: float = _ours("weight_decay", 0.01, "DLER (veRL's AdamW)")
    num_generations: int | None = _ours("num_generations", 16, "DLER's G")
    per_device_train_batch_size: int = _ours(
        "per_device_train_batch_size", 16, "completions, one group of 16"
    )
    max_steps: int = _ours("max_steps", 450, "DLER's optimizer steps")
    max_completion_length: int | None = _ours(
        "max_completion_length", 4000, "DLER: generation capped at L_T"
    )
    epsilon_high: float | None = _ours("epsilon_high", 0.28, "DLER's clip-higher")
    delta: float | None = _ours("delta", 10.0, "DLER's dual-clip c")
    loss_type: str = _ours("loss_type", "dapo", "token-mean, DLER")
    bf16: bool | None = _ours(
        "bf16", False, "float32 unless asked; true runs the forward in bf16 autocast"
    )
    gradient_checkpointing: bool | None = _ours(
        "gradient_checkpointing", None, "off; turn on with activation_checkpointing, its new name"
    )
    seed: int = _ours("seed", 0, "")
    logging_steps: float = _ours("logging_steps", 1, "every step")
    save_steps: float = _ours("save_steps", 50, "")
    save_total_limit: int | None = _ours("save_total_limit", 2, "")
    report_to: None | str | list[str] = _ours("report_to", "none", "")
    hub_private_repo: bool | None = _ours(
        "hub_private_repo", False, "a bare flag, as every shortcot command's"
    )

    # -- shortcot's own settings
    advantage: Literal["dler", "grpo", "group_mean"] = arg(
        "dler",
        "dler (group mean + token-weighted batch std, DLER Eq. 3), grpo (TRL's group mean "
        "and std) or group_mean (TRL's unscaled: sets scale_rewards none)",
    )
    dynamic_sampling: bool = arg(
        True, "drop groups whose rewards are all equal and refill the batch (DAPO)"
    )
    max_extra_rounds: int = arg(4, "dynamic sampling: at most this many extra generation rounds")
    work_dir: str = arg(
        "", "checkpoints and logs of the Trainer (default <output_dir>.work); --resume reads them"
    )
    keep_checkpoints: bool = arg(False, "keep work_dir after success (default: removed)")
    rollout_evict_every: int = arg(
        16,
        "without vLLM, finished rows leave the rollout batch every N generated tokens, and each "
        "prompt's forward runs once for all its rollouts (train.rollouts: the same samples as "
        "TRL's generate, token for token); 0 = TRL's own generate",
    )
    resume: bool = arg(False, "continue from the latest checkpoint in work_dir")
    force: bool = arg(False, "replace an existing output and discard old checkpoints")

    def __post_init__(self):
        if isinstance(self.prompt_opens_think, bool):  # YAML reads a bare yes / no as a bool
            self.prompt_opens_think = "yes" if self.prompt_opens_think else "no"
        self.check_reward()
        self.check()
        # the values as given, before TRL derives others from them (the run's recipe)
        self.given = {
            f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init
        }
        if self.advantage == "group_mean":  # TRL's group-local advantages, unscaled
            self.scale_rewards = "none"
        super().__post_init__()

    def check(self) -> None:
        """Shortcot's checks, before TRL's own (their messages name the fix)."""
        if self.advantage not in ("dler", "grpo", "group_mean"):
            raise ShortcotError(f"advantage {self.advantage!r} is not dler, grpo or group_mean")
        if self.laser_d_rounding not in ("ceil", "floor"):
            raise ShortcotError(f"laser_d_rounding {self.laser_d_rounding!r} is not ceil or floor")
        if self.prompt_opens_think not in PROMPT_OPENS_THINK:
            raise ShortcotError(
                f"prompt_opens_think {self.prompt_opens_think!r} is not auto, yes or no"
            )
        if self.num_generations is None or self.num_generations < 2:
            raise ShortcotError(
                "num_generations must be >= 2: group baselines need several rollouts per prompt"
            )
        if self.max_steps < 1:
            raise ShortcotError(
                f"max_steps must be >= 1 (optimizer steps), got {self.max_steps}; "
                "e.g. --max_steps 450"
            )
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps"):
            if getattr(self, key) < 1:
                raise ShortcotError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.steps_per_generation is not None and self.steps_per_generation < 1:
            raise ShortcotError(
                f"steps_per_generation must be >= 1, got {self.steps_per_generation}"
            )
        batch = self.completions_per_generation()
        if batch % self.num_generations:
            raise ShortcotError(
                f"num_generations {self.num_generations} does not divide the {batch} completions "
                f"generated at once (per_device_train_batch_size {self.per_device_train_batch_size}"
                f" x {world_size()} process(es) x "
                f"{self.steps_per_generation or self.gradient_accumulation_steps} steps per "
                "generation); make per_device_train_batch_size a multiple of num_generations"
            )
        self.hub_repo()  # --push_to_hub without a repo is bad input

    def completions_per_generation(self) -> int:
        """Completions generated at once (TRL's ``generation_batch_size``): whole groups of
        ``num_generations``, so it must be a multiple of it."""
        if self.generation_batch_size:
            return int(self.generation_batch_size)
        steps = self.steps_per_generation or self.gradient_accumulation_steps
        return self.per_device_train_batch_size * world_size() * int(steps)

    def work_path(self) -> str:
        """Where the Trainer's checkpoints go: ``work_dir``, default ``<output_dir>.work``."""
        return self.work_dir or f"{str(self.output_dir).rstrip('/')}.work"

    def hub_repo(self) -> str | None:
        """The Hub repo to upload the final model to, or None (`artifacts.cli.hub_repo`)."""
        return hub_repo(self.push_to_hub, self.hub_model_id)

    def validate(self, model_args: ModelArguments) -> None:
        """The settings a run needs that a recipe may leave empty (checked before any work)."""
        for key, value, flag in (
            ("model_name_or_path", model_args.model_name_or_path, "--model"),
            ("data", self.data, "--data"),
            ("output_dir", self.output_dir, "--out"),
        ):
            if not value:
                raise ShortcotError(f"{key} is empty; set it in the recipe or with {flag} VALUE")
        model_args.check()


@dataclass
class ModelArguments(ModelConfig):
    """TRL's ``ModelConfig``: the model to train and its LoRA settings (``trl.get_peft_config``),
    with shortcot's defaults."""

    model_name_or_path: str | None = arg(
        None, "the model to train: an HF model folder or a Hub id", aliases=["--model"]
    )
    # float32 master weights: AdamW on bf16 weights loses most small updates (measured on
    # SmolLM2-135M, a bf16 checkpoint: two steps at lr 1e-6 changed 0.39% of the entries in
    # bf16 and 99.4% in float32). With bf16=true the forward still runs in bf16 autocast;
    # the final model is saved in the checkpoint's own dtype.
    dtype: str | None = arg(
        "float32",
        "dtype the weights are trained in: float32 (master weights; the final model is saved "
        "in the checkpoint's dtype), auto (the checkpoint's), bfloat16 or float16",
        choices=["auto", "bfloat16", "float16", "float32"],
    )
    lora_dropout: float = arg(0.0, "LoRA dropout")
    lora_target_modules: list[str] | None = arg(
        ["q_proj", "k_proj", "v_proj", "o_proj"], "LoRA target modules (names or all-linear)"
    )
    lora_merge: bool = arg(
        True,
        "with use_peft: fold the adapter into the base weights when saving, so the final "
        "model is a standard HF folder; false saves the adapter",
    )

    def __post_init__(self):
        names = self.lora_target_modules
        super().__post_init__()
        # TRL turns a one-name list into a string (meant for "all-linear"), which peft would
        # read as a regex over full module names: keep a list of names a list
        if isinstance(self.lora_target_modules, str) and self.lora_target_modules != "all-linear":
            self.lora_target_modules = list(names) if isinstance(names, list) else [names]

    def check(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ShortcotError(
                f"dtype {self.dtype!r} is not float32, bfloat16, float16 or auto "
                "(float32 keeps master weights; auto trains in the checkpoint's dtype)"
            )
        if self.load_in_4bit or self.load_in_8bit:
            raise ShortcotError(
                "train.rl does not load quantized models; drop load_in_4bit / load_in_8bit"
            )


def trainer_args(cfg: RLConfig, work: str | os.PathLike) -> RLConfig:
    """The config the Trainer gets: checkpoints in ``work``, and no Hub settings (shortcot
    uploads the final folder itself, after the atomic move)."""
    args = copy.copy(cfg)
    args.output_dir = os.path.expanduser(str(work))
    args.push_to_hub, args.hub_model_id, args.hub_private_repo = False, None, None
    return args


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "value", str(v))))


def run_settings(cfg: RLConfig, model_args: ModelArguments) -> dict:
    """The settings a work folder's checkpoints are made with (``--resume`` compares them):
    every field as given, but `RESUMABLE_KEYS` and secrets."""
    values = {**cfg.given, **dataclasses.asdict(model_args)}
    return _plain(
        {k: v for k, v in values.items() if k not in RESUMABLE_KEYS and not k.endswith("_token")}
    )


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def recipe(cfg: RLConfig, model_args: ModelArguments) -> dict:
    """The run's recipe as ``--config`` reads it (saved as ``train_config.yaml`` and in the
    card): shortcot's settings, the model, and every TRL field that the run or shortcot's
    defaults set to another value than TRL's default."""
    ours = {f.name: f for cls in (RLConfig, ModelArguments) for f in dataclasses.fields(cls)}
    trl = {f.name: f for cls in (GRPOConfig, ModelConfig) for f in dataclasses.fields(cls)}
    out = {}
    for name, value in {**cfg.given, **dataclasses.asdict(model_args)}.items():
        started = name in ("resume", "force", "push_to_hub") or name.startswith("hub_")
        if started or name.endswith("_token"):
            continue  # how this run was started or published, not what it trains
        if name.startswith("lora_") and not model_args.use_peft:
            continue
        untouched = name in trl and value == _default(ours[name]) == _default(trl[name])
        if untouched and name not in ("model_name_or_path", "dtype"):
            continue
        out[name] = value
    return _plain(out)
