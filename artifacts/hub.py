"""Resolving model/dataset references and publishing folders to the Hugging Face Hub.

Every command accepts a local folder or a Hub repo id. Hub ids are resolved with
`huggingface_hub.snapshot_download`, which honours ``HF_HUB_OFFLINE``, ``HF_HOME`` and
revisions; nothing here talks to the network directly.
"""

from __future__ import annotations

import os
from pathlib import Path

from artifacts.errors import ShortcotError

# A local folder is a model (or adapter, or tokenizer) folder when it holds one of these.
MODEL_MARKERS = ("config.json", "adapter_config.json", "tokenizer_config.json")


def resolve_local(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    repo_type: str = "model",
    allow_patterns: list[str] | None = None,
) -> Path:
    """Return a local folder for ``name_or_path``: the folder itself, or a Hub snapshot.

    Raises `ShortcotError` with the fix when the path does not exist and the Hub cannot
    provide it (offline, no such repo, gated).
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ShortcotError(f"{path} is a file; pass the folder that holds the {repo_type}")
        if repo_type == "model" and not any((path / f).exists() for f in MODEL_MARKERS):
            content = "is empty" if not any(path.iterdir()) else "holds no config.json"
            raise ShortcotError(
                f"{path} {content}, so it is not a model folder; pass a Hugging Face model "
                "folder (config.json, weights, tokenizer) or a Hub id"
            )
        return path
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ShortcotError(f"{name} does not exist; check the path")
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id=name, revision=revision, repo_type=repo_type, allow_patterns=allow_patterns
            )
        )
    except Exception as err:  # offline, missing, gated: all the same to the user
        kind = type(err).__name__
        raise ShortcotError(
            f"cannot find {repo_type} {name!r} locally or on the Hub ({kind}); pass a local "
            "folder, or check the repo id, your network and HF_HUB_OFFLINE / HF_TOKEN"
        ) from err


def revision_of(folder: Path) -> str | None:
    """The commit hash of a Hub snapshot folder (``.../snapshots/<sha>``), else None."""
    if folder.parent.name == "snapshots" and len(folder.name) == 40:
        return folder.name
    return None


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    repo_type: str = "model",
    commit_message: str = "Upload with shortcot",
    api=None,
    *,
    ignore_patterns: list[str] | None = None,
    readme: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; returns the repo URL.

    ``ignore_patterns``: files to leave out, as `huggingface_hub` matches them (``fnmatch``
    on the path relative to ``folder``, where ``*`` also crosses ``/``). ``readme``: the text
    to upload as ``README.md`` in place of the folder's own (e.g. its card plus an evaluation
    table), so that nothing is copied and the folder is never modified. ``api`` is an
    `huggingface_hub.HfApi` (injectable so tests run without network).
    """
    from huggingface_hub import HfApi

    api = api or HfApi()
    try:
        url = api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=True)
        if readme is None:
            api.upload_folder(
                folder_path=str(folder),
                repo_id=repo_id,
                repo_type=repo_type,
                commit_message=commit_message,
                ignore_patterns=ignore_patterns,
            )
        else:
            api.create_commit(
                repo_id=repo_id,
                repo_type=repo_type,
                operations=upload_operations(folder, ignore_patterns, readme),
                commit_message=commit_message,
            )
    except Exception as err:
        raise ShortcotError(
            f"upload of {folder} to {repo_id} failed ({type(err).__name__}: {err}); "
            "log in with `hf auth login` or set HF_TOKEN, and check the repo id"
        ) from err
    return str(url)


def upload_operations(
    folder: str | os.PathLike, ignore_patterns: list[str] | None, readme: str
) -> list:
    """The commit that uploads ``folder`` with ``readme`` as its README.md: one
    ``CommitOperationAdd`` per kept file, pointing at the file where it is (nothing copied),
    chosen as ``upload_folder`` chooses them (its default patterns leave out ``.git`` and
    ``.cache/huggingface``), and the README from memory.
    """
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    root = Path(folder).expanduser().resolve()  # as upload_folder does
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.glob("**/*")) if p.is_file()}
    ignore = [*(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS, "README.md"]
    kept = filter_repo_objects(files, ignore_patterns=ignore)
    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=files[name]) for name in kept] + [
        CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme.encode())
    ]
