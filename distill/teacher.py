"""Where the raw reasoning chains come from: a model sampled now, or traces on disk.

Sampling is resumable: the samples of each finished chunk of problems are appended to
``work_dir/samples.jsonl`` (flushed and fsynced, `artifacts.jsonl.JsonlAppender`); a rerun
reads them back and samples only the problems still missing. The backends seed each
sample from (seed, prompt, sample index) (`evals.backends.sample_seed`), so a resumed run
produces the samples an uninterrupted one would. Each record carries the problem and its
reference, so ``samples.jsonl`` is itself a valid ``--teacher`` for another build (for
example with a different strategy) without sampling again.

Trace files written by others are read leniently: field names have aliases (`FIELDS`),
and a record that lacks what is needed is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from artifacts.errors import ShortcotError
from artifacts.jsonl import JsonlAppender, read_jsonl
from artifacts.outdir import atomic_write_text
from evals.prompts import DEFAULT_PROMPT_TEMPLATE, build_messages

# Accepted field names, first present wins (our samples.jsonl, evals.run's samples.jsonl,
# and the usual names of published trace dumps).
FIELDS = {
    "id": ("id", "problem_id", "unique_id", "idx"),
    "completion": ("completion", "text", "response", "output", "generation"),
    "problem": ("problem", "question", "prompt_text"),
    # evals.run's samples.jsonl has both: "reference" (the gold) and "answer" (the extracted one)
    "answer": ("reference", "gold", "answer", "solution_answer"),
    "sample": ("sample", "sample_index", "sample_idx"),
    "difficulty": ("difficulty", "level"),
}


@dataclass
class ProblemInfo:
    id: str
    problem: str | None
    answer: str | None
    difficulty: str | int | None = None


@dataclass
class RawTrace:
    """One teacher sample as read from disk, before grading."""

    id: str
    sample: int
    completion: str
    num_tokens: int | None
    finished: bool


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
        ntok = rec.get("num_tokens")
        group.append(
            RawTrace(
                id=pid,
                sample=int(sample) if isinstance(sample, int) else len(group),
                completion=text,
                num_tokens=int(ntok) if isinstance(ntok, int | float) else None,
                finished=True if finished is None else bool(finished),
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


def sample_teacher(
    backend,
    problems: Sequence[ProblemInfo],
    params,
    work_dir: str | os.PathLike,
    teacher: str,
    template: str = DEFAULT_PROMPT_TEMPLATE,
    chunk_size: int = 64,
) -> Path:
    """Sample ``params.n`` completions per problem into ``work_dir/samples.jsonl``, resuming.

    ``work_dir/settings.json`` pins the teacher and sampling settings: resuming with other
    settings would mix two distributions in one file, so it is refused.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    settings = {"teacher": teacher, "sampling": asdict(params), "template": template}
    spath = work / "settings.json"
    if spath.exists():
        old = json.loads(spath.read_text())
        if old != settings:
            raise ShortcotError(
                f"{work} holds samples made with other settings ({old}); use the same settings, "
                "another --work-dir, or delete that folder to start over"
            )
    else:
        atomic_write_text(spath, json.dumps(settings, indent=2))
    out = work / "samples.jsonl"
    counts = Counter(r.get("id") for r in read_jsonl(out))
    todo = [p for p in problems if counts.get(p.id, 0) < params.n]
    if len(todo) < len(problems):
        print(
            f"resuming: {len(problems) - len(todo)} of {len(problems)} problems already sampled in {out}"
        )
    with (
        JsonlAppender(out) as app,
        tqdm(total=len(todo), desc="sampling teacher", unit="problem") as bar,
    ):
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            # A problem sampled only partly before an interruption is sampled again in
            # full; its partial records are superseded (the reader keeps the last n).
            outs = backend.generate(
                [build_messages(p.problem, template) for p in chunk], params, progress=False
            )
            for p, comps in zip(chunk, outs):
                for k, c in enumerate(comps):
                    app.write(
                        {
                            "id": p.id,
                            "problem": p.problem,
                            "reference": p.answer,
                            "difficulty": p.difficulty,
                            "sample": k,
                            "completion": c.text,
                            "num_tokens": c.num_tokens,
                            "finished": c.finished,
                            "teacher": teacher,
                        }
                    )
            bar.update(len(chunk))
    return out


def dedupe_samples(traces: dict[str, list[RawTrace]]) -> dict[str, list[RawTrace]]:
    """Keep one trace per (problem, sample index), the last written (see `sample_teacher`)."""
    out = {}
    for pid, group in traces.items():
        by_index = {t.sample: t for t in group}
        out[pid] = [by_index[k] for k in sorted(by_index)]
    return out
