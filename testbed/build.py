"""Build the CPU testbed: data, tokenizer and a tiny overthinking Llama trained by SFT.

    python -m testbed.build --out runs/testbed                 # default (~10 min, 2 cores)
    python -m testbed.build --out /tmp/tb --preset tiny        # seconds; for tests

Writes (contract 5) ``OUT/model/`` (a standard HF folder: config, safetensors, tokenizer
with chat template, generation config, model card) and ``OUT/data/{train,monitor,test}.jsonl``
with columns ``id, problem, answer, difficulty``, plus ``OUT/build.json`` (the settings and
the training log). The output is moved into place atomically, so ``OUT/model/config.json``
existing means the build is complete. A second run with the same settings returns at once;
different settings need ``--force``. An interrupted build resumes from the last checkpoint
kept in ``OUT``'s sibling work folder ``.OUT.work-<hash>``.

Training (`testbed.sft`) is a hand-written torch loop with completion-only loss; torch
and transformers are imported only when there is something to build, so a cached rerun
returns in well under a second plus Python start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from artifacts.cli import HubArguments, arg
from artifacts.cli import parse_args as parse_cli
from artifacts.errors import ShortcotError, run_cli
from artifacts.jsonl import write_jsonl
from artifacts.outdir import atomic_output_dir
from evals.prompts import DEFAULT_PROMPT_TEMPLATE, build_messages
from testbed.task import generate_split, to_record
from testbed.teacher import CHECKS_TEACHER, TeacherConfig, Trace, teacher_example

BUILD_FORMAT = 4  # bump when the meaning of a setting changes, so old caches are not reused


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the testbed (hashed for the cache)."""

    seed: int = 0
    min_difficulty: int = 2  # number of terms of the easiest problem
    max_difficulty: int = 6  # ... and of the hardest
    n_monitor: int = 256
    n_test: int = 512
    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    max_len: int = 512  # longest training sequence in tokens (longer ones are dropped)
    steps: int = 400
    batch_size: int = 64
    micro_batch_tokens: int = 8192  # a step's batch is split into pieces of at most this many
    # padded tokens (gradient accumulation): CPU throughput drops sharply above ~8k tokens
    lr: float = 2e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.3  # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.0
    checkpoint_every: int = 50
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    @property
    def n_train(self) -> int:
        """One pass over fresh problems: every step sees new examples."""
        return self.steps * self.batch_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format"] = BUILD_FORMAT
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


PRESETS: dict[str, BuildConfig] = {
    "default": BuildConfig(),
    # The teacher makes arithmetic slips, masked out of the loss (testbed.teacher.CHECKS_TEACHER).
    "checks": BuildConfig(teacher=TeacherConfig(**CHECKS_TEACHER)),
    # Only exercises the mechanics (tests): a few steps of a 2-layer, 32-wide model.
    "tiny": BuildConfig(
        n_monitor=16,
        n_test=32,
        hidden_size=32,
        num_layers=2,
        steps=6,
        batch_size=8,
        checkpoint_every=3,
        min_difficulty=2,
        max_difficulty=4,
        warmup_steps=2,
    ),
}


# The --preset choices (a Literal, so --help lists them); a test keeps it equal to PRESETS.
PresetName = Literal["checks", "default", "tiny"]


def make_config(preset: str, seed: int | None = None, steps: int | None = None) -> BuildConfig:
    if preset not in PRESETS:
        raise ShortcotError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
    cfg = PRESETS[preset]
    teacher = replace(
        cfg.teacher, min_difficulty=cfg.min_difficulty, max_difficulty=cfg.max_difficulty
    )
    cfg = replace(cfg, teacher=teacher)
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    if steps is not None:
        if steps < 1:
            raise ShortcotError(f"--steps must be positive, got {steps}")
        cfg = replace(cfg, steps=steps)
    return cfg


# ----------------------------------------------------------------------------- data


def make_data(cfg: BuildConfig) -> dict[str, list]:
    """The three splits as `Problem` lists; train excludes every held-out problem text."""
    lo, hi = cfg.min_difficulty, cfg.max_difficulty
    test = generate_split("test", cfg.n_test, cfg.seed, lo, hi)
    monitor = generate_split(
        "monitor", cfg.n_monitor, cfg.seed, lo, hi, exclude={p.text for p in test}
    )
    held_out = {p.text for p in test} | {p.text for p in monitor}
    train = generate_split("train", cfg.n_train, cfg.seed, lo, hi, exclude=held_out)
    return {"train": train, "monitor": monitor, "test": test}


