"""Model and dataset cards (README.md with Hub front matter), via huggingface_hub's card
classes so the metadata block is exactly what the Hub parses.

A card is written for readers on the Hub, so it names every input the way they can find it:
a Hub repo by its id (also as ``base_model``, which puts the model in the Hub's model tree),
a Hub cache snapshot by its repo id, and a local folder by its path relative to the working
directory or else its name, never by an absolute path (that names the author's machine, not
anything a reader can open). `public_ref` does the naming; the card writers apply it to the
recipe, and replace the absolute paths that remain in the text as a safety net.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")


def hub_id(ref: str | os.PathLike | None) -> str | None:
    """The Hub repo id ``ref`` names, or None for a local folder.

    ``org/name`` (or ``name``) that is not a local path is a Hub id; a local folder that is a
    snapshot in the Hub cache (``.../models--org--name/snapshots/<sha>``, what
    `artifacts.hub.resolve_local` returns for an id) is that repo. The Hub forbids ``--`` in
    repo names, so the cache folder's name decodes unambiguously.

    >>> hub_id("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    'deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B'
    >>> hub_id("/nonexistent/runs/model") is None
    True
    """
    if ref is None:
        return None
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        snap = path.resolve()
        repo = snap.parent.parent.name
        if snap.parent.name == "snapshots" and repo.split("--", 1)[0] in ("models", "datasets"):
            return repo.split("--", 1)[1].replace("--", "/")
        return None
    if not text or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\n" in text:
        return None
    return text


def public_ref(ref: str | os.PathLike) -> str:
    """How a card names a model or data reference: a Hub id as it is, a Hub cache snapshot
    as its repo id, a local path relative to the working directory when it lies inside it,
    else the folder's own name. Anything that is not a path is returned unchanged.

    >>> public_ref("Qwen/Qwen2.5-1.5B-Instruct")
    'Qwen/Qwen2.5-1.5B-Instruct'
    >>> public_ref("/nonexistent/home/me/runs/dler")
    'dler'
    """
    text = str(ref)
    found = hub_id(text)
    if found is not None:
        return found
    path = Path(text).expanduser()
    if "\n" in text or not (path.is_absolute() or path.exists()):
        return text
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(Path.cwd().resolve())
    except ValueError:
        return absolute.name or text
    return str(relative) if str(relative) != "." else absolute.name


def _absolute_paths(obj) -> set[str]:
    if isinstance(obj, str):
        return {obj} if os.path.isabs(obj) and "\n" not in obj and len(obj) > 1 else set()
    if isinstance(obj, dict):
        return set().union(*(_absolute_paths(v) for v in obj.values()))
    if isinstance(obj, list | tuple | set):
        return set().union(*(_absolute_paths(v) for v in obj))
    return set()


def public_recipe(obj):
    """``obj`` (a recipe: nested dicts and lists) with every absolute path replaced by its
    `public_ref`."""
    if isinstance(obj, str):
        return public_ref(obj) if _absolute_paths(obj) else obj
    if isinstance(obj, dict):
        return {k: public_recipe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [public_recipe(v) for v in obj]
    return obj


def _public_text(text: str, paths: set[str]) -> str:
    """Replace the given absolute paths (longest first, so a folder inside another is named
    whole), then the working directory and the home folder, wherever they appear."""
    for p in sorted(paths, key=len, reverse=True):
        text = text.replace(p, public_ref(p))
    cwd = str(Path.cwd().resolve())
    if len(cwd) > 1:
        text = text.replace(cwd + os.sep, "")
    home = str(Path.home())
    if len(home) > 1:
        text = text.replace(home + os.sep, "~" + os.sep)
    return text


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
    base_model_relation: str | None = None,
) -> Path:
    """Write ``folder/README.md``: front matter (base_model and its relation, tags, library),
    a summary, the recipe as JSON and, when given, an evaluation table (markdown).

    ``base_model``: Hub ids of the models this one was made from (local folders, which the
    Hub cannot link, are left out: pass refs through `hub_id`); ``base_model_relation``
    (adapter | merge | quantized | finetune) says how, for the Hub's model tree."""
    if isinstance(base_model, list):
        base_model = [b for b in base_model if b] or None
    if base_model_relation is not None and base_model_relation not in BASE_MODEL_RELATIONS:
        raise ValueError(f"base_model_relation must be one of {BASE_MODEL_RELATIONS}")
    extra = (
        {"base_model_relation": base_model_relation} if base_model and base_model_relation else {}
    )
    data = ModelCardData(
        base_model=base_model,
        tags=["shortcot", "concise-reasoning", *(tags or [])],
        library_name=library_name,
        pipeline_tag="text-generation",
        **extra,
    )
    paths = _absolute_paths(recipe)
    body = [f"# {title}", "", summary, "", "## Recipe", "", _recipe_block(public_recipe(recipe))]
    if eval_table:
        body += ["", "## Evaluation", "", eval_table]
    body += ["", "Made with shortcot."]
    text = _public_text("\n".join(body), paths)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + text + "\n")
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
    """Write ``folder/README.md`` for a dataset: front matter, summary, recipe, statistics.
    ``source_models`` (local folders or Hub ids) are named with `public_ref`."""
    data = DatasetCardData(
        tags=["shortcot", "compressed-cot", *(tags or [])],
        task_categories=["text-generation"],
    )
    paths = _absolute_paths(recipe) | _absolute_paths(list(source_models or []))
    body = [f"# {title}", "", summary, ""]
    if source_models:
        body += ["Made from: " + ", ".join(f"`{public_ref(m)}`" for m in source_models), ""]
    body += ["## Recipe", "", _recipe_block(public_recipe(recipe))]
    if stats_table:
        body += ["", "## Statistics", "", stats_table]
    text = _public_text("\n".join(body), paths)
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + text + "\n")
    path = Path(folder) / "README.md"
    card.save(path)
    return path
