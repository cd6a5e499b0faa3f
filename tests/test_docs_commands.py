"""Every shortcot command written in the README and docs/ parses as written.

Each ```bash block of README.md and docs/*.md is read; every ``python -m <module> ...`` line
(with ``\\`` continuations) of one of our commands goes through that command's own parser
(nothing runs). A renamed flag, a dropped recipe or an old ``key=value`` spelling fails here.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# the modules whose commands are checked: every CLI of the package
MODULES = {
    "merge.selective",
    "merge.sweep",
    "evals.run",
    "evals.compare",
    "train.rl",
    "distill.build",
    "distill.sft",
    "testbed.build",
    "testbed.smollm2",
    "pipeline",
}


def commands() -> list[tuple[str, int, str, list[str]]]:
    """(page, line, module, argv) of every command in a bash block."""
    found = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        in_bash = False
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.strip().startswith("```"):
                in_bash = not in_bash and line.strip() in ("```bash", "```sh", "```shell")
                i += 1
                continue
            start = i
            while in_bash and line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            if not in_bash:
                continue
            text = line.split(" #")[0].strip()  # a trailing comment
            m = re.search(r"\bpython3? -m ([\w.]+)(.*)$", text)
            if not m or m.group(1) not in MODULES:
                continue
            found.append(
                (page.relative_to(ROOT).as_posix(), start + 1, m.group(1), shlex.split(m.group(2)))
            )
    return found


COMMANDS = commands()


def test_the_docs_hold_commands_of_every_kind():
    assert {c[2] for c in COMMANDS} >= MODULES - {"testbed.smollm2"}


@pytest.mark.parametrize(
    "page, line, module, argv", COMMANDS, ids=[f"{c[0]}:{c[1]}" for c in COMMANDS]
)
def test_command_parses_as_written(page, line, module, argv, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes are given relative to the repository
    if module == "pipeline":
        from pipeline.__main__ import parse

        parse(argv)
        return
    import torch

    if module in ("train.rl", "distill.sft") and not torch.cuda.is_available():
        # GPU recipes set bf16, which transformers checks against the machine at parse time
        argv = [*argv, "--use_cpu"]
    try:
        importlib.import_module(module).parse_args(argv)
    except SystemExit as done:  # --help prints and exits 0
        assert done.code == 0 and "--help" in argv
