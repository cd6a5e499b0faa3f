"""Run one command and print, as JSON (last line), its wall time, CPU time (user, system),
page faults and peak RSS, and how busy the machine was with other work meanwhile.

    python benchmarks/_measure.py -- CMD ARGS...

Runs CMD as this process's only child, so ``RUSAGE_CHILDREN`` gives exactly the child's
peak resident set (``ru_maxrss``, file-backed mapped pages included, which is what a user
sees), its CPU time and its page faults. CPU time and minor page faults barely move with
other load on the machine; wall time does, hence the load figures: the 1-minute load
average before the run, and ``others_cores``, the cores' worth of CPU that other processes
used during the run (``/proc/stat`` busy time less the child's own CPU time).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_times() -> tuple[float, float] | None:
    """``(busy, total)`` seconds of all CPUs since boot, from ``/proc/stat`` (Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / tick, total / tick


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    load_before = os.getloadavg()[0]
    stat0 = cpu_times()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    stat1 = cpu_times()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    others = None
    if stat0 and stat1 and wall > 0:
        others = max(0.0, (stat1[0] - stat0[0]) - cpu) / wall
    result = {
        "rc": proc.returncode,
        "wall_s": wall,
        "cpu_s": cpu,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "minor_faults": usage.ru_minflt,
        "major_faults": usage.ru_majflt,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "load_before": load_before,
        "others_cores": others,
        "cores": cores(),
        "stderr_tail": proc.stderr[-2000:],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
