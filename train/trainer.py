"""`ShortcotGRPOTrainer`: TRL's ``GRPOTrainer`` plus the three things DLER / LASER-D need
and TRL 1.16 lacks, and faster rollouts, overriding as little as possible.

1. **DLER advantage** (DLER Eq. 3, `train.advantages.dler_advantages`): group mean, then
   token-weighted batch whitening over all processes. TRL computes its own advantages
   inside ``_generate_and_score_completions``; we let it, then replace
   ``output["advantages"]`` from the rewards TRL computed (captured by wrapping
   ``_calculate_rewards``) and the completion mask TRL returned.
2. **Dynamic sampling** (`train.sampling.fill_batch`): the same method calls TRL's
   ``_generate_and_score_completions`` again on extra prompts until the batch holds enough
   informative groups, and assembles the batch. Each round pays TRL's full scoring cost
   (reference / old log-probs of groups that are then dropped): simpler than re-plumbing
   TRL's generation, and cheap next to the generation itself.
3. **LASER-D targets** (`train.laser_d`): every ``laser_d_every_steps`` optimizer steps, the
   monitoring prompts are rolled out with TRL's own ``_generate`` (so vLLM works too), graded
   and turned into per-bucket targets that the `train.rewards.LengthReward` reads.
4. **Rollouts without padding waste** (`train.rollouts`): without vLLM, rows that have
   finished leave the generation batch every ``rollout_evict_every`` tokens; same samples.

Everything else (clip-higher, dual-clip, token-mean loss, KL, vLLM, peft, DeepSpeed/FSDP) is
TRL's own, configured through ``GRPOConfig`` (see `train.config`). The overridden internals
are pinned to `TRL_VERSION_RANGE`; ``tests/test_trl_contract.py`` fails when they change.

Dynamic sampling and the group-level rewards need every process to hold whole groups:
``per_device_train_batch_size * steps_per_generation`` must be a multiple of
``num_generations`` (checked at start-up).
"""

from __future__ import annotations

import random
from collections import defaultdict

import torch
from trl import GRPOTrainer

from artifacts.errors import ShortcotError
from train.advantages import dler_advantages
from train.laser_d import adaptive_targets
from train.length_reward import LengthReward
from train.rollouts import EVICT_EVERY, evicting_generate
from train.sampling import fill_batch

# The GRPOTrainer internals overridden below were read from these versions.
TRL_VERSION_RANGE = (">=1.16", "<1.17")


def check_trl_version() -> None:
    """Raise `ShortcotError` when the installed TRL is outside `TRL_VERSION_RANGE`."""
    import trl
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(",".join(TRL_VERSION_RANGE))
    if trl.__version__ not in spec:
        raise ShortcotError(
            f"trl {trl.__version__} is installed but train.trainer was written against trl{spec}; "
            f"install it with pip install 'trl{spec}'"
        )


class ShortcotGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with the DLER advantage, dynamic sampling and LASER-D targets.

    Extra arguments (all keyword-only):
        advantage:         "dler" (ours), or "grpo" / "group_mean" (TRL's own, via
                           ``scale_rewards="group"`` / ``"none"``).
        dynamic_sampling:  drop groups with equal rewards and refill the batch.
        max_extra_rounds:  cap on extra generation rounds per batch.
        length_reward:     the `LengthReward` among ``reward_funcs`` (LASER-D targets go there).
        laser_d:           `train.config.LaserDArguments` (the ``laser_d_*`` settings), or None
                           for fixed targets.
        monitor_dataset:   rows (``prompt``, ``answer``) of LASER-D's monitoring set.
    """

    def __init__(
        self,
        *args,
        advantage: str = "dler",
        dynamic_sampling: bool = False,
        max_extra_rounds: int = 4,
        length_reward: LengthReward | None = None,
        laser_d=None,
        monitor_dataset=None,
        **kwargs,
    ):
        check_trl_version()
        super().__init__(*args, **kwargs)
        if advantage not in ("dler", "grpo", "group_mean"):
            raise ShortcotError(f"advantage {advantage!r} is not dler, grpo or group_mean")
        self.advantage = advantage
        self.dynamic_sampling = dynamic_sampling
        self.max_extra_rounds = max_extra_rounds
        self.length_reward = length_reward
        if length_reward is not None and not length_reward.eos_token_ids:
            length_reward.eos_token_ids = list(self.eos_token_ids)
        self.laser_d = laser_d
        self.monitor_dataset = monitor_dataset
        self._last_monitor_step = -1
        self._captured_rewards: torch.Tensor | None = None
        self.last_batch: dict = {}  # rewards / lengths / advantages / valid of the latest batch
        local_batch = self.args.per_device_train_batch_size * self.args.steps_per_generation
        needs_groups = dynamic_sampling or (
            length_reward is not None and length_reward.config.method.needs_groups
        )
        if needs_groups and local_batch % self.num_generations:
            raise ShortcotError(
                f"per_device_train_batch_size * steps_per_generation = {local_batch} is not a multiple of "
                f"num_generations = {self.num_generations}; dynamic sampling and group-level rewards need whole "
                "groups on every process, so change one of them"
            )
        self._extra_rng = random.Random(self.args.seed * 1000003 + self.accelerator.process_index)

    # -- 1. capture the rewards TRL computes (gathered over processes) ---------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._captured_rewards = rewards_per_func
        return rewards_per_func

    def _local_rewards(self, n_local: int) -> torch.Tensor:
        """This process's summed, weighted rewards of the latest `_calculate_rewards` call."""
        rpf = self._captured_rewards
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
        i = self.accelerator.process_index
        return rewards[i * n_local : (i + 1) * n_local]

    def _extra_inputs(self, n: int) -> list[dict]:
        """``n`` rows (n / G prompts, each repeated G times) drawn at random from the
        training set, for an extra dynamic-sampling round."""
        g = self.num_generations
        idx = self._extra_rng.sample(
            range(len(self.train_dataset)), k=min(n // g, len(self.train_dataset))
        )
        while len(idx) < n // g:  # tiny data sets: draw with replacement
            idx.append(self._extra_rng.randrange(len(self.train_dataset)))
        return [dict(self.train_dataset[j]) for j in idx for _ in range(g)]

    def _any_process(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.gather(t).sum().item() > 0)

    # -- 2. advantages and dynamic sampling ----------------------------------------------
    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        if mode != "train":
            return super()._generate_and_score_completions(inputs)
        self._maybe_update_laser_d_targets()
        g = self.num_generations
        n = len(inputs)

        def one_round(r: int):
            batch_inputs = inputs if r == 0 else self._extra_inputs(n)
            out = super(ShortcotGRPOTrainer, self)._generate_and_score_completions(batch_inputs)
            rewards = self._local_rewards(len(batch_inputs)).to(out["advantages"].device)
            out["shortcot_rewards"] = rewards
            return out, rewards

        if self.dynamic_sampling:
            out, valid, stats = fill_batch(
                one_round,
                g,
                n // g,
                self.max_extra_rounds,
                self._tokenizer.pad_token_id,
                self._any_process,
            )
            self._metrics[mode]["dynamic_sampling/filtered_fraction"].append(
                stats.filtered_fraction
            )
            self._metrics[mode]["dynamic_sampling/rounds"].append(float(stats.rounds))
            self._metrics[mode]["dynamic_sampling/padded_groups"].append(float(stats.padded_groups))
        else:
            out, _ = one_round(0)
            valid = torch.ones(n, dtype=torch.bool)
        rewards = out.pop("shortcot_rewards")
        device = rewards.device
        valid = valid.to(device)
        loss_mask = (
            out["completion_mask"]
            if "tool_mask" not in out
            else out["completion_mask"] * out["tool_mask"]
        )
        lengths = loss_mask.sum(dim=1)
        if self.advantage == "dler":
            adv = dler_advantages(
                rewards,
                lengths,
                g,
                valid=valid,
                reduce=lambda x: self.accelerator.reduce(x, reduction="sum"),
            )
        elif self.dynamic_sampling:
            # TRL's group-local advantages stay correct for every kept group; padding groups get 0
            adv = torch.where(valid, out["advantages"], torch.zeros_like(out["advantages"]))
        else:
            adv = out["advantages"]
        out["advantages"] = adv.to(out["advantages"].dtype)
        out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        self.last_batch = {
            "rewards": rewards,
            "lengths": lengths,
            "advantages": out["advantages"],
            "valid": valid,
        }
        return out

    # -- 3. LASER-D ----------------------------------------------------------------------
    def _maybe_update_laser_d_targets(self) -> None:
        if self.laser_d is None or self.length_reward is None or not self.monitor_dataset:
            return
        step = self.state.global_step
        due = step % max(1, self.laser_d.laser_d_every_steps) == 0 or not self.length_reward.targets
        if not due or step == self._last_monitor_step:
            return
        self._last_monitor_step = step
        targets = self.monitor_targets()
        self.length_reward.targets = targets
        for bucket, value in targets.items():
            self._metrics["train"][f"laser_d/target_{bucket}"].append(float(value))

    def monitor_targets(self) -> dict[str, int]:
        """Roll out this process's share of the monitoring set (K = num_generations rollouts
        per prompt), grade it, and compute L_A(d) per bucket over all processes."""
        from accelerate.utils import gather_object

        rows = list(self.monitor_dataset)
        i, world = self.accelerator.process_index, self.accelerator.num_processes
        share = rows[i::world]
        k = self.num_generations
        prompts = [r["prompt"] for r in share for _ in range(k)]
        saved = self._metrics
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}  # keep logs clean
        try:
            with torch.no_grad():
                results = self._generate(prompts) if prompts else None
        finally:
            self._metrics = saved
        local = []
        if results is not None:
            completion_ids, completions = results[1], results[3]
            grade = self.length_reward.grade  # the answer contract, as in the reward
            for j, row in enumerate(share):
                sl = slice(j * k, (j + 1) * k)
                correct = [grade(c, row["answer"]).correct for c in completions[sl]]
                local.append((sum(correct) / k, [len(ids) for ids in completion_ids[sl]]))
        everything = gather_object(local)
        cfg = self.length_reward.config
        return adaptive_targets(
            [a for a, _ in everything],
            [ls for _, ls in everything],
            k=k,
            target_length=cfg.target_length,
            max_length=self.max_completion_length,
            step=self.laser_d.laser_d_budget_step,
            rounding=self.laser_d.laser_d_rounding,
        )

    # -- 4. rollouts without padding waste -------------------------------------------------
    rollout_evict_every = EVICT_EVERY  # finished rows leave the batch every N tokens; 0 = off

    def _generate_single_turn(self, *args, **kwargs):
        every = getattr(self.args, "rollout_evict_every", self.rollout_evict_every)
        if self.use_vllm or self.use_transformers_continuous_batching or every <= 0:
            return super()._generate_single_turn(*args, **kwargs)
        with evicting_generate(self.accelerator.unwrap_model(self.model_wrapped), every):
            return super()._generate_single_turn(*args, **kwargs)
