"""JSON-lines records that survive interruption: append one line per finished item and
flush, so a rerun reads back what is done and continues (resume for long jobs)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the records of ``path``; a torn last line (from an interrupted write) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Write ``records`` to ``path``, one JSON object a line (the one JSONL writer).

    Non-ASCII text is kept as is (``ensure_ascii=False``); for ASCII records the bytes are
    those of ``json.dumps``' defaults.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


class JsonlAppender:
    """Append records one by one, flushed and fsynced, for resumable generation."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
