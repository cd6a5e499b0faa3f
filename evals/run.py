"""Evaluate a model: accuracy against tokens, resumable.

    python -m evals.run --model runs/testbed/model --data runs/testbed/data/test.jsonl \\
        --grader testbed --samples 4 --max-new-tokens 512 --out runs/eval/base

Writes into ``--out``:

- ``settings.json``: the settings (written once the model has loaded; a rerun with other
  generation settings is refused once samples exist, so one folder never mixes two
  configurations);
- ``samples.jsonl``: one record per sample, appended after every finished batch, so an
  interrupted run resumes where it stopped (rerun the same command);
- ``summary.json`` / ``summary.md``: the metrics (`evals.metrics.summarize`), written
  atomically at the end; a rerun with nothing left to generate only recomputes them.

Every sample is graded under the answer contract (`evals.grading.grade_completion`):
when the chat template opens the think block in the prompt (DeepSeek-R1-Distill, QwQ;
read off the rendered template, or ``--prompt-opens-think yes|no``), a completion that
never writes ``</think>`` has no answer, whatever it boxed while thinking.

``--force`` over an existing ``--out`` writes into ``.OUT.new`` next to it and replaces
``--out`` only when the new run is complete; a forced run that fails leaves ``--out`` as it
was (rerunning it with ``--force`` continues ``.OUT.new``).

``--limit`` and ``--samples`` may grow between reruns (samples are seeded per
problem and sample index, see `evals.backends`, so the extra ones are exactly those an
uninterrupted larger run would have drawn). The summary covers the problems and samples
asked for by the current command.

Other packages call `evaluate` in-process with an `EvalConfig` (and may pass an already
loaded backend).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from artifacts.config import read_yaml_mapping
from artifacts.errors import ShortcotError, run_cli
from artifacts.jsonl import JsonlAppender, read_jsonl
from artifacts.outdir import (
    OWNER_FILE,
    atomic_write_text,
    check_writable,
    move_into_place,
    owner_is_dead,
    owner_record,
    remove_stale_temporaries,
)
from evals.backends import (
    Backend,
    Completion,
    EngineOptions,
    Request,
    SamplingParams,
    add_engine_arguments,
    load_backend,
)
from evals.budget import DEFAULT_CUE, find_subsequence, generate_with_budget
from evals.data import Problem, load_problems
from evals.grading import (
    PROBE_PROBLEM,
    PROMPT_OPENS_THINK,
    THINK_CLOSE,
    THINK_OPEN,
    get_grader,
    grade_completion,
    resolve_prompt_opens_think,
)
from evals.metrics import summarize
from evals.prompts import DEFAULT_PROMPT_TEMPLATE, build_messages

SAMPLES_FILE = "samples.jsonl"
SETTINGS_FILE = "settings.json"


@dataclass
class EvalConfig:
    """Settings of one evaluation (the CLI flags, one to one)."""

    model: str  # local HF folder or Hub id
    data: str  # .jsonl / .parquet / save_to_disk folder / preset / Hub dataset id
    out: str  # output folder
    problem_column: str = "problem"
    answer_column: str = "answer"
    id_column: str | None = None
    difficulty_column: str | None = None
    split: str | None = None
    limit: int | None = None  # first N problems
    grader: str = "math"  # math | testbed | module:function
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE  # must contain {problem}
    system_prompt: str | None = None
    samples: int = 1  # samples per problem (pass@1 averaged over them)
    max_new_tokens: int = 4096
    temperature: float = 0.6  # 0 = greedy
    top_p: float = 0.95
    batch_size: int = 32
    seed: int = 0
    backend: str = "hf"  # hf | vllm
    dtype: str | None = None  # auto | float32 | bfloat16 | float16
    device: str | None = None
    think_budget: int | None = None  # budget forcing: max thinking tokens
    budget_cue: str = DEFAULT_CUE  # appended when the budget is hit (starts with </think>)
    vote: int | None = None  # majority vote over K samples
    prompt_opens_think: str = "auto"  # auto (read the chat template) | yes | no
    force: bool = False  # delete an existing --out and start over
    progress: bool = True
    # vllm over several GPUs (evals.backends.EngineOptions); samples do not depend on them
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None


# Settings that change what a sample is; a folder's samples must agree on all of them.
# limit, samples, batch_size, vote, device, force and progress may change between reruns.
GENERATION_KEYS = (
    "model",
    "data",
    "problem_column",
    "answer_column",
    "id_column",
    "difficulty_column",
    "split",
    "grader",
    "prompt_template",
    "system_prompt",
    "max_new_tokens",
    "temperature",
    "top_p",
    "seed",
    "backend",
    "dtype",
    "think_budget",
    "budget_cue",
    "prompt_opens_think",
)


def validate(cfg: EvalConfig) -> None:
    """Fail before any work on settings that cannot be right."""
    SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.samples, cfg.seed).validate()
    if "{problem}" not in cfg.prompt_template:
        raise ShortcotError(
            "--prompt-template must contain {problem}; e.g. '{problem}\\nAnswer in \\boxed{}.'"
        )
    if cfg.batch_size < 1:
        raise ShortcotError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.vote is not None and cfg.vote < 2:
        raise ShortcotError(f"--vote needs at least 2 samples to vote, got {cfg.vote}")
    if cfg.vote and cfg.samples < cfg.vote:
        raise ShortcotError(f"--vote {cfg.vote} needs --samples >= {cfg.vote} (got {cfg.samples})")
    if cfg.think_budget is not None and cfg.think_budget >= cfg.max_new_tokens:
        raise ShortcotError(
            f"--think-budget {cfg.think_budget} must be below --max-new-tokens {cfg.max_new_tokens}"
        )
    if cfg.backend not in ("hf", "vllm"):
        raise ShortcotError(f"unknown --backend {cfg.backend!r}; use hf or vllm")
    if cfg.prompt_opens_think not in PROMPT_OPENS_THINK:
        raise ShortcotError(
            f"--prompt-opens-think must be auto, yes or no, got {cfg.prompt_opens_think!r}"
        )
    EngineOptions.from_config(cfg).validate(cfg.backend)


def _canonical(ref: str) -> str:
    """Local paths as absolute paths (so ``./x`` and ``x`` are the same run); ids unchanged."""
    return os.path.abspath(ref) if os.path.exists(ref) else ref


def generation_settings(cfg: EvalConfig) -> dict:
    d = {k: getattr(cfg, k) for k in GENERATION_KEYS}
    d["model"], d["data"] = _canonical(cfg.model), _canonical(cfg.data)
    if cfg.think_budget is None:
        d["budget_cue"] = None  # unused without a budget
    return d


def settings_diff(old: dict, new: dict) -> list[str]:
    """Human-readable differences of the generation settings (empty when they agree).

    A key missing from ``old`` (a folder written before the key existed) counts as its
    default value, so such folders still resume."""
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(EvalConfig)
        if f.default is not dataclasses.MISSING
    }
    return [
        f"{k}: {old.get(k, defaults.get(k))!r} -> {new.get(k)!r}"
        for k in GENERATION_KEYS
        if old.get(k, defaults.get(k)) != new.get(k)
    ]


def staging_dir(out: Path) -> Path:
    """Where a ``--force`` run over an existing ``out`` writes until it is complete."""
    return out.parent / f".{out.name}.new"


def _has_samples(folder: Path) -> bool:
    path = folder / SAMPLES_FILE
    return path.exists() and path.stat().st_size > 0


def _check_folder(folder: Path, settings: dict, flag: str) -> bool:
    """Whether ``folder`` may be continued with ``settings`` (True), is empty or absent
    (False); otherwise a `ShortcotError`. Recorded settings without samples (a run that
    failed before its first sample, e.g. on a mistyped --model) do not bind a folder."""
    if folder.exists() and not folder.is_dir():
        raise ShortcotError(f"--out {folder} is a file; choose a folder")
    if not folder.exists() or not any(folder.iterdir()):
        return False
    sfile = folder / SETTINGS_FILE
    if not sfile.exists():
        raise ShortcotError(
            f"--out {folder} exists and is not an evals.run folder; choose another --out or pass --force"
        )
    if not _has_samples(folder):
        return True
    try:
        old = json.loads(sfile.read_text()).get("generation")
    except (ValueError, AttributeError):
        old = {}
    if not isinstance(old, dict):  # e.g. an old distill.build work folder
        raise ShortcotError(
            f"--out {folder} holds a settings.json that evals.run did not write; choose another "
            f"folder, or delete it ({flag}) to start over"
        )
    diff = settings_diff(old, settings)
    if diff:
        raise ShortcotError(
            f"--out {folder} holds samples made with other settings ({'; '.join(diff)}); "
            f"use another --out, or {flag} to discard them"
        )
    return True


def prepare_out(out: Path, settings: dict, force: bool) -> tuple[Path, bool]:
    """Check ``out``; return the folder this run writes into (created later, once there is
    something to write) and whether the samples in it are continued (False: they are
    discarded, once the model has loaded).

    Without ``force``: ``out`` itself, which must be absent, empty or hold samples made with
    the same generation settings (they are continued). With ``force`` and an existing
    ``out``: the staging folder `staging_dir` (continued when it holds samples of the same
    settings); ``out`` stays untouched until the new run is complete.
    """
    remove_stale_temporaries(out)
    if not force or not out.exists() or (out.is_dir() and not any(out.iterdir())):
        _check_folder(out, settings, "--force")
        check_writable(out if out.exists() else out.parent)
        return out, True
    if not out.is_dir():
        raise ShortcotError(f"--out {out} is a file; choose a folder")
    stage = staging_dir(out)
    check_writable(out.parent)
    owner = stage / OWNER_FILE
    if owner.exists():
        try:
            record = json.loads(owner.read_text())
        except ValueError:
            record = {}
        if record.get("pid") != os.getpid() and not owner_is_dead(record):
            raise ShortcotError(
                f"another evals.run (pid {record.get('pid')} on {record.get('host')}) is "
                f"writing {stage}; wait for it to finish"
            )
    try:
        continued = _check_folder(stage, settings, "--force")
    except ShortcotError:
        continued = False
    return stage, continued


def repair_tail(path: Path) -> None:
    """Cut a torn last line (an interrupted write) so that new records start on a line of
    their own; otherwise the first appended record would be glued to the fragment and lost."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def think_split(
    token_ids: list[int], close_ids: list[int], think_open: bool
) -> tuple[int | None, int]:
    """(thinking tokens, answer tokens) of one completion.

    The think block ends just after the last ``</think>`` (its ids ``close_ids``). A
    completion that never closed it is all thinking when a think block was opened (by the
    chat template or the completion, ``think_open``), else it has no think block
    (thinking None). Simplification: text before a ``<think>`` opened mid-completion
    counts as thinking too (R1-style models open it first or in the prompt).

    >>> think_split([1, 2, 9, 3], [9], True)
    (3, 1)
    >>> think_split([1, 2], [9], True)
    (2, 0)
    >>> think_split([1, 2], [9], False)
    (None, 2)
    """
    end = find_subsequence(token_ids, close_ids)
    if end != -1:
        return end, len(token_ids) - end
    if think_open:
        return len(token_ids), 0
    return None, len(token_ids)


