"""Output folders that are either complete or absent.

Every command writes into a temporary sibling folder (same filesystem, so the final move is
atomic) and moves it into place only when everything succeeded. An existing output is
never replaced without ``force``, and with ``force`` it stays in place, untouched, until
the new one is complete: the two are swapped in one step (``renameat2(RENAME_EXCHANGE)``
on Linux; elsewhere two renames) and only then is the old one deleted.

A process killed with SIGKILL cannot remove its temporary folder. Each temporary folder
therefore holds an owner record (`OWNER_FILE`: host, boot, pid namespace, pid and the
process's start time); the next command that writes the same output removes the ones
whose owner is provably dead (same host and boot, same pid namespace, and that pid is
gone or is another process now; or the machine has rebooted since). Folders of a live
process, of another machine, or without a record are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from artifacts.errors import ShortcotError, environment_error

OWNER_FILE = ".shortcot-owner.json"


# ----------------------------------------------------------------------------- checks


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable(folder: str | os.PathLike, what: str = "--out") -> None:
    """Fail (before any work) when ``folder`` (or the nearest existing folder above it,
    where it would be created) cannot be written."""
    probe = _nearest_existing(Path(folder))
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    why = "is on a read-only file system" if read_only else "is not writable"
    raise ShortcotError(f"{probe} {why}; choose another {what} or fix its permissions")


def check_output(out: str | os.PathLike, force: bool) -> Path:
    """Fail early (before any work) if ``out`` exists and ``force`` is not set, or if it
    could not be written."""
    out = Path(out)
    if out.exists() and not force:
        raise ShortcotError(
            f"output {out} already exists; pass --force to overwrite it or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise ShortcotError(
            f"output {out} exists and is not a folder; remove it or choose another --out"
        )
    check_writable(out.parent)
    return out


def check_free_space(folder: str | os.PathLike, needed_bytes: int) -> None:
    """Fail before writing if the filesystem holding ``folder`` has less than ``needed_bytes`` free."""
    probe = _nearest_existing(Path(folder))
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise ShortcotError(
            f"not enough disk space at {probe}: need {needed_bytes / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB free; free some space or choose another --out"
        )


# ------------------------------------------------------------------ owners of temporaries


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), None if there is no
    such process; "?" where /proc is unavailable but the process exists."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is not None:
        return stat.rpartition(")")[2].split()[19]  # field 22; the name may hold spaces
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return "?"
    return "?"


def owner_record() -> dict:
    """Who this process is, precisely enough to tell later whether it is still alive."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        "pid_ns": _pid_namespace(),
        "pid": pid,
        "start": _start_time(pid),
    }


def owner_is_dead(owner: dict) -> bool:
    """True only when the process that wrote ``owner`` provably no longer runs."""
    if owner.get("host") != socket.gethostname():
        return False  # another machine sharing the folder: cannot tell
    boot = _read("/proc/sys/kernel/random/boot_id")
    if boot and owner.get("boot_id") and owner["boot_id"] != boot:
        return True  # rebooted since: every process of that boot is gone
    if owner.get("pid_ns") != _pid_namespace() or not isinstance(owner.get("pid"), int):
        return False  # another container's pid: cannot tell
    now = _start_time(owner["pid"])
    if now is None:
        return True
    return "?" not in (now, owner.get("start")) and now != owner.get("start")  # pid reused


def _write_owner(folder: Path) -> None:
    (folder / OWNER_FILE).write_text(json.dumps(owner_record()))


def remove_stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``out`` (``.NAME.tmp-*``, ``.NAME.old-*``) left by
    processes that provably died; returns what was removed."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for prefix in (f".{out.name}.tmp-", f".{out.name}.old-"):
        for cand in out.parent.glob(f"{prefix}*"):
            if not cand.is_dir() or cand.is_symlink():
                continue
            try:
                owner = json.loads((cand / OWNER_FILE).read_text())
            except (OSError, ValueError):
                continue  # no record: not provably ours
            if isinstance(owner, dict) and owner_is_dead(owner):
                shutil.rmtree(cand, ignore_errors=True)
                if not cand.exists():
                    removed.append(cand)
    if removed:
        print(f"removed {len(removed)} temporary folder(s) of {out} left by a killed run")
    return removed


# ---------------------------------------------------------------------- moving into place


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False when the
    platform or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _as_user_error(err: BaseException, out: Path) -> BaseException:
    msg = None if isinstance(err, ShortcotError) else environment_error(err)
    if msg is None:
        return err
    return ShortcotError(f"{out} was not written: {msg}")


def move_into_place(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an existing ``out`` only
    once ``tmp`` is complete (and never leaving ``out`` missing on Linux)."""
    (tmp / OWNER_FILE).unlink(missing_ok=True)
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    if _exchange(tmp, out):  # tmp now holds the old output
        with contextlib.suppress(OSError):
            os.replace(tmp, old)
            _write_owner(old)  # so that a kill during the removal is cleaned up later
        shutil.rmtree(old if old.exists() else tmp, ignore_errors=True)
        return
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    with contextlib.suppress(OSError):
        _write_owner(old)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``out``; on success move it to ``out``.

    On any exception the temporary folder is removed and ``out`` is left as it was; a full
    disk or a read-only folder becomes a one-line `ShortcotError`. Stale temporaries of
    ``out`` left by killed runs are removed first (`remove_stale_temporaries`).
    """
    out = check_output(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as err:
        raise _as_user_error(err, out) from err
    try:
        _write_owner(tmp)
        yield tmp
        move_into_place(tmp, out)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception):
            converted = _as_user_error(err, out)
            if converted is not err:
                raise converted from err
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file via a temporary sibling so a reader never sees half of it (a failed
    write removes its temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
