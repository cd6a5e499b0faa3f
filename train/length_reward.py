"""The TRL reward function of ``python -m train.rl`` and its settings.

`RewardConfig` holds the reward settings (flat fields, the same names as ``train.rl``'s
flags and recipe keys; `train.config.RLConfig` inherits them). `LengthReward` is a callable
with TRL's reward signature ``(prompts, completions, completion_ids, answer, **kwargs) ->
list[float]`` that grades each completion with the shared grader
(`evals.grading.get_grader`) under the answer contract (`evals.grading.grade_completion`:
when the chat template opened the think block, a completion that never writes ``</think>``
has no answer, so it is wrong and badly formatted, whatever it boxed while thinking),
detects truncation from ``completion_ids`` (no EOS within the limit, never from text) and
applies the method's registry entry (`train.reward_methods`).

Group-level methods group the rollouts of one prompt by the ``id`` column (else by the
prompt itself); with several processes every process must hold whole groups, which
`train.trainer` checks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import yaml

from artifacts.cli import arg
from artifacts.errors import ShortcotError
from evals.grading import Grade, get_grader, grade_completion
from train.reward_methods import METHODS, REWARD_METHODS, RewardMethod, Rollouts
from train.rewards import binary_reward, is_truncated, laser_base_reward


def completion_text(completion) -> str:
    """TRL passes a completion as text (standard datasets) or as a list of messages
    (conversational datasets); return the assistant text in both cases."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content", "") or "" for m in completion if isinstance(m, dict))
    if isinstance(completion, dict):
        return completion.get("content", "") or ""
    raise ShortcotError(
        f"unexpected completion type {type(completion).__name__}; pass text or chat messages"
    )


@dataclass
class RewardConfig:
    """How rollouts are scored (docs/algorithms.md §1.1 and §3)."""

    reward_method: Literal[METHODS] = arg(
        "truncation",
        "the reward, an entry of train.reward_methods: truncation is DLER's, correctness has "
        "no length term",
    )
    grader: str = arg(
        "math",
        "correctness grader (evals.grading.get_grader): math, testbed or module:function",
    )
    reward_base: Literal["auto", "binary", "laser"] = arg(
        "auto",
        "correctness reward R: binary (1/0, DLER) or laser (+1/-0.5/-1 bad format); auto "
        "takes the method's own",
    )
    target_length: int = arg(
        4000, "L_T in tokens: the truncation limit, the LASER target, the L1 target"
    )
    reward_alpha: float | None = arg(
        None,
        "the length term's coefficient; unset: the method's default ("
        + ", ".join(f"{m.name} {m.alpha}" for m in REWARD_METHODS.values() if m.alpha is not None)
        + ")",
    )
    l1_delta: float = arg(0.5, "L1-Max's offset delta")
    truncated_factor: float = arg(
        0.0,
        "reward multiplier of a response without EOS within L_T (the paper 0, DLER's "
        "released code 0.1)",
    )
    repetition_check: bool = arg(
        False,
        "LASER-DE: no exploration bonus for repetitive responses (Laser's released code)",
    )
    repetition_ngram: int = arg(20, "the repetition detector's n-gram size (tokens)")
    repetition_repeats: int = arg(
        3, "the repetition detector fires when an n-gram occurs this many times"
    )
    da_short_target: int = arg(
        2000, "DA-DLER: the target of easy prompts (the long one is target_length)"
    )
    da_threshold: float = arg(
        0.5, "DA-DLER: a prompt is easy when its rollouts' accuracy is at least this"
    )
    # list | str | None: TrlParser takes a flag value as text, a recipe gives the list
    target_schedule: list | str | None = arg(
        [],
        "ThinkPrune-style staged L_T, [[step, L_T], ...]: from each optimizer step on, L_T "
        "is the listed value (e.g. [[0, 4096], [200, 3072], [400, 2048]]); empty: always "
        "target_length",
    )

    def __post_init__(self):
        self.check_reward()

    def check_reward(self) -> None:
        """Reject unknown methods and bases; read a ``target_schedule`` given as text."""
        if self.reward_method not in REWARD_METHODS:
            raise ShortcotError(
                f"unknown reward method {self.reward_method!r}; use one of {', '.join(METHODS)}"
            )
        if self.reward_base not in ("auto", "binary", "laser"):
            raise ShortcotError(f"reward_base {self.reward_base!r} is not auto, binary or laser")
        schedule = self.target_schedule
        if isinstance(schedule, str):
            try:
                schedule = yaml.safe_load(schedule)
            except yaml.YAMLError:
                schedule = "not YAML"
        schedule = [] if schedule is None else schedule
        if not isinstance(schedule, list) or not all(
            isinstance(s, list | tuple) and len(s) == 2 and all(isinstance(v, int) for v in s)
            for s in schedule
        ):
            raise ShortcotError(
                f"target_schedule {self.target_schedule!r} is not a list of [step, L_T] "
                "pairs; write e.g. [[0, 4096], [200, 3072]]"
            )
        self.target_schedule = [list(s) for s in schedule]

    @property
    def method(self) -> RewardMethod:
        """The registry entry of ``reward_method``."""
        return REWARD_METHODS[self.reward_method]

    def resolved_base(self) -> str:
        return self.method.base if self.reward_base == "auto" else self.reward_base

    def resolved_alpha(self) -> float | None:
        return self.reward_alpha if self.reward_alpha is not None else self.method.alpha

    def target_at(self, step: int) -> int:
        """L_T at optimizer step ``step`` (ThinkPrune's stages when ``target_schedule`` is set).

        >>> RewardConfig(target_length=9, target_schedule=[[0, 4096], [10, 2048]]).target_at(12)
        2048
        """
        target = self.target_length
        for start, value in sorted(self.target_schedule):
            if step >= start:
                target = int(value)
        return target


