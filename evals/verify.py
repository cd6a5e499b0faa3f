"""Bounded answer checking: is ``answer`` the same mathematical object as ``reference``,
in bounded time, with "cannot tell" as a possible outcome.

`check_answer` returns True (same), False (different) or None (ungradable). The same
grader serves evaluation, RL rewards and dataset building, so one hostile completion must
neither stall training nor earn a reward. Three layers:

1. Identical strings (up to whitespace) are True at once: no parsing at all.
2. A pre-check (`precheck`, microseconds) refuses answers whose size makes math-verify
   slow or wrong: longer than `MAX_ANSWER_CHARS` (math-verify's LaTeX parser runs out of
   recursion on long flat input and silently falls back to a fragment: ``1+1+...+1`` with
   1000 terms parsed as ``1``), brackets nested deeper than `MAX_NESTING` (the parse time
   grows exponentially with brace depth: 14 levels took 3 s, 20 did not finish), and
   integer powers with more than `MAX_DIGITS` digits (``10^{10^{10}}``, ``9^{9^{9^{9}}}``,
   towers of 2: sympy computes them exactly, in C, for ever).
3. Everything else goes to math-verify in a worker process (`evals._verify_worker`) with
   a deadline of `timeout()` seconds (``SHORTCOT_GRADE_TIMEOUT``, default 5). Pure-Python
   work is interrupted inside the worker; work stuck in C is ended by killing the worker,
   which restarts on the next call. math-verify's own timeouts use ``signal.alarm``,
   which works only in the main thread of the main interpreter (not in reward functions
   called from worker threads, data loaders or Ray actors) and cannot interrupt C code,
   hence the process. The worker also caches parsed references (K samples per problem
   share one).

Cost (measured, `benchmarks/grading_overhead.py`): the pre-check takes a few microseconds,
and a worker call adds the round trip of two pipe writes, a fraction of a millisecond,
to math-verify's own few milliseconds; identical strings never reach the worker.
"""

from __future__ import annotations

import ast
import atexit
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from artifacts.errors import ShortcotError

MAX_ANSWER_CHARS = 400
MAX_NESTING = 10
MAX_DIGITS = 100_000
STARTUP_TIMEOUT_S = 120.0


def timeout() -> float:
    """Seconds one check may take (``SHORTCOT_GRADE_TIMEOUT``, default 5)."""
    try:
        return max(0.05, float(os.environ.get("SHORTCOT_GRADE_TIMEOUT", "5")))
    except ValueError:
        return 5.0


def normalize(s: str) -> str:
    return "".join(s.split()).rstrip(".").replace("\\!", "").replace("\\,", "")


# ---------------------------------------------------------------------------- pre-check

_OPEN, _CLOSE = "([{", ")]}"
_NUMERIC = re.compile(r"^[0-9+\-*/^().\s]*$")
_LATEX_OPS = (("\\cdot", "*"), ("\\times", "*"), ("\\left", ""), ("\\right", ""), ("{", "("))


def _nesting(text: str) -> int:
    depth = deepest = 0
    for c in text:
        if c in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif c in _CLOSE:
            depth = max(0, depth - 1)
    return deepest


