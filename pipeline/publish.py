"""Publishing a pipeline run's model or compressed dataset to the Hub, with the evaluation table.

Each artifact already has a card from the stage that made it (what it was made from and the
recipe; for the dataset also its compression summary); publishing adds the pipeline's
evaluation table (all four models side by side) to the card it uploads with the folder, in
one commit; the run's folder itself is never modified and nothing is copied (``datasets``
cache files and checkpoints left by training are not uploaded).
"""

from __future__ import annotations

from pathlib import Path

from artifacts.errors import ShortcotError
from artifacts.hub import push_folder
from pipeline.config import PipelineConfig
from pipeline.plan import cfg_report_dir, resolve_paths

PUBLISHABLE = ("dler", "merged", "distilled", "dataset")
# what training leaves next to an artifact (huggingface_hub patterns: ``*`` crosses ``/``)
IGNORED = [
    "*.work",
    "*.work/*",
    "checkpoint-*",
    "*/checkpoint-*",
    "cache-*.arrow",
    "*/cache-*.arrow",
]


def publish(cfg: PipelineConfig, which: str, repo_id: str, private: bool = False, api=None) -> str:
    """Upload ``which`` (dler | merged | distilled model, or the compressed ``dataset``) of the
    run described by ``cfg``; returns the repo URL."""
    if which not in PUBLISHABLE:
        raise ShortcotError(f"cannot publish {which!r}; choose one of {', '.join(PUBLISHABLE)}")
    paths = resolve_paths(cfg)
    if which == "dataset":
        folder = Path(paths.distill_data)
        if not (folder / "summary.json").exists():
            raise ShortcotError(
                f"{folder} holds no finished dataset; run `python -m pipeline run` first"
            )
        note = (
            "The model `distilled` in the table below was fine-tuned on this dataset "
            "(same test set, same settings)."
        )
    else:
        folder = Path(paths.model(which))
        if not (folder / "config.json").exists():
            raise ShortcotError(
                f"{folder} holds no finished model; run `python -m pipeline run` first"
            )
        note = f"This model is `{which}` in the table below (same test set, same settings)."
    table = cfg_report_dir(cfg) / "table.md"
    card = folder / "README.md"
    text = card.read_text() if card.exists() else f"# {which}\n"
    if table.exists():
        text += "\n## Evaluation (shortcot pipeline)\n\n" + note + "\n\n" + table.read_text()
    return push_folder(
        folder,
        repo_id,
        private=private,
        repo_type="dataset" if which == "dataset" else "model",
        api=api,
        commit_message=f"Upload {which} from a shortcot pipeline run",
        ignore_patterns=IGNORED,
        readme=text,
    )