def teacher_completions(problems: list, cfg: BuildConfig) -> list[Trace]:
    """One teacher trace per training problem, each from its own seeded stream."""
    return [
        teacher_example(p, random.Random(f"{cfg.seed}-{i}"), cfg.teacher)
        for i, p in enumerate(problems)
    ]


def build_tokenizer(cfg: BuildConfig, problems: list, completions: list[Trace]):
    from testbed.tokenizer import train_tokenizer

    n = min(len(problems), 4000)
    corpus = [DEFAULT_PROMPT_TEMPLATE.format(problem=p.text) for p in problems[:n]] + [
        c.text for c in completions[:n]
    ]
    return train_tokenizer(corpus, vocab_size=cfg.vocab_size, space_digits=True)


def masked_positions(offsets: list[tuple[int, int]], spans: tuple[tuple[int, int], ...]) -> tuple:
    """Indices of the tokens whose characters overlap any of ``spans`` (end-exclusive)."""
    return tuple(t for t, (a, b) in enumerate(offsets) if any(a < e and s < b for s, e in spans))


def tokenize_examples(
    tokenizer, problems: list, completions: list[Trace], max_len: int
) -> list[tuple]:
    """(input_ids, number of prompt tokens, masked completion positions) per example.

    The prompt is rendered with the chat template and ``add_generation_prompt=True``, i.e.
    exactly the ids the model sees at generation time; the completion (plus EOS, so the
    model learns to stop) is tokenized on its own and appended. ``<think>`` is an added
    token, so the join is the same as tokenizing the whole rendered conversation. The
    teacher's slipped tokens (`testbed.teacher.Trace.masked`) become positions (counted
    from the start of the completion) that the loss skips.
    """
    prompts = [
        tokenizer.apply_chat_template(
            build_messages(p.text), add_generation_prompt=True, tokenize=False
        )
        for p in problems
    ]
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    enc = tokenizer(
        [c.text + tokenizer.eos_token for c in completions],
        add_special_tokens=False,
        return_offsets_mapping=True,
    )
    out = []
    for a, b, offsets, c in zip(p_ids, enc["input_ids"], enc["offset_mapping"], completions):
        if len(a) + len(b) <= max_len:
            out.append((a + b, len(a), masked_positions(offsets, c.masked)))
    return out


# ---------------------------------------------------------------------------- build


def _card(cfg: BuildConfig, log: list, seconds: float) -> tuple[str, str]:
    summary = (
        "The shortcot CPU testbed: a tiny Llama trained by SFT on overthinking traces of a running "
        "sum mod 10 over letter-labelled digits (`Add the digits mod 10: a 3 b 5 c 2`), one "
        "`label digit sum` step per term (`a 3 3 b 5 8 c 2 0`). Its traces re-check steps, "
        "backtrack over injected-and-caught look-up slips and re-compute the whole "
        "sum, more on easy problems; answers are `\\boxed{}` after `</think>`; grade with the "
        f"`testbed` grader. Trained for {len(log)} steps in {seconds:.0f} s "
        f"(final loss {log[-1]['loss'] if log else float('nan')})."
    )
    return "shortcot testbed model", summary


def is_complete(out: Path) -> bool:
    return (out / "model" / "config.json").exists() and (out / "build.json").exists()