def _log10(node) -> float:
    """An upper bound of log10 |value| of a numeric expression tree (inf when huge);
    ValueError for anything that is not integers combined by + - * / and powers."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return math.log10(abs(node.value)) if node.value else 0.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return _log10(node.operand)
    if isinstance(node, ast.BinOp):
        a, b = _log10(node.left), _log10(node.right)
        if isinstance(node.op, ast.Add | ast.Sub):
            return max(a, b) + math.log10(2)
        if isinstance(node.op, ast.Mult):
            return a + b
        if isinstance(node.op, ast.Div):
            return a
        if isinstance(node.op, ast.Pow):
            exponent = 10.0**b if b < 300 else math.inf
            return max(a, 0.0) * exponent if a > 0 else 0.0
    raise ValueError("not a plain number")


def _group_end(text: str) -> int:
    """Index just past the bracket group that opens ``text`` (its end if unbalanced)."""
    depth = 0
    for i, c in enumerate(text):
        depth += c in "({"
        depth -= c in ")}"
        if depth == 0:
            return i + 1
    return len(text)


def _power_digits(text: str) -> float:
    """The most digits of an integer power in ``text`` that sympy would compute exactly
    (0 when there is none). Each ``^`` is looked at with the number before it and the
    group after it; a group that is not plain arithmetic on numbers is skipped (sympy
    keeps a symbolic power symbolic)."""
    worst = 0.0
    for m in re.finditer(r"\^", text):
        base = re.search(r"(\d+(?:\.\d+)?|\)|\})\s*$", text[: m.start()])
        if not base:
            continue
        if base.group(1) in ")}":  # a bracketed base: take the bracket's content
            depth, i = 0, base.start(1)
            while i >= 0:
                depth += text[i] in ")}"
                depth -= text[i] in "({"
                if depth == 0:
                    break
                i -= 1
            base_text = text[max(i, 0) : base.end(1)]
        else:
            base_text = base.group(1)
        rest = text[m.end() :].lstrip()
        if rest[:1] in ("{", "("):
            exp_text = rest[: _group_end(rest)]
        else:
            run = re.match(r"\d+(?:\s*\^\s*\d+)*", rest)  # 2^10^10^10: the whole chain
            exp_text = run.group(0) if run else rest[:1]
        expr = f"({base_text})^({exp_text})"
        for old, new in _LATEX_OPS:
            expr = expr.replace(old, new)
        expr = expr.replace("}", ")")
        if not _NUMERIC.match(expr):
            continue
        try:
            tree = ast.parse(expr.replace("^", "**"), mode="eval").body
            worst = max(worst, _log10(tree))
        except (SyntaxError, ValueError, RecursionError, OverflowError):
            return math.inf  # numbers and powers that do not even parse: refuse
    return worst


def _factorial_digits(text: str) -> float:
    """Digits of the largest ``n!`` of a literal n in ``text`` (log10 n! < n log10 n)."""
    ns = [int(m.group(1)) for m in re.finditer(r"(\d{1,12})\s*!", text)]
    return max((n * math.log10(n) for n in ns if n > 1), default=0.0)


def precheck(answer: str) -> str | None:
    """Why ``answer`` is refused before math-verify sees it, or None when it may go on."""
    if len(answer) > MAX_ANSWER_CHARS:
        return f"longer than {MAX_ANSWER_CHARS} characters"
    if _nesting(answer) > MAX_NESTING:
        return f"brackets nested deeper than {MAX_NESTING}"
    text = answer.replace("**", "^")
    if "^" in text and _power_digits(text) > MAX_DIGITS:
        return f"a power with more than {MAX_DIGITS} digits"
    if "!" in text and _factorial_digits(text) > MAX_DIGITS:
        return f"a factorial with more than {MAX_DIGITS} digits"
    return None


# ------------------------------------------------------------------------------ worker

_WORKER = Path(__file__).with_name("_verify_worker.py")


class _Worker:
    """One math-verify process per grading process, started on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.pid = None  # the process that started it (a forked child starts its own)
        self.buf = b""

    def _start(self) -> None:
        # The worker dies with the thread that starts it (PR_SET_PDEATHSIG follows the
        # creating thread): a grader first called from a short-lived thread costs one
        # restart (about a second) after that thread ends, never a wrong verdict.
        self.proc = subprocess.Popen(
            [sys.executable, str(_WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.pid, self.buf = os.getpid(), b""
        if self._readline(STARTUP_TIMEOUT_S) != b"ready":
            self._stop()
            raise ShortcotError(
                "the math-verify grading process did not start; check that math-verify is "
                "installed (pip install math-verify) in this Python"
            )

    def _stop(self) -> None:
        if self.proc is not None and self.pid == os.getpid():
            self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        self.proc = None

    def _readline(self, seconds: float) -> bytes | None:
        """One line from the worker, or None when it is late or gone."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + seconds
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.strip()

    def check(self, answer: str, reference: str, seconds: float) -> bool | None:
        with self.lock:
            if self.proc is None or self.pid != os.getpid() or self.proc.poll() is not None:
                if self.pid == os.getpid():
                    self._stop()
                self.proc = None
                self._start()
            assert self.proc is not None and self.proc.stdin is not None
            request = json.dumps({"a": answer, "r": reference, "t": seconds}) + "\n"
            try:
                self.proc.stdin.write(request.encode())
                self.proc.stdin.flush()
            except OSError:
                self._stop()
                return None
            line = self._readline(seconds + 1.0)  # the worker's own timer fires first
            if line is None:  # stuck in C, or died (out of memory): ungradable, restart
                self._stop()
                return None
            try:
                return json.loads(line)["v"]
            except (ValueError, KeyError, TypeError):
                self._stop()
                return None


_worker = _Worker()
atexit.register(_worker._stop)


def check_answer(answer: str, reference: str) -> bool | None:
    """True / False: ``answer`` is / is not the same object as ``reference``; None: it
    cannot be told in bounded time (refused by `precheck`, or past `timeout`)."""
    if normalize(answer) == normalize(reference):
        return True
    if precheck(answer) is not None:
        return None
    return _worker.check(answer, reference, timeout())
