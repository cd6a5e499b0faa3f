"""Output folders that are either complete or absent.

Every command writes into a temporary sibling folder (same filesystem, so the final
`os.replace` is atomic) and moves it into place only when everything succeeded. An existing
output is never replaced without ``force``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from artifacts.errors import ShortcotError


def check_output(out: str | os.PathLike, force: bool) -> Path:
    """Fail early (before any work) if ``out`` exists and ``force`` is not set."""
    out = Path(out)
    if out.exists() and not force:
        raise ShortcotError(
            f"output {out} already exists; pass --force to overwrite it or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise ShortcotError(
            f"output {out} exists and is not a folder; remove it or choose another --out"
        )
    return out


def check_free_space(folder: str | os.PathLike, needed_bytes: int) -> None:
    """Fail before writing if the filesystem holding ``folder`` has less than ``needed_bytes`` free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise ShortcotError(
            f"not enough disk space at {probe}: need {needed_bytes / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB free; free some space or choose another --out"
        )


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``out``; on success move it to ``out``.

    On any exception the temporary folder is removed and ``out`` is left as it was.
    """
    out = check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():  # only reachable with force
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file via a temporary sibling so a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)
