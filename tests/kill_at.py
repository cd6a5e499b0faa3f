"""Run a shortcot CLI and SIGKILL it at a chosen point (for the fault-injection tests).

    SHORTCOT_KILL_AT="module:Attr.path:n[:after]" python tests/kill_at.py -m pkg.cli ARGS...

``module:Attr.path`` names a function (or a method, ``Class.method``); on its n-th call the
process kills itself with SIGKILL, before the call (default) or just after it returns
(``after``). Without ``SHORTCOT_KILL_AT`` the CLI runs untouched, so the same command line
(a pipeline launcher, for instance) can be killed once and then rerun.
"""

from __future__ import annotations

import functools
import importlib
import os
import runpy
import signal
import sys


def _arm(spec: str) -> None:
    module, path, n, *when = spec.split(":")
    after = when == ["after"]
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for p in parents:
        owner = getattr(owner, p)
    original = getattr(owner, name)
    calls = {"n": 0}

    @functools.wraps(original)
    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == int(n) and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls["n"] == int(n) and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, dying)


def main() -> None:
    if sys.argv[1] != "-m":
        sys.exit("usage: kill_at.py -m module args...")
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    spec = os.environ.get("SHORTCOT_KILL_AT")
    if spec:
        _arm(spec)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