@dataclass
class LengthReward:
    """A TRL reward function: grade each completion, then apply ``config.reward_method``.

    ``eos_token_ids`` decide truncation. ``prompt_opens_think``: the chat template opens the
    think block in the prompt (`train.rl.build_trainer` reads it off the template), so the
    completions hold only ``... </think> answer`` (the answer contract, `grade`).
    For LASER-D, ``targets`` maps a difficulty bucket to
    its adaptive target L_A(d) (kept up to date by `train.trainer.ShortcotGRPOTrainer`);
    a bucket without a target yet uses ``target_length``. ``last`` holds the per-completion
    details of the latest call (correct, length, truncated, group accuracy, target) for
    logging and tests.
    """

    config: RewardConfig
    eos_token_ids: list[int]
    targets: dict[str, int] = field(default_factory=dict)
    bucket_thresholds: tuple[float, float] = (1 / 3, 2 / 3)
    grader: Callable | None = None
    prompt_opens_think: bool = False
    last: dict = field(default_factory=dict)
    __name__: str = "length_reward"

    def __post_init__(self):
        self.grader = self.grader or get_grader(self.config.grader)
        self.__name__ = f"{self.config.reward_method}_reward"

    def grade(self, completion, answer) -> Grade:
        """One completion (text or TRL's chat messages) graded under the answer contract."""
        return grade_completion(
            self.grader, completion_text(completion), str(answer), self.prompt_opens_think
        )

    def __call__(self, prompts, completions, completion_ids, answer=None, **kwargs) -> list[float]:
        if answer is None:
            raise ShortcotError(
                "the training dataset has no 'answer' column; add one (the reference answers)"
            )
        from train.laser_d import bucket_of

        cfg = self.config
        method = cfg.method
        state = kwargs.get("trainer_state")
        # ThinkPrune stages: L_T follows the optimizer step
        target_length = cfg.target_at(state.global_step if state is not None else 0)
        n = len(completions)
        grades = [self.grade(c, a) for c, a in zip(completions, answer)]
        base_fn = binary_reward if cfg.resolved_base() == "binary" else laser_base_reward
        rs = [base_fn(g) for g in grades]
        correct = [g.correct for g in grades]
        lengths = [len(ids) for ids in completion_ids]
        truncated = [is_truncated(ids, self.eos_token_ids, target_length) for ids in completion_ids]
        keys = kwargs.get("id") or [str(p) for p in prompts]
        groups: dict = defaultdict(list)
        for i, k in enumerate(keys):
            groups[k].append(i)
        group_acc = [0.0] * n
        for idx in groups.values():
            acc = sum(correct[i] for i in idx) / len(idx)
            for i in idx:
                group_acc[i] = acc
        if method.adaptive:
            targets = [
                self.targets.get(bucket_of(a, *self.bucket_thresholds), target_length)
                for a in group_acc
            ]
        elif method.group_target is not None:
            targets = [method.group_target(cfg, a, target_length) for a in group_acc]
        else:
            targets = [target_length] * n
        out = method.rewards(
            Rollouts(
                rs,
                correct,
                lengths,
                completion_ids,
                targets,
                list(groups.values()),
                self.eos_token_ids,
                cfg.resolved_alpha(),
                cfg,
            )  # fmt: skip
        )
        self.last = {
            "correct": correct,
            "formatted": [g.formatted for g in grades],
            "ungradable": [bool(getattr(g, "ungradable", False)) for g in grades],
            "lengths": lengths,
            "truncated": truncated,
            "group_accuracy": group_acc,
            "targets": targets,
            "rewards": out,
        }
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and n:
            log_metric("shortcot/accuracy", sum(correct) / n)
            log_metric("shortcot/format_rate", sum(g.formatted for g in grades) / n)
            log_metric("shortcot/ungradable_rate", sum(self.last["ungradable"]) / n)
            log_metric("shortcot/truncation_rate", sum(truncated) / n)
            log_metric("shortcot/mean_length", sum(lengths) / n)
        return out