def make_record(
    problem: Problem,
    sample: int,
    completion: Completion,
    grade,
    think_tokens: tuple[int | None, int],
    forced: bool,
    gen_seconds: float,
    prompt_opens_think: bool = False,
) -> dict:
    """One line of samples.jsonl. It carries the problem, its reference and whether the
    prompt opened the think block, so the file alone is a ``distill.build --teacher``."""
    return {
        "id": problem.id,
        "sample": sample,
        "difficulty": problem.difficulty,
        "problem": problem.problem,
        "reference": problem.answer,
        "prompt_opens_think": prompt_opens_think,
        "completion": completion.text,
        "tokens": completion.num_tokens,
        "thinking_tokens": think_tokens[0],
        "answer_tokens": think_tokens[1],
        "answer": grade.answer,
        "correct": bool(grade.correct),
        "formatted": bool(grade.formatted),
        "ungradable": bool(getattr(grade, "ungradable", False)),
        "truncated": not completion.finished,
        "forced": forced,
        "gen_seconds": gen_seconds,
    }


def summary_markdown(summary: dict, cfg: EvalConfig) -> str:
    """The summary as markdown tables (overall, per difficulty, majority vote)."""

    def f(x, spec=".1f"):
        return "-" if x is None else format(x, spec)

    acc = f"{100 * summary['accuracy']:.1f}" if summary["accuracy"] is not None else "-"
    se = f"{100 * summary['accuracy_se']:.1f}" if summary["accuracy_se"] is not None else "-"
    lines = [
        f"# Evaluation of `{cfg.model}` on `{cfg.data}`",
        "",
        f"{summary['n_problems']} problems x {summary['samples_per_problem']} samples, "
        f"temperature {cfg.temperature}, top-p {cfg.top_p}, max {cfg.max_new_tokens} new tokens"
        + (f", think budget {cfg.think_budget}" if cfg.think_budget else "")
        + ".",
        "",
        "| accuracy (%) | s.e. | mean tokens | median | p90 | thinking | answer | truncated (%) | tokens / correct | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {acc} | {se} | {f(summary['mean_tokens'])} | {f(summary['median_tokens'])} | "
        f"{f(summary['p90_tokens'])} | {f(summary['mean_thinking_tokens'])} | "
        f"{f(summary['mean_answer_tokens'])} | {f(100 * summary['truncation_rate'])} | "
        f"{f(summary['tokens_per_correct'])} | {f(summary['throughput_tokens_per_s'])} |",
    ]
    if summary.get("n_ungradable"):
        lines += [
            "",
            f"{summary['n_ungradable']} sample(s) could not be graded in bounded time "
            "(ungradable, counted as incorrect).",
        ]
    if summary["by_difficulty"]:
        lines += [
            "",
            "| difficulty | problems | accuracy (%) | s.e. | mean tokens | truncated (%) |",
            "|---|---|---|---|---|---|",
        ]
        for level, s in summary["by_difficulty"].items():
            se_l = f(100 * s["accuracy_se"]) if s["accuracy_se"] is not None else "-"
            lines.append(
                f"| {level} | {s['n_problems']} | {f(100 * s['accuracy'])} | {se_l} | "
                f"{f(s['mean_tokens'])} | {f(100 * s['truncation_rate'])} |"
            )
    if summary.get("vote"):
        v = summary["vote"]
        acc_v = f(100 * v["accuracy"]) if v["accuracy"] is not None else "-"
        lines += [
            "",
            f"Majority vote over {v['k']} samples (maj@{v['k']}): accuracy {acc_v} % "
            f"at {f(v['tokens_per_problem'])} tokens per problem ({v['groups']} groups).",
        ]
    return "\n".join(lines) + "\n"


