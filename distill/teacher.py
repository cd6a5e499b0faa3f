"""The sample step of `distill.build`: where the raw reasoning chains come from, a model
sampled now or traces on disk (`sample`, which hands plain data, `Samples`, to the
compress step).

A model teacher is sampled by the evaluation's engine, `evals.run.evaluate` (`sample_teacher`),
so prompts (system prompt and chat template included: the teacher sees exactly the prompt
the student is then trained on), per-sample seeding, resuming (a torn last line repaired)
and the answer contract are the same code as in evaluation. Its work folder is an
``evals.run`` output folder: ``settings.json`` pins the sampling settings (a resume with
other settings is refused), ``samples.jsonl`` holds one record per sample with the
problem, its reference and whether the prompt opened the think block, so it is itself a
valid ``--teacher`` for another build (for example with a different strategy) without
sampling again, and ``summary.md`` reports the teacher's accuracy and lengths.

Trace files written by others are read leniently: field names have aliases (`FIELDS`),
and a record that lacks what is needed is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from artifacts.errors import ShortcotError

if TYPE_CHECKING:
    from distill.build_config import BuildConfig

# Accepted field names, first present wins (evals.run's samples.jsonl, which is also the
# work folder's, and the usual names of published trace dumps).
FIELDS = {
    "id": ("id", "problem_id", "unique_id", "idx"),
    "completion": ("completion", "text", "response", "output", "generation"),
    "problem": ("problem", "question", "prompt_text"),
    # evals.run's samples.jsonl has both: "reference" (the gold) and "answer" (the extracted one)
    "answer": ("reference", "gold", "answer", "solution_answer"),
    "sample": ("sample", "sample_index", "sample_idx"),
    "difficulty": ("difficulty", "level"),
    "num_tokens": ("num_tokens", "tokens"),
}


@dataclass
class ProblemInfo:
    id: str
    problem: str | None
    answer: str | None
    difficulty: str | int | None = None


@dataclass
class RawTrace:
    """One teacher sample as read from disk, before grading.

    prompt_opens_think: the record says whether the teacher's prompt opened the think
    block (evals.run writes it); None when it does not say.
    """

    id: str
    sample: int
    completion: str
    num_tokens: int | None
    finished: bool
    prompt_opens_think: bool | None = None


def _field(rec: dict, name: str):
    for key in FIELDS[name]:
        if key in rec and rec[key] is not None:
            return rec[key]
    return None


def is_trace_source(path: str | os.PathLike) -> bool:
    """True when ``path`` is a JSONL file, or a folder holding ``*.jsonl`` but no model."""
    p = Path(path)
    if p.is_file():
        return p.suffix == ".jsonl"
    return p.is_dir() and not (p / "config.json").exists() and any(p.glob("*.jsonl"))


def trace_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    preferred = p / "samples.jsonl"  # our work folder and evals.run's output folder
    return [preferred] if preferred.exists() else sorted(p.glob("*.jsonl"))


def parse_trace_records(
    records: Sequence, problems: dict[str, ProblemInfo] | None = None
) -> tuple[dict[str, ProblemInfo], dict[str, list[RawTrace]], Counter]:
    """Group trace records by problem; returns (problems, traces by problem id, skipped).

    A record needs an id and a completion string; the problem text and reference come from
    the record or, failing that, from ``problems`` (the ``--data`` of the build). When
    ``problems`` is given, only its problems are used (the others are counted as "not in
    --data"). Records that cannot be used are counted in ``skipped`` by reason.
    """
    restrict = problems is not None
    problems = dict(problems or {})
    traces: dict[str, list[RawTrace]] = {}
    skipped: Counter = Counter()
    for rec in records:
        if not isinstance(rec, dict):
            skipped["unparsable: not a JSON object"] += 1
            continue
        pid = _field(rec, "id")
        text = _field(rec, "completion")
        if pid is None:
            skipped["unparsable: no id"] += 1
            continue
        if not isinstance(text, str):
            skipped["unparsable: no completion text"] += 1
            continue
        pid = str(pid)
        info = problems.get(pid)
        if info is None and restrict:
            skipped["not in --data (skipped)"] += 1
            continue
        answer = _field(rec, "answer")
        problem = _field(rec, "problem")
        if info is None:
            info = ProblemInfo(
                pid, problem, None if answer is None else str(answer), _field(rec, "difficulty")
            )
            problems[pid] = info
        if info.answer is None and answer is not None:
            info.answer = str(answer)
        if info.problem is None and isinstance(problem, str):
            info.problem = problem
        if info.answer is None:
            skipped["unparsable: no reference answer (pass --data to join one)"] += 1
            continue
        if not isinstance(info.problem, str):
            skipped["unparsable: no problem text (pass --data to join one)"] += 1
            continue
        finished = rec.get("finished")
        if finished is None and "truncated" in rec:
            finished = not rec["truncated"]
        group = traces.setdefault(pid, [])
        sample = _field(rec, "sample")
        ntok = _field(rec, "num_tokens")
        opened = rec.get("prompt_opens_think")
        group.append(
            RawTrace(
                id=pid,
                sample=int(sample) if isinstance(sample, int) else len(group),
                completion=text,
                num_tokens=int(ntok) if isinstance(ntok, int | float) else None,
                finished=True if finished is None else bool(finished),
                prompt_opens_think=opened if isinstance(opened, bool) else None,
            )
        )
    problems = {k: v for k, v in problems.items() if k in traces}
    return problems, traces, skipped


def read_traces(path: str | os.PathLike, problems: dict[str, ProblemInfo] | None = None):
    """`parse_trace_records` over the JSONL file(s) at ``path``; torn or non-JSON lines count
    as unparsable too."""
    records: list = []
    bad = 0
    for f in trace_files(path):
        with open(f) as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    bad += 1
    if not records and not bad:
        raise ShortcotError(f"no trace records in {path}; pass a JSONL file of traces or a model")
    problems_out, traces, skipped = parse_trace_records(records, problems)
    if bad:
        skipped["unparsable: not valid JSON"] += bad
    return problems_out, traces, skipped


def sample_teacher(eval_config, backend=None) -> Path:
    """Sample the teacher with the evaluation's engine (`evals.run.evaluate`, resumable)
    into ``eval_config.out``; returns its ``samples.jsonl``. ``backend``: an already loaded
    `evals.backends.Backend` (by default one is loaded if anything is left to sample)."""
    from evals.run import SAMPLES_FILE, evaluate

    evaluate(eval_config, backend=backend)
    return Path(eval_config.out) / SAMPLES_FILE


def dedupe_samples(traces: dict[str, list[RawTrace]]) -> dict[str, list[RawTrace]]:
    """Keep one trace per (problem, sample index), the last written (a trace file may
    hold a sample twice, e.g. several runs appended to one file)."""
    out = {}
    for pid, group in traces.items():
        by_index = {t.sample: t for t in group}
        out[pid] = [by_index[k] for k in sorted(by_index)]
    return out


# ---------------------------------------------------------------------------- the step


@dataclass
class Samples:
    """What the sample step hands to the compress step.

    problems:   the problems that have traces, by id.
    traces:     each problem's traces, one per sample index (`dedupe_samples`).
    unparsable: records skipped, by reason.
    tokenizer:  the model whose tokenizer counts tokens; None: whitespace words.
    work_dir:   the teacher's evals.run folder (its samples.jsonl is reusable as
                ``--teacher``); None when the traces came from a file.
    """

    problems: dict[str, ProblemInfo]
    traces: dict[str, list[RawTrace]]
    unparsable: Counter
    tokenizer: str | None
    work_dir: Path | None

    @property
    def from_traces(self) -> bool:
        return self.work_dir is None


def teacher_eval_config(cfg: BuildConfig, work_dir: Path):
    """The `evals.run.EvalConfig` that samples a model teacher into ``work_dir``: the same
    problems, prompt (template and system prompt), sampling settings, grader and answer
    contract as the build, and its engine options (`evals.backends.EngineOptions`)."""
    import dataclasses

    from evals.backends import EngineOptions
    from evals.run import EvalConfig

    settings = dict(
        model=cfg.teacher,
        data=cfg.data,
        out=str(work_dir),
        problem_column=cfg.problem_column,
        answer_column=cfg.answer_column,
        id_column=cfg.id_column,
        split=cfg.split,
        limit=cfg.limit,
        grader=cfg.grader,
        prompt_template=cfg.prompt_template,
        system_prompt=cfg.system_prompt,
        samples=cfg.samples,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
        prompt_opens_think=cfg.prompt_opens_think,
    )
    # every engine field (backend, batch size, dtype, device, vLLM's options)
    settings.update(dataclasses.asdict(EngineOptions.from_config(cfg)))
    return EvalConfig(**settings)


def load_problem_infos(cfg: BuildConfig) -> dict[str, ProblemInfo]:
    from evals.data import load_problems

    probs = load_problems(
        cfg.data,
        problem_column=cfg.problem_column,
        answer_column=cfg.answer_column,
        id_column=cfg.id_column,
        split=cfg.split,
        limit=cfg.limit,
    )
    return {p.id: ProblemInfo(p.id, p.problem, p.answer, p.difficulty) for p in probs}


def sample(cfg: BuildConfig) -> Samples:
    """Sample the teacher model into the work folder (resumable), or read its trace file."""
    teacher_path = Path(cfg.teacher).expanduser()
    from_traces = teacher_path.exists() and is_trace_source(teacher_path)

    problems = load_problem_infos(cfg) if cfg.data else None
    if from_traces:
        tokenizer = cfg.tokenizer
        work_dir = None
        problems, raw, unparsable = read_traces(teacher_path, problems)
        if cfg.limit is not None and not cfg.data:
            keep = list(raw)[: cfg.limit]
            raw = {k: raw[k] for k in keep}
    else:
        if problems is None:
            raise ShortcotError(
                "--data is required when --teacher is a model; pass a problems file or preset"
            )
        work_dir = Path(cfg.work_dir or f"{cfg.out.rstrip('/')}.work")
        samples_path = sample_teacher(teacher_eval_config(cfg, work_dir))
        tokenizer = cfg.tokenizer or cfg.teacher
        wanted = set(problems)
        problems, raw, unparsable = read_traces(samples_path, problems)
        raw = {k: v for k, v in raw.items() if k in wanted}
    raw = dedupe_samples(raw)
    return Samples(problems, raw, unparsable, tokenizer, work_dir)
