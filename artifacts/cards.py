"""Model and dataset cards (README.md with Hub front matter), via huggingface_hub's card
classes so the metadata block is exactly what the Hub parses."""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData


def _recipe_block(recipe: dict) -> str:
    return "```json\n" + json.dumps(recipe, indent=2, sort_keys=True, default=str) + "\n```"


def write_model_card(
    folder: str | os.PathLike,
    title: str,
    summary: str,
    recipe: dict,
    base_model: str | list[str] | None = None,
    tags: list[str] | None = None,
    eval_table: str | None = None,
    library_name: str = "transformers",
) -> Path:
    """Write ``folder/README.md``: front matter (base_model, tags, library), a summary,
    the recipe as JSON and, when given, an evaluation table (markdown)."""
    data = ModelCardData(
        base_model=base_model,
        tags=["shortcot", "concise-reasoning", *(tags or [])],
        library_name=library_name,
        pipeline_tag="text-generation",
    )
    body = [f"# {title}", "", summary, "", "## Recipe", "", _recipe_block(recipe)]
    if eval_table:
        body += ["", "## Evaluation", "", eval_table]
    body += ["", "Made with [shortcot](https://github.com/) (`pip install shortcot`)."]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
    path = Path(folder) / "README.md"
    card.save(path)
    return path


def write_dataset_card(
    folder: str | os.PathLike,
    title: str,
    summary: str,
    recipe: dict,
    stats_table: str | None = None,
    tags: list[str] | None = None,
    source_models: list[str] | None = None,
) -> Path:
    """Write ``folder/README.md`` for a dataset: front matter, summary, recipe, statistics."""
    data = DatasetCardData(
        tags=["shortcot", "compressed-cot", *(tags or [])],
        task_categories=["text-generation"],
    )
    body = [f"# {title}", "", summary, ""]
    if source_models:
        body += ["Made from: " + ", ".join(f"`{m}`" for m in source_models), ""]
    body += ["## Recipe", "", _recipe_block(recipe)]
    if stats_table:
        body += ["", "## Statistics", "", stats_table]
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
    path = Path(folder) / "README.md"
    card.save(path)
    return path