def _generate_chunk(
    backend: Backend, cfg: EvalConfig, requests: list[Request]
) -> list[tuple[Completion, bool]]:
    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, 1, cfg.seed)
    if cfg.think_budget:
        return generate_with_budget(backend, requests, params, cfg.think_budget, cfg.budget_cue)
    return [(c, False) for c in backend.generate_requests(requests, params, progress=False)]


def evaluate(cfg: EvalConfig, backend: Backend | None = None) -> dict:
    """Run (or resume) an evaluation and return its summary (also written to ``cfg.out``).

    ``backend``: an already loaded `Backend` to reuse (its model must be ``cfg.model``);
    by default one is loaded only if there is something left to generate.
    """
    from tqdm.auto import tqdm

    validate(cfg)
    grader = get_grader(cfg.grader)
    problems = load_problems(
        cfg.data,
        cfg.problem_column,
        cfg.answer_column,
        cfg.id_column,
        cfg.difficulty_column,
        cfg.split,
        cfg.limit,
    )
    final = Path(cfg.out)
    settings = generation_settings(cfg)
    out, continued = prepare_out(final, settings, cfg.force)

    def write_settings() -> None:
        # Only once the model has loaded (or nothing is left to generate): a run that fails
        # before its first sample must not bind the folder to its settings.
        if not continued and out.exists():
            shutil.rmtree(out)  # an earlier forced run's samples, of other settings
        out.mkdir(parents=True, exist_ok=True)
        if out != final:
            (out / OWNER_FILE).write_text(json.dumps(owner_record()))
        atomic_write_text(
            out / SETTINGS_FILE,
            json.dumps(
                {"generation": settings, "all": dataclasses.asdict(cfg)}, indent=2, default=str
            )
            + "\n",
        )

    wanted = {(p.id, k) for p in problems for k in range(cfg.samples)}
    done: dict[tuple[str, int], dict] = {}
    for r in read_jsonl(out / SAMPLES_FILE) if continued else ():
        key = (str(r["id"]), int(r["sample"]))
        if key in wanted:
            done[key] = r
    pending = [(p, k) for p in problems for k in range(cfg.samples) if (p.id, k) not in done]

    if not pending:
        write_settings()
    else:
        backend = backend or load_backend(
            cfg.backend, cfg.model, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype,
            engine=EngineOptions.from_config(cfg),
        )  # fmt: skip
        write_settings()
        close_ids = backend.encode(THINK_CLOSE)
        # R1-style templates open the think block in the prompt itself (the answer contract).
        opened = resolve_prompt_opens_think(
            cfg.prompt_opens_think,
            backend.render,
            build_messages(PROBE_PROBLEM, cfg.prompt_template, cfg.system_prompt),
        )
        prompts: dict[str, list[int]] = {}
        for p, _ in pending:
            if p.id not in prompts:
                prompts[p.id] = backend.prompt_ids(
                    build_messages(p.problem, cfg.prompt_template, cfg.system_prompt)
                )
        # Longest prompts first, so a batch holds similar lengths (less padding).
        pending.sort(key=lambda pk: -len(prompts[pk[0].id]))
        # vLLM schedules its own batches; bigger chunks keep it busy between checkpoints.
        chunk = cfg.batch_size if backend.name == "hf" else max(cfg.batch_size, 512)
        bar = tqdm(
            total=len(wanted),
            initial=len(done),
            desc="eval",
            unit="sample",
            disable=not cfg.progress,
        )
        repair_tail(out / SAMPLES_FILE)
        with JsonlAppender(out / SAMPLES_FILE) as sink:
            for start in range(0, len(pending), chunk):
                part = pending[start : start + chunk]
                t0 = time.perf_counter()
                gens = _generate_chunk(backend, cfg, [Request(prompts[p.id], k) for p, k in part])
                seconds = time.perf_counter() - t0
                total = sum(c.num_tokens for c, _ in gens) or 1
                for (p, k), (c, forced) in zip(part, gens):
                    rec = make_record(
                        p,
                        k,
                        c,
                        grade_completion(grader, c.text, p.answer, opened),
                        think_split(c.token_ids, close_ids, opened or THINK_OPEN in c.text),
                        forced,
                        seconds * c.num_tokens / total,
                        opened,
                    )
                    sink.write(rec)
                    done[(p.id, k)] = rec
                bar.update(len(part))
        bar.close()

    records = [done[(p.id, k)] for p in problems for k in range(cfg.samples)]
    summary = summarize(records, vote_k=cfg.vote)
    summary.update(
        {
            "model": cfg.model,
            "data": cfg.data,
            "think_budget": cfg.think_budget,
            "temperature": cfg.temperature,
            "max_new_tokens": cfg.max_new_tokens,
        }
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", summary_markdown(summary, cfg))
    if out != final:  # a --force run is complete: only now does it replace the old output
        move_into_place(out, final)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evals.run",
        description="Evaluate a model on math-style problems: pass@1 (mean and s.e. over "
        "problems) against generated tokens. Resumable: rerun the same command after an "
        "interruption.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m evals.run --model runs/testbed/model --data "
        "runs/testbed/data/test.jsonl --grader testbed --samples 4 --max-new-tokens 512 "
        "--out runs/eval/base   (add --think-budget 128 or --vote 4 for the inference-time baselines)",
    )
    a = p.add_argument
    a(
        "--config",
        default=None,
        help="YAML recipe whose keys are these flags' names (e.g. "
        "configs/evals/paper_protocol.yaml); flags given on the command line win",
    )
    a("--model", help="model: local HF folder or Hub id (required, here or in --config)")
    a(
        "--data",
        help="problems: .jsonl / .parquet file, datasets.save_to_disk folder, "
        "Hub dataset id, or a preset (math500, aime24, amc23, gsm8k, olympiadbench, minerva)",
    )
    a(
        "--out",
        help="output folder (samples.jsonl, summary.json, summary.md, settings.json)",
    )
    a("--problem-column", default="problem", help="column holding the problem text")
    a("--answer-column", default="answer", help="column holding the reference answer")
    a(
        "--id-column",
        default=None,
        help="column with unique problem ids (default: id/unique_id, else row number)",
    )
    a(
        "--difficulty-column",
        default=None,
        help="column with difficulty levels (default: difficulty/level if present)",
    )
    a(
        "--split",
        default=None,
        help="split of a dataset folder or Hub dataset (presets know theirs)",
    )
    a("--limit", type=int, default=None, help="evaluate only the first N problems")
    a(
        "--grader",
        default="math",
        help="grader: math, testbed, or module:function returning evals.grading.Grade",
    )
    a(
        "--prompt-template",
        default=DEFAULT_PROMPT_TEMPLATE,
        help="user turn; {problem} is replaced by the problem",
    )
    a("--system-prompt", default=None, help="optional system turn")
    a(
        "--samples",
        type=int,
        default=1,
        help="samples per problem; pass@1 is averaged over them (papers: 16)",
    )
    a(
        "--max-new-tokens",
        type=int,
        default=4096,
        help="token limit per completion; longer ones count as truncated",
    )
    a("--temperature", type=float, default=0.6, help="sampling temperature; 0 = greedy")
    a("--top-p", type=float, default=0.95, help="nucleus sampling threshold")
    a(
        "--batch-size",
        type=int,
        default=32,
        help="sequences per generate call (hf); samples.jsonl is appended "
        "after each batch (vllm: at least 512 per chunk)",
    )
    a(
        "--seed",
        type=int,
        default=0,
        help="sampling seed; each sample is seeded from (seed, prompt, sample index)",
    )
    a(
        "--backend",
        choices=["hf", "vllm"],
        default="hf",
        help="generation engine (vllm: optional extra, GPU)",
    )
    a(
        "--dtype",
        default=None,
        help="model dtype: auto, float32, bfloat16, float16 (default: float32 on CPU, checkpoint's on GPU)",
    )
    a(
        "--device",
        default=None,
        help="device for the hf backend (default: cuda if available, else cpu)",
    )
    a(
        "--think-budget",
        type=int,
        default=None,
        help="budget forcing: stop thinking after B tokens, append "
        "--budget-cue and let the model answer (all tokens count)",
    )
    a(
        "--budget-cue",
        default=DEFAULT_CUE,
        help="text appended when the think budget is hit; starts with </think>",
    )
    a(
        "--vote",
        type=int,
        default=None,
        help="also report majority vote over K samples (needs --samples >= K) "
        "with the tokens it spends",
    )
    a(
        "--prompt-opens-think",
        choices=PROMPT_OPENS_THINK,
        default="auto",
        help="whether the chat template opens the think block in the prompt (DeepSeek-R1-Distill, "
        "QwQ: the completion holds only '... </think> answer'); then a completion that never "
        "writes </think> has no answer. auto: render the generation prompt and check whether it "
        "ends with an unclosed <think>",
    )
    add_engine_arguments(p)
    a("--force", action="store_true", help="delete an existing --out and start over")
    a("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    a(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="upload the output folder as a Hub dataset repo",
    )
    a("--private", action="store_true", help="make the --push-to-hub repo private")
    return p


