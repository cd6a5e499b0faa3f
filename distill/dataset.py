"""The compressed-CoT dataset: rows in chat format, their statistics, and saving them (the
save step of `distill.build`, `save_dataset`).

Each row is what TRL's `SFTTrainer` takes as is (a conversational dataset):
``messages`` = the problem's prompt turn(s) + the assistant turn holding the compressed
completion, plus bookkeeping columns (``id``, ``answer``, ``difficulty``,
``original_tokens``, ``compressed_tokens``, ``compression_ratio``,
``mean_sample_tokens``, ``sample``, ``strategy``, ``teacher``). SFTTrainer keeps only the
columns it needs (`remove_unused_columns`), so the extra ones are harmless.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from pathlib import Path

from artifacts.cards import public_ref, write_dataset_card
from artifacts.errors import ShortcotError
from artifacts.outdir import atomic_output_dir

FORMATS = ("disk", "jsonl", "parquet")
DATA_FILES = {"jsonl": "data.jsonl", "parquet": "data.parquet"}


def make_row(
    prompt: list[dict],
    completion: str,
    *,
    problem_id: str,
    answer: str,
    difficulty,
    original_tokens: int,
    compressed_tokens: int,
    mean_sample_tokens: float,
    sample: int,
    strategy: str,
    teacher: str,
) -> dict:
    return {
        "messages": [*prompt, {"role": "assistant", "content": completion}],
        "id": problem_id,
        "answer": str(answer),
        "difficulty": None if difficulty is None else str(difficulty),
        "original_tokens": int(original_tokens),
        "compressed_tokens": int(compressed_tokens),
        "compression_ratio": compressed_tokens / original_tokens if original_tokens else 1.0,
        "mean_sample_tokens": float(mean_sample_tokens),
        "sample": int(sample),
        "strategy": strategy,
        "teacher": teacher,
    }


def summarize(
    rows: list[dict],
    n_problems: int,
    problem_drops: Counter,
    sample_drops: Counter,
    notes: Counter,
    unparsable: Counter,
    n_samples: int,
    mean_tokens_all: float | None,
    mean_tokens_correct: float | None,
) -> dict:
    """The build summary: kept/dropped counts with reasons and the compression ratios.

    compression_ratio:        sum(compressed) / sum(original), over the kept examples, where
                              original is the very trace each example was cut from.
    ratio_vs_mean_sample:     mean(compressed) / mean tokens of all of the teacher's samples:
                              what shortest-of-N gains is visible here, not in the above.
    """
    orig = sum(r["original_tokens"] for r in rows)
    comp = sum(r["compressed_tokens"] for r in rows)
    mean_comp = statistics.fmean(r["compressed_tokens"] for r in rows) if rows else None
    return {
        "problems": n_problems,
        "kept_problems": len({r["id"] for r in rows}),
        "examples": len(rows),
        "dropped_problems": dict(problem_drops.most_common()),
        "samples": n_samples,
        "dropped_samples": dict(sample_drops.most_common()),
        "skipped_records": dict(unparsable.most_common()),
        "notes": dict(notes.most_common()),
        "mean_original_tokens": orig / len(rows) if rows else None,
        "mean_compressed_tokens": mean_comp,
        "compression_ratio": comp / orig if orig else None,
        "mean_tokens_all_samples": mean_tokens_all,
        "mean_tokens_correct_samples": mean_tokens_correct,
        "ratio_vs_mean_sample": mean_comp / mean_tokens_all
        if mean_comp and mean_tokens_all
        else None,
    }


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def summary_markdown(summary: dict) -> str:
    """The summary as markdown tables (printed, saved, and put in the dataset card)."""
    keys = [
        "problems",
        "kept_problems",
        "examples",
        "samples",
        "mean_tokens_all_samples",
        "mean_tokens_correct_samples",
        "mean_original_tokens",
        "mean_compressed_tokens",
        "compression_ratio",
        "ratio_vs_mean_sample",
    ]
    lines = ["| statistic | value |", "|---|---|"] + [f"| {k} | {_fmt(summary[k])} |" for k in keys]
    for title, key in (
        ("dropped problems", "dropped_problems"),
        ("dropped samples", "dropped_samples"),
        ("skipped records (unparsable, or not in --data)", "skipped_records"),
        ("notes", "notes"),
    ):
        if summary[key]:
            lines += ["", f"| {title} | count |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in summary[key].items()]
    return "\n".join(lines)


def save_rows(rows: list[dict], folder: Path, fmt: str) -> None:
    """Save ``rows`` into ``folder`` as a `datasets` save_to_disk folder, data.jsonl or
    data.parquet."""
    from datasets import Dataset

    if fmt not in FORMATS:
        raise ShortcotError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not rows:
        raise ShortcotError(
            "no example survived (see the summary above for the reasons); sample more per problem, "
            "check the grader and --data, or relax the strategy options"
        )
    ds = Dataset.from_list(rows)
    if fmt == "disk":
        ds.save_to_disk(str(folder))
    elif fmt == "jsonl":
        ds.to_json(str(folder / DATA_FILES["jsonl"]), lines=True, force_ascii=False)
    else:
        ds.to_parquet(str(folder / DATA_FILES["parquet"]))


def save_dataset(
    out: str, rows: list[dict], summary: dict, *, fmt: str, force: bool, teacher: str, recipe: dict
) -> None:
    """Write the dataset folder ``out`` atomically: the rows in ``fmt`` (`save_rows`),
    ``summary.json`` / ``summary.md``, the settings (``build_config.json``, ``recipe``) and
    the dataset card. Prints the summary table first, so a build that kept nothing shows why."""
    strategy_name = summary["strategy"]
    table = summary_markdown(summary)
    print(table)
    with atomic_output_dir(out, force=force) as tmp:
        save_rows(rows, tmp, fmt)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        (tmp / "summary.md").write_text(table + "\n")
        (tmp / "build_config.json").write_text(json.dumps(recipe, indent=2, default=str))
        write_dataset_card(
            tmp,
            title=f"Compressed reasoning chains ({strategy_name})",
            summary=(
                f"{len(rows)} verified-correct reasoning chains from `{public_ref(teacher)}`, compressed with "
                f"`{strategy_name}` (shortcot `distill.build`). Chat format (`messages`), ready for TRL's "
                "SFTTrainer; per-example original and compressed token counts are columns."
            ),
            recipe=recipe,
            stats_table=table,
            source_models=[teacher],
        )


def load_rows(spec: str | os.PathLike, split: str = "train"):
    """Load a dataset written by `save_rows` (any format), a .jsonl/.parquet file, or a Hub
    dataset id, as a `datasets.Dataset`."""
    import datasets

    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(p))
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        for name in DATA_FILES.values():
            if (p / name).exists():
                return load_rows(p / name)
        raise ShortcotError(
            f"{p} holds no dataset (no dataset_info.json, data.jsonl or data.parquet); pass the --out of distill.build"
        )
    if p.is_file():
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(p.suffix)
        if kind is None:
            raise ShortcotError(
                f"{p}: unsupported file type; use .jsonl, .parquet or a dataset folder"
            )
        return datasets.load_dataset(kind, data_files=str(p), split="train")
    spec_s = str(spec)
    if spec_s.startswith((".", "/", "~")) or spec_s.count("/") != 1:
        raise ShortcotError(
            f"{spec_s} does not exist; pass the --out folder of distill.build or a Hub dataset id"
        )
    try:
        return datasets.load_dataset(spec_s, split=split)
    except Exception as err:
        raise ShortcotError(
            f"cannot load dataset {spec_s!r} ({type(err).__name__}); check the id and your network"
        ) from err
