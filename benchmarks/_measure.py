"""Run one command and print its wall time, CPU time and peak RSS as JSON (last line).

    python benchmarks/_measure.py -- CMD ARGS...

Runs CMD as this process's only child, so ``RUSAGE_CHILDREN`` gives exactly the child's
peak resident set (``ru_maxrss``, file-backed mapped pages included, which is what a user
sees) and its CPU time (user + system, less sensitive to other load than wall time).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "rc": proc.returncode,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "stderr_tail": proc.stderr[-2000:],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
