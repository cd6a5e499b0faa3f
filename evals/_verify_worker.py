"""The math-verify worker process of `evals.verify` (started by it; not a command).

Reads one JSON request per line on stdin, ``{"a": answer, "r": reference, "t": seconds}``,
and answers each with one JSON line on stdout: ``{"v": true | false | null}`` (null: the
check did not finish in ``t`` seconds or failed inside math-verify). Pure-Python work is
interrupted by an interval timer; work inside C (a huge integer power) is not, so the
parent also kills this process when its reply is late. The process dies with its parent
(``PR_SET_PDEATHSIG``) and cannot take more than 4 GiB of memory.

Imports nothing of shortcot, so it starts the same from any working directory.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys


def _harden() -> None:
    try:
        import resource

        limit = 4 << 30
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit if hard != -1 else hard))
    except (ImportError, ValueError, OSError):
        pass
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Late(BaseException):  # not caught by math-verify's own `except Exception`
    pass


def _alarm(signum, frame):
    raise _Late


def main() -> None:
    _harden()
    logging.disable(logging.CRITICAL)  # math-verify logs its disabled-timeout notice per call
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]

    def _parse(text: str):
        return parse(f"${text}$", extraction_config=configs, parsing_timeout=None)

    gold_parse = functools.lru_cache(maxsize=4096)(_parse)  # references repeat (K samples)
    signal.signal(signal.SIGALRM, _alarm)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        verdict = None
        signal.setitimer(signal.ITIMER_REAL, float(req.get("t", 5.0)))
        try:
            gold = gold_parse(req["r"])
            pred = _parse(req["a"])
            verdict = bool(gold and pred and verify(gold, pred, timeout_seconds=None))
        except _Late:
            verdict = None
        except Exception:  # math-verify raises on exotic input: unparsable is wrong
            verdict = False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.write(json.dumps({"v": verdict}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
