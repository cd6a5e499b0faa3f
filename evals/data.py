"""Evaluation problems: local files or named benchmark presets, as a list of `Problem`.

    load_problems("runs/testbed/data/test.jsonl")            # local JSONL
    load_problems("data/test.parquet", problem_column="question")
    load_problems("my_dataset_dir", split="test")              # datasets.save_to_disk folder
    load_problems("math500", limit=50)                         # preset, loaded from the Hub

Presets carry their Hub id, config, split and column mapping (the benchmarks of
docs/algorithms.md §5). They are downloaded only when named, through
``datasets.load_dataset`` (which honours ``HF_HUB_OFFLINE`` and its cache); without
network and cache the error says so in one line. Columns called ``difficulty`` or
``level`` become `Problem.difficulty` without being asked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from artifacts.errors import ShortcotError


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    difficulty: str | int | None = None


def _gsm8k_answer(text: str) -> str:
    """GSM8K solutions end with ``#### 42``; the reference is what follows (commas removed).

    >>> _gsm8k_answer("so 6 * 7 = 42\\n#### 1,042")
    '1042'
    """
    return text.rsplit("####", 1)[-1].strip().replace(",", "")


def _strip_dollars(text: str) -> str:
    """OlympiadBench answers come wrapped in ``$...$`` (and sometimes as a list).

    >>> _strip_dollars("$\\\\frac{1}{2}$")
    '\\\\frac{1}{2}'
    """
    return text.strip().strip("$").strip()


@dataclass(frozen=True)
class Preset:
    """A benchmark on the Hub: where it lives and which columns hold what.

    The column fields list candidates, first present wins, so a re-upload that renames
    ``question`` to ``problem`` keeps working.
    """

    hub_id: str
    split: str
    config: str | None = None
    problem_columns: tuple[str, ...] = ("problem", "question")
    answer_columns: tuple[str, ...] = ("answer",)
    id_columns: tuple[str, ...] = ("unique_id", "id")
    answer_fn: Callable[[str], str] | None = None
    note: str = ""


PRESETS: dict[str, Preset] = {
    "math500": Preset("HuggingFaceH4/MATH-500", "test", note="500 MATH problems, level 1-5"),
    "aime24": Preset("HuggingFaceH4/aime_2024", "train", note="30 AIME 2024 problems"),
    "amc23": Preset("math-ai/amc23", "test", note="40 AMC 2023 problems"),
    "gsm8k": Preset(
        "openai/gsm8k",
        "test",
        config="main",
        problem_columns=("question",),
        answer_fn=_gsm8k_answer,
        note="1319 grade-school problems",
    ),
    "olympiadbench": Preset(
        "math-ai/olympiadbench",
        "test",
        answer_columns=("final_answer", "answer"),
        answer_fn=_strip_dollars,
        note="674 OlympiadBench open-ended math (English)",
    ),
    "minerva": Preset("math-ai/minervamath", "test", note="272 Minerva-Math problems"),
}

DIFFICULTY_COLUMNS = ("difficulty", "level")


def _read_local(path: Path, split: str | None) -> list[dict]:
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as err:
            raise ShortcotError(
                f"{path} is not a datasets.save_to_disk folder ({type(err).__name__}); pass a "
                ".jsonl or .parquet file or a saved dataset folder"
            ) from err
        if isinstance(ds, datasets.DatasetDict):
            if split is None:
                if len(ds) != 1:
                    raise ShortcotError(f"{path} has splits {sorted(ds)}; choose one with --split")
                split = next(iter(ds))
            if split not in ds:
                raise ShortcotError(f"{path} has no split {split!r}; choose one of {sorted(ds)}")
            ds = ds[split]
        return ds.to_list()
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        import json

        text = path.read_text()
        if suffix == ".json" and text.lstrip().startswith("["):  # one JSON array of rows
            try:
                return list(json.loads(text))
            except json.JSONDecodeError as err:
                raise ShortcotError(f"{path} is not valid JSON ({err.msg}); fix the file") from err
        rows = []
        with path.open() as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ShortcotError(
                            f"{path} line {n} is not valid JSON ({err.msg}); fix the file"
                        ) from err
        return rows
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ShortcotError(
        f"cannot read {path}: use a .jsonl, .parquet or datasets.save_to_disk folder"
    )


def _read_hub(hub_id: str, config: str | None, split: str) -> list[dict]:
    import datasets

    try:
        return datasets.load_dataset(hub_id, config, split=split).to_list()
    except Exception as err:  # offline, gated, renamed: one line with the way out
        raise ShortcotError(
            f"cannot load {hub_id} (split {split}) from the Hub or the cache "
            f"({type(err).__name__}); check the network / HF_HUB_OFFLINE, or pass a local "
            ".jsonl / .parquet file"
        ) from err


def _pick(row: dict, candidates: tuple[str, ...], what: str, source: str) -> str:
    for c in candidates:
        if c in row:
            return c
    raise ShortcotError(
        f"{source} has no {what} column (looked for {', '.join(candidates)}; columns: "
        f"{', '.join(sorted(row))}); name it with --{what}-column"
    )


def _as_text(value, fn: Callable[[str], str] | None = None) -> str:
    """A reference answer as text; ``fn`` cleans each part (preset-specific)."""
    if isinstance(value, list | tuple):  # multi-answer references, e.g. OlympiadBench
        return ", ".join(_as_text(v, fn) for v in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # AMC answers stored as floats: 27.0 -> "27"
    return fn(str(value)) if fn else str(value)


def load_problems(
    spec: str | os.PathLike,
    problem_column: str = "problem",
    answer_column: str = "answer",
    id_column: str | None = None,
    difficulty_column: str | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Load evaluation problems from a local file/folder, a preset name or a Hub dataset id.

    spec: ``.jsonl`` / ``.json`` (lines or one array) / ``.parquet`` file, ``datasets.save_to_disk`` folder, a key of
        `PRESETS`, or a Hub dataset id ``owner/name`` (then ``split`` defaults to "test").
    problem_column / answer_column: where the problem text and the reference answer are;
        presets use their own mapping unless these are changed from the defaults.
    id_column: a unique id per problem; default ``id`` / ``unique_id`` if present, else the
        row number.
    difficulty_column: default ``difficulty`` or ``level`` if present.
    limit: keep the first ``limit`` problems (file order).
    """
    if limit is not None and limit < 1:
        raise ShortcotError(f"limit must be >= 1, got {limit}")
    spec_s = str(spec)
    path = Path(spec_s).expanduser()
    preset = PRESETS.get(spec_s.lower()) if not path.exists() else None
    problem_cols: tuple[str, ...] = (problem_column,)
    answer_cols: tuple[str, ...] = (answer_column,)
    id_cols: tuple[str, ...] = (id_column,) if id_column else ("id",)
    answer_fn = None
    if path.exists():
        rows = _read_local(path, split)
    elif preset is not None:
        rows = _read_hub(preset.hub_id, preset.config, split or preset.split)
        if problem_column == "problem":
            problem_cols = preset.problem_columns
        if answer_column == "answer":
            answer_cols = preset.answer_columns
        if not id_column:
            id_cols = preset.id_columns
        answer_fn = preset.answer_fn
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", spec_s) and not spec_s.startswith("."):
        rows = _read_hub(spec_s, None, split or "test")
    else:
        raise ShortcotError(
            f"data {spec_s!r} is neither a file/folder nor a preset; use a .jsonl/.parquet "
            f"path, a saved dataset folder, a Hub id or one of {sorted(PRESETS)}"
        )
    if not rows:
        raise ShortcotError(f"data {spec_s} holds no rows; check the file or the --split")
    if limit is not None:
        rows = rows[:limit]
    first = rows[0]
    pcol = _pick(first, problem_cols, "problem", spec_s)
    acol = _pick(first, answer_cols, "answer", spec_s)
    icol = next((c for c in id_cols if c in first), None)
    if id_column and icol is None:
        raise ShortcotError(
            f"{spec_s} has no id column {id_column!r}; columns: {', '.join(sorted(first))}"
        )
    if difficulty_column and difficulty_column not in first:
        raise ShortcotError(
            f"{spec_s} has no difficulty column {difficulty_column!r}; columns: {', '.join(sorted(first))}"
        )
    dcol = difficulty_column or next((c for c in DIFFICULTY_COLUMNS if c in first), None)

    problems = []
    seen: set[str] = set()
    for n, row in enumerate(rows):
        if row.get(pcol) is None or row.get(acol) is None:
            raise ShortcotError(
                f"{spec_s} row {n} has no {pcol!r} or {acol!r}; fill or drop that row"
            )
        answer = _as_text(row[acol], answer_fn)
        pid = str(row[icol]) if icol is not None else str(n)
        if pid in seen:
            raise ShortcotError(
                f"{spec_s} has the id {pid!r} twice; ids must be unique (see --id-column)"
            )
        seen.add(pid)
        difficulty = row.get(dcol) if dcol else None
        problems.append(Problem(pid, str(row[pcol]), answer, difficulty))
    return problems
