"""The output folder of an ``evals.run``: whether it may be continued (its samples were made
with the same generation settings), where a ``--force`` run writes until it is complete
(`staging_dir`), and repairing a torn last record so that a resume appends cleanly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from artifacts.errors import ShortcotError
from artifacts.outdir import OWNER_FILE, check_writable, owner_is_dead, remove_stale_temporaries
from evals.config import settings_diff

SAMPLES_FILE = "samples.jsonl"
SETTINGS_FILE = "settings.json"


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
