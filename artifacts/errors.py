"""User-facing errors and the wrapper every CLI runs under.

A `ShortcotError` is bad input or a bad environment that the user can fix: the CLI prints
it as one line (``error: <problem>; <fix>``) and exits non-zero, without a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class ShortcotError(Exception):
    """An error the user can fix. The message names the problem and the fix, on one line."""


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None):
    """Run ``main(argv)`` and turn its outcome into an exit code.

    `ShortcotError` -> one line on stderr, exit 2; Ctrl-C -> exit 130 (outputs are written
    atomically, so nothing half-written is left; resumable jobs continue on the next run).
    """
    try:
        code = main(argv)
    except ShortcotError as err:
        msg = " ".join(str(err).split())  # one line, always
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "interrupted: nothing was moved into place; rerun the same command to resume",
            file=sys.stderr,
        )
        sys.exit(130)
    sys.exit(code or 0)