def build(
    out: str | os.PathLike,
    cfg: BuildConfig,
    force: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> Path:
    """Build the testbed at ``out`` (cached; resumable); returns ``out``.

    ``threads``: torch CPU threads for the build (None leaves torch's setting). The CLI
    uses 1: a matmul's reduction order depends on the thread count, so a build on a
    machine with more cores would otherwise give other weights in the last bits (and,
    through sampling, other numbers everywhere downstream).
    """
    from artifacts.cards import write_model_card

    out = Path(out)
    if is_complete(out) and not force:
        old = json.loads((out / "build.json").read_text())
        if old.get("digest") == cfg.digest():
            return out
        raise ShortcotError(
            f"{out} holds a testbed built with other settings (digest {old.get('digest')} != "
            f"{cfg.digest()}); pass --force to rebuild it or choose another --out"
        )
    if out.exists() and not force:
        raise ShortcotError(
            f"output {out} exists and is not a testbed build; pass --force or choose another --out"
        )
    import torch

    from testbed.model import init_model, save_checkpoint, tiny_llama_config
    from testbed.sft import train_sft

    if threads:
        torch.set_num_threads(threads)

    work = out.parent / f".{out.name}.work-{cfg.digest()}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    random.seed(cfg.seed)
    data = make_data(cfg)
    completions = teacher_completions(data["train"], cfg)
    tok_dir = work / "tokenizer"
    if tok_dir.exists():  # resuming: the model's ids must not move
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = build_tokenizer(cfg, data["train"], completions)
        tokenizer.save_pretrained(tok_dir)
    examples = tokenize_examples(tokenizer, data["train"], completions, cfg.max_len)
    model_cfg = tiny_llama_config(
        tokenizer,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_len,
    )
    model = init_model(model_cfg, seed=cfg.seed)
    log = train_sft(model, examples, cfg, tokenizer.pad_token_id, work, progress=progress)
    seconds = time.time() - t0
    with atomic_output_dir(out, force=force) as tmp:
        save_checkpoint(model, tokenizer, tmp / "model")
        title, summary = _card(cfg, log, seconds)
        write_model_card(tmp / "model", title, summary, recipe=cfg.to_dict(), tags=["testbed"])
        (tmp / "data").mkdir()
        for split, problems in data.items():
            write_jsonl(
                tmp / "data" / f"{split}.jsonl",
                [to_record(p, split, i) for i, p in enumerate(problems)],
            )
        info = {
            "digest": cfg.digest(),
            "config": cfg.to_dict(),
            "seconds": round(seconds, 1),
            "n_train_examples": len(examples),
            "mean_train_tokens": round(
                sum(len(e[0]) - e[1] for e in examples) / max(len(examples), 1), 2
            ),
            "log": log,
        }
        (tmp / "build.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return out


@dataclass
class BuildArguments:
    """The command's settings; the testbed itself (`BuildConfig`) comes from ``preset``."""

    out: str = arg(
        help="output folder; gets model/, data/{train,monitor,test}.jsonl and build.json"
    )
    preset: PresetName = arg(
        "default",
        "default: the testbed everyone uses (~5-10 min on 2 cores); checks: its teacher makes "
        "arithmetic slips, masked out of the loss (issue 12's useful-checks try); tiny: a "
        "seconds-long build for tests",
    )
    seed: int | None = arg(None, "seed of the data, the teacher and the model init (default 0)")
    steps: int | None = arg(None, "SFT steps (default: the preset's; 400 for default)")
    threads: int = arg(
        1,
        "torch CPU threads (default 1: the same weights bit for bit on any machine, and no "
        "slowdown when other jobs share the cores; more threads change the last bits)",
    )
    force: bool = arg(False, "rebuild even if OUT exists (replaces it at the end)")
    progress: bool = arg(True, "show the progress bar (--no_progress hides it)")


def parse_args(argv: Sequence[str] | None = None) -> tuple[BuildArguments, HubArguments]:
    """``--config recipe.yaml`` and ``--flags`` into (settings, publishing); see ``--help``."""
    return parse_cli(
        [BuildArguments, HubArguments],
        argv,
        prog="testbed.build",
        description="Build the CPU testbed: problems, a tokenizer, and a tiny Llama "
        "SFT-trained on overthinking traces.",
        epilog="--push_to_hub uploads OUT/model (with its card) to --hub_model_id.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args, hub = parse_args(argv)
    if args.threads < 1:
        raise ShortcotError(f"--threads must be positive, got {args.threads}")
    repo = hub.hub_repo()
    cfg = make_config(args.preset, seed=args.seed, steps=args.steps)
    t0 = time.time()
    out = build(args.out, cfg, force=args.force, progress=args.progress, threads=args.threads)
    info = json.loads((out / "build.json").read_text())
    if repo:
        from artifacts.hub import push_folder

        url = push_folder(out / "model", repo, private=hub.hub_private_repo)
        print(f"pushed {out / 'model'} to {url}")
    print(
        f"testbed at {out} (digest {info['digest']}; trained in {info['seconds']} s; this run {time.time() - t0:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
