"""User-facing errors and the wrapper every CLI runs under.

A `ShortcotError` is bad input or a bad environment that the user can fix: the CLI prints
it as one line (``error: <problem>; <fix>``) and exits non-zero, without a traceback.
A full disk, a read-only folder or a permission problem met while writing (or reading)
is the environment too, wherever it surfaces (`environment_error`): one line as well.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Sequence


class ShortcotError(Exception):
    """An error the user can fix. The message names the problem and the fix, on one line."""


_SPACE_FIX = "free some space or choose another --out, then rerun: finished work is kept"
_WRITE_FIX = "choose a writable --out or fix the folder's permissions"
# errno -> (what happened, the fix)
_ERRNOS = {
    errno.ENOSPC: ("no space left on device", _SPACE_FIX),
    errno.EDQUOT: ("disk quota exceeded", _SPACE_FIX),
    errno.EFBIG: ("file too large for the file system or a file-size limit", _SPACE_FIX),
    errno.EROFS: ("read-only file system", _WRITE_FIX),
    errno.EACCES: ("permission denied", "fix the permissions or choose another path"),
    errno.EPERM: ("operation not permitted", "fix the permissions or choose another path"),
}
# Writers that do not raise OSError (safetensors' Rust writer, torch.save) say it in text.
_PATTERNS = (
    ("no space left on device", errno.ENOSPC),
    ("os error 28", errno.ENOSPC),
    ("disk quota exceeded", errno.EDQUOT),
    ("read-only file system", errno.EROFS),
    ("os error 30", errno.EROFS),
    ("file too large", errno.EFBIG),
    ("os error 27", errno.EFBIG),
    ("failed writing file", errno.ENOSPC),  # torch.save's PytorchStreamWriter
)


def environment_error(err: BaseException) -> str | None:
    """The one-line message for a disk-full / read-only / permission error, else None.

    Looks through the exception's causes, so a writer's wrapped ``OSError`` is found too.
    """
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = e.errno if isinstance(e, OSError) and e.errno in _ERRNOS else None
        if code is None and not isinstance(e, ShortcotError):
            text = str(e).lower()
            code = next((c for pattern, c in _PATTERNS if pattern in text), None)
        if code is not None:
            what, fix = _ERRNOS[code]
            where = getattr(e, "filename", None)
            return f"{what}{f' ({where})' if where else ''}; {fix}"
        e = e.__cause__ or e.__context__
    return None


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None):
    """Run ``main(argv)`` and turn its outcome into an exit code.

    `ShortcotError` or an environment error (`environment_error`) -> one line on stderr,
    exit 2; Ctrl-C -> exit 130 (outputs are written atomically, so nothing half-written is
    left; resumable jobs continue on the next run).
    """
    try:
        code = main(argv)
    except ShortcotError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        print(
            "interrupted: nothing was moved into place; rerun the same command to resume",
            file=sys.stderr,
        )
        sys.exit(130)
    except Exception as err:
        msg = environment_error(err)
        if msg is None:
            raise
        _fail(msg)
    sys.exit(code or 0)


def _fail(message: str) -> None:
    msg = " ".join(message.split())  # one line, always
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)
