"""One way to configure every command: typed dataclasses parsed into ``--flags``, with
``--config recipe.yaml`` whose keys are the same names.

This is TRL's convention (``trl grpo --config recipe.yaml --learning_rate 1e-6``) and we use
TRL's own parser, `trl.TrlParser` (a `transformers.HfArgumentParser`): a field ``max_steps``
is the flag ``--max_steps`` (``--max-steps`` works too), its ``metadata["help"]`` is its
``--help`` line, a ``Literal`` type lists its choices, a ``bool`` takes ``--flag`` /
``--flag false`` (and ``--no_flag`` when it defaults to true), a ``list`` takes several
values. A YAML recipe sets the
same keys; flags given on the command line win over it.

What this module adds to ``TrlParser``, and why it is written here:

* errors are one line (`ShortcotError`, exit 2) naming the problem and the fix, also for a
  recipe that is missing, not YAML, or holds an unknown key (TrlParser raises tracebacks);
* unknown recipe keys get a "did you mean" from the valid ones;
* a dataclass's ``__post_init__`` ``ValueError`` (e.g. ``GRPOConfig``'s checks) is bad input
  too, not a bug, so it becomes one line.

    cfg, = parse_args([EvalConfig], ["--config", "configs/evals/testbed.yaml", "--limit", "8"])
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from artifacts.errors import ShortcotError


def read_yaml_mapping(path: str | os.PathLike, recipes: str = "configs/") -> dict:
    """The ``key: value`` mapping of a YAML file; every way it can be wrong (missing, a
    folder, not text, not YAML, not a mapping) is a one-line `ShortcotError`."""
    p = Path(path)
    if not p.exists():
        raise ShortcotError(
            f"config file {p} does not exist; check the path (recipes live in {recipes})"
        )
    if p.is_dir():
        raise ShortcotError(f"config file {p} is a folder; pass a YAML file")
    try:
        loaded = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise ShortcotError(f"config file {p} is not a text file; pass a YAML file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "not YAML"
        raise ShortcotError(
            f"config file {p} is not valid YAML ({problem}{where}); fix it or pass a YAML recipe"
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ShortcotError(f"config file {p} must hold a mapping of key: value")
    return loaded


def arg(default: Any = dataclasses.MISSING, help: str = "", **metadata) -> Any:
    """A dataclass field with its ``--help`` text: ``limit: int | None = arg(None, "...")``.

    Mutable defaults (lists, dicts) are copied per instance. ``metadata`` passes on to the
    parser (``aliases=["--out"]``, ``metavar="REPO"``).
    """
    metadata = {"help": help, **metadata}
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class YamlMapping(dict):
    """A field holding a mapping: a YAML recipe writes it as a mapping, the command line as
    YAML text (``--rl_args '{max_steps: 20, learning_rate: 1e-5}'``).

    HfArgumentParser calls a field's type on the command-line string, and a plain ``dict``
    cannot parse one; this type can.

    >>> YamlMapping("{max_steps: 20}")
    {'max_steps': 20}
    """

    def __init__(self, value: Any = ()):
        if isinstance(value, str):
            import yaml

            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                raise ShortcotError(
                    f"{value!r} is not a YAML mapping; write e.g. '{{max_steps: 20}}'"
                ) from None
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ShortcotError(f"{value!r} is not a mapping; write e.g. '{{max_steps: 20}}'")
        super().__init__(value)


@dataclasses.dataclass
class HubArguments:
    """Publishing, with the names of ``transformers.TrainingArguments`` (``push_to_hub``,
    ``hub_model_id``, ``hub_private_repo``), so every command publishes the same way."""

    push_to_hub: bool = arg(False, "upload the result to the Hugging Face Hub when done")
    hub_model_id: str | None = arg(None, "Hub repo id to upload to, e.g. user/name")
    hub_private_repo: bool = arg(False, "create the Hub repo as private")

    def hub_repo(self) -> str | None:
        """The repo to upload to, or None (`hub_repo`)."""
        return hub_repo(self.push_to_hub, self.hub_model_id)


def hub_repo(push_to_hub: bool, hub_model_id: str | None) -> str | None:
    """The repo to upload to, or None; ``--push_to_hub`` without a repo is bad input. Shared
    by `HubArguments` and the trainers' configs (TrainingArguments hold the same fields)."""
    if not push_to_hub:
        return None
    if not hub_model_id:
        raise ShortcotError("--push_to_hub needs --hub_model_id user/name; add it")
    return hub_model_id


def _parser_class():
    # trl is imported lazily (0.2 s) so `--help` of light commands stays fast
    from trl import TrlParser

    class Parser(TrlParser):
        def error(
            self, message: str
        ):  # argparse would print usage and exit with a traceback-less 2
            raise ShortcotError(f"{message}; see {self.prog} --help")

    return Parser


def make_parser(types: Sequence[type], prog: str, description: str = "", epilog: str = ""):
    """The argparse parser of ``types`` (a ``TrlParser``), for ``--help`` and for tests."""
    import argparse

    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        """Descriptions as written, and every flag's default in its help line."""

    return _parser_class()(
        dataclass_types=list(types),
        prog=f"python -m {prog}" if prog else None,
        description=description,
        epilog=epilog,
        formatter_class=Formatter,
        allow_abbrev=False,  # --densit is a typo, not --densities
    )


def split_config(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """``--config PATH`` (or ``--config=PATH``) out of ``argv``: (path or None, the rest)."""
    rest: list[str] = []
    path = None
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--config":
            if i + 1 >= len(args):
                raise ShortcotError("--config needs a YAML file: --config configs/...yaml")
            path = args[i + 1]
            i += 2
            continue
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return path, rest


def parse_args(
    types: Sequence[type],
    argv: Sequence[str] | None = None,
    *,
    prog: str = "",
    description: str = "",
    epilog: str = "",
    defaults: dict | None = None,
) -> tuple:
    """Parse ``argv`` (default ``sys.argv[1:]``) into one instance of each of ``types``.

    Values come from, last wins: the fields' defaults, ``defaults``, the ``--config`` YAML,
    the flags. ``env:`` in the YAML sets environment variables (as TRL does).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser(types, prog, description, epilog)
    path, rest = split_config(argv)
    values = dict(defaults or {})
    if path is not None:
        recipe = read_yaml_mapping(path)
        env = recipe.pop("env", {}) or {}
        if not isinstance(env, dict):
            raise ShortcotError(f"config file {path}: env must be a mapping of NAME: value")
        for name, value in env.items():
            os.environ[str(name)] = str(value)
        values.update(recipe)
    if values:
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
            where = f"config file {path}" if path else "settings"
            raise ShortcotError(
                f"{where}: unknown key(s) {', '.join(hints)}; see python -m {prog} --help"
            )
        parser.set_defaults_with_config(**values)
    try:
        return tuple(parser.parse_args_into_dataclasses(args=rest))
    except ValueError as err:
        text = " ".join(str(err).split())
        if text.startswith("Some specified arguments are not used"):
            extra = text.split(":", 1)[1].strip()
            raise ShortcotError(
                f"unrecognized argument(s) {extra}; see python -m {prog} --help"
            ) from None
        # a dataclass's own check (__post_init__), e.g. GRPOConfig's batch arithmetic
        raise ShortcotError(text) from None


def to_yaml_values(cfg: Any) -> dict:
    """The fields of a parsed config as plain YAML values (what ``--config`` accepts)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if hasattr(value, "value") and not isinstance(value, str | int | float):
            value = value.value  # enums (TrainingArguments' strategies)
        out[f.name] = value
    return out