def parse_config(argv: Sequence[str] | None = None) -> tuple[EvalConfig, dict]:
    """Flags, with ``--config`` YAML values as their defaults -> (EvalConfig, CLI-only options)."""
    p = build_parser()
    pre, _ = p.parse_known_args(argv)
    if pre.config:
        path = Path(pre.config)
        values = read_yaml_mapping(path, "configs/evals/")
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        dests = {a.dest for a in p._actions} - {"help", "config"}
        unknown = sorted(set(values) - dests)
        if unknown:
            raise ShortcotError(
                f"unknown key(s) {', '.join(unknown)} in {path}; valid keys: {', '.join(sorted(dests))}"
            )
        for action in p._actions:  # YAML strings for numeric flags get argparse's conversion
            if action.dest in values and action.type and isinstance(values[action.dest], str):
                try:
                    values[action.dest] = action.type(values[action.dest])
                except ValueError:
                    raise ShortcotError(
                        f"{path}: {action.dest} {values[action.dest]!r} is not a valid "
                        f"{action.type.__name__}; fix the value in the config file"
                    ) from None
        p.set_defaults(**values)
    args = vars(p.parse_args(argv))
    args.pop("config")
    missing = [f"--{k}" for k in ("model", "data", "out") if not args.get(k)]
    if missing:
        raise ShortcotError(f"{', '.join(missing)} required (on the command line or in --config)")
    options = {"push_to_hub": args.pop("push_to_hub"), "private": args.pop("private")}
    return EvalConfig(**args), options


def main(argv: Sequence[str] | None = None) -> int:
    cfg, options = parse_config(argv)
    summary = evaluate(cfg)
    print((Path(cfg.out) / "summary.md").read_text(), end="")
    n_p, n_s = summary["n_problems"], summary["n_samples"]
    print(f"wrote {cfg.out}/summary.json ({n_p} problems, {n_s} samples)")
    if options["push_to_hub"]:
        from artifacts.hub import push_folder

        url = push_folder(
            cfg.out, options["push_to_hub"], private=options["private"], repo_type="dataset"
        )
        print(f"pushed to {url}")
    return 0


if __name__ == "__main__":
    run_cli(main)
