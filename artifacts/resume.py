"""Resuming a training run from the checkpoints in its work folder (`train.rl`,
`distill.sft`), and telling the pipeline whether there is something to resume.

A checkpoint (``checkpoint-<step>``, written by the transformers Trainer) is complete
when its ``trainer_state.json`` parses: the Trainer writes that file last, so a run killed
while saving leaves a checkpoint without it. Incomplete checkpoints are never resumed
from; `prepare_work_dir` removes those newer than the last complete one.

The settings a work folder's checkpoints were made with are recorded in it
(`SETTINGS_FILE`); ``--resume`` with other settings is refused (keys such as the number
of steps, which only extend or log a run, may change).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from artifacts.errors import ShortcotError

SETTINGS_FILE = "shortcot_run_settings.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _step(path: Path) -> int:
    m = _CHECKPOINT.match(path.name)
    return int(m.group(1)) if m else -1


def checkpoint_dirs(work: str | Path) -> list[Path]:
    """Every ``checkpoint-<step>`` folder in ``work``, complete or not, by step."""
    work = Path(work)
    if not work.is_dir():
        return []
    found = [p for p in work.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    return sorted(found, key=_step)


def is_complete(checkpoint: Path) -> bool:
    try:
        return isinstance(json.loads((checkpoint / "trainer_state.json").read_text()), dict)
    except (OSError, ValueError):
        return False


def last_checkpoint(work: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, None if there is none."""
    complete = [p for p in checkpoint_dirs(work) if is_complete(p)]
    return complete[-1] if complete else None


def _settings_diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_work_dir(
    work: str | Path, settings: dict, resume: bool, force: bool, flag: str = "--resume"
) -> Path | None:
    """Get the work folder ready for a run; returns the checkpoint to resume from (None:
    start from scratch).

    - ``resume``: the last complete checkpoint; none -> error (never a silent fresh start);
      checkpoints made with other ``settings`` -> error. Incomplete checkpoints after it
      (a kill while saving) are removed.
    - no ``resume``: checkpoints of an earlier run -> error, or with ``force`` the work
      folder is emptied.

    The settings are recorded in the work folder either way.
    """
    work = Path(work)
    found = checkpoint_dirs(work)
    record = work / SETTINGS_FILE
    last = None
    if resume:
        last = last_checkpoint(work)
        if last is None:
            what = "only incomplete checkpoints" if found else "no checkpoint"
            raise ShortcotError(
                f"{flag} was given but {work} holds {what}; run without {flag} to start "
                "from scratch"
            )
        if record.exists():
            try:
                old = json.loads(record.read_text())
            except ValueError:
                old = None
            diff = _settings_diff(old, settings) if isinstance(old, dict) else []
            if diff:
                raise ShortcotError(
                    f"the checkpoints in {work} were made with other settings "
                    f"({'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''}); restore them "
                    f"to resume, or pass --force without {flag} to start over"
                )
        for p in found:
            if _step(p) > _step(last):
                shutil.rmtree(p)  # a kill while saving it: never resume from half a checkpoint
    elif found:
        if not force:
            raise ShortcotError(
                f"{work} holds checkpoints of an earlier run; pass {flag} to continue it or "
                "--force to start over"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=1, sort_keys=True, default=str) + "\n")
    return last
