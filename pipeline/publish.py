"""Publishing a pipeline run's model to the Hub with its card and evaluation table.

The model folder already has a card from the stage that made it (what it was made from and
the recipe); publishing adds the pipeline's evaluation table (all four models side by side)
to a copy of the folder, so the run itself is never modified, and uploads the copy.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from artifacts.errors import ShortcotError
from artifacts.hub import push_folder
from pipeline.config import PipelineConfig
from pipeline.plan import MODELS, cfg_report_dir, resolve_paths


def publish(cfg: PipelineConfig, which: str, repo_id: str, private: bool = False, api=None) -> str:
    """Upload model ``which`` (dler | merged | distilled) of the run described by ``cfg``."""
    if which not in MODELS or which == "base":
        raise ShortcotError(f"cannot publish {which!r}; choose one of dler, merged, distilled")
    paths = resolve_paths(cfg)
    folder = Path(paths.model(which))
    if not (folder / "config.json").exists():
        raise ShortcotError(f"{folder} holds no finished model; run `python -m pipeline run` first")
    table = cfg_report_dir(cfg) / "table.md"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / folder.name
        shutil.copytree(folder, staged, ignore=shutil.ignore_patterns("*.work", "checkpoint-*"))
        card = staged / "README.md"
        text = card.read_text() if card.exists() else f"# {which}\n"
        if table.exists():
            text += (
                "\n## Evaluation (shortcot pipeline)\n\n"
                f"This model is `{which}` in the table below (same test set, same settings).\n\n"
                + table.read_text()
            )
        card.write_text(text)
        return push_folder(
            staged,
            repo_id,
            private=private,
            api=api,
            commit_message=f"Upload {which} model from a shortcot pipeline run",
        )
