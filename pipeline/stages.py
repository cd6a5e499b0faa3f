"""A stage runner with cached outputs.

Each stage is a shortcot CLI run as a subprocess (`python -m pkg.cli ...`): stages compose
through paths, never through each other's in-memory objects (ARCHITECTURE.md), so any
stage can be rerun, cached, resumed or published on its own, and a crash in one stage
cannot leave another's state inconsistent.

A stage is skipped when its output exists and was made with the same settings: the
settings (the exact command line plus anything else that determines the output) are
hashed and recorded in ``<workdir>/.stages/<name>.json`` after the stage succeeds. An
output made with other settings is rebuilt (the stage CLI is given ``--force``; the old
output stays until the new one is complete).

An interrupted stage left no output (every CLI writes atomically), so it runs again and
picks up where it stopped: before a stage starts, its settings are recorded in
``<name>.started.json``; a training stage (one with a ``work`` folder of checkpoints) whose
checkpoints were made by a start with the same settings gets ``--resume``, one whose
checkpoints belong to other settings gets ``--force`` (it starts over, cleanly); generation
stages resume from their own records. A stage killed after its output was moved into place
but before the record was written is recognised (its output is new since the start) and
recorded, not rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from artifacts.errors import ShortcotError
from artifacts.outdir import atomic_write_text


@dataclass
class Stage:
    """One step of the pipeline.

    name:     short label, also the cache key's file name.
    module:   the CLI module (``python -m module``).
    args:     its arguments (without ``--force``).
    output:   the folder the stage produces; its existence marks completion.
    settings: extra values that determine the output but are not in ``args``
              (e.g. the content of a config file).
    force_flag: the flag the CLI takes to overwrite an existing output.
    resumes_in_place: the CLI writes into ``output`` as it goes and resumes from it (as
              evals.run does); an output without a record is then an interrupted run to
              continue, not a stale one to replace.
    launcher: a command that starts the module instead of this Python (e.g.
              ``["accelerate", "launch", "--num_processes", "8"]``); it must take
              ``-m module args``. Part of the settings: more processes can change the result.
    work:     the folder where the CLI keeps checkpoints (training stages); with checkpoints
              of the same settings there, the CLI is given ``resume_flag``.
    needs:    the stages whose outputs this one reads (they finish before it starts).
    env:      environment variables the CLI runs with (e.g. ``OMP_NUM_THREADS``); part of
              the settings when set, since a thread count changes a float reduction's order.
    config:   the CLI's settings (its config fields): written as YAML to ``config_file``
              before the stage runs, which ``args`` passes with ``--config``; part of the key.
    """

    name: str
    module: str
    args: list[str]
    output: Path
    settings: dict = field(default_factory=dict)
    force_flag: str | None = "--force"
    resumes_in_place: bool = False
    launcher: list[str] = field(default_factory=list)
    work: Path | None = None
    resume_flag: str = "--resume"
    env: dict[str, str] = field(default_factory=dict)
    config: dict | None = None
    needs: tuple[str, ...] = ()

    @property
    def config_file(self) -> Path | None:
        """The YAML file ``args`` passes with ``--config`` (None without one)."""
        if "--config" in self.args[:-1]:
            return Path(self.args[self.args.index("--config") + 1])
        return None

    def write_config(self) -> None:
        """Write `config` to `config_file` (atomically), for the stage command to read."""
        if self.config is not None and self.config_file is not None:
            text = yaml.safe_dump(self.config, sort_keys=True, default_flow_style=False)
            atomic_write_text(self.config_file, text)

    def key(self) -> str:
        fields = {"module": self.module, "args": self.args, "settings": self.settings}
        if self.config is not None:
            fields["config"] = self.config
        if self.launcher:  # only when set, so that records made before launchers stay valid
            fields["launcher"] = self.launcher
        if self.env:  # likewise
            fields["env"] = self.env
        blob = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def command(self, force: bool, resume: bool = False) -> list[str]:
        cmd = [*(self.launcher or [sys.executable]), "-m", self.module, *self.args]
        if force and self.force_flag:
            cmd.append(self.force_flag)
        if resume:
            cmd.append(self.resume_flag)
        return cmd


def stage_is_current(stage: Stage, state_dir: Path) -> bool:
    """True when the stage's output exists and was made with the same settings."""
    record = state_dir / f"{stage.name}.json"
    if not stage.output.exists() or not record.exists():
        return False
    try:
        return json.loads(record.read_text()).get("key") == stage.key()
    except json.JSONDecodeError:
        return False


def _identity(path: Path) -> str | None:
    """Which folder ``path`` is now (an atomic move-in gives it a new inode)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Decision:
    """What `run_stage` will do: "cached", "recover" (record an output an interrupted
    run finished), or "run" with ``force`` / ``resume``."""

    action: str
    force: bool = False
    resume: bool = False

    def describe(self) -> str:
        if self.action == "cached":
            return "up to date"
        if self.action == "recover":
            return "finished (record it)"
        return "to resume" if self.resume else "to run"


def decide(stage: Stage, state_dir: Path) -> Decision:
    """Whether ``stage`` is current, and otherwise how to run it (see the module doc)."""
    from artifacts.resume import checkpoint_dirs, last_checkpoint

    if stage_is_current(stage, state_dir):
        return Decision("cached")
    record = state_dir / f"{stage.name}.json"
    started = _read_json(state_dir / f"{stage.name}.started.json")
    same_start = started.get("key") == stage.key()
    if (
        same_start
        and not stage.resumes_in_place
        and stage.output.exists()
        and _identity(stage.output) != started.get("output")
    ):
        return Decision("recover")
    # An output with a record of other settings is stale: rebuild it. One without a record
    # was made by hand (rebuild) or is an interrupted in-place run (continue it).
    force = stage.output.exists() and (record.exists() or not stage.resumes_in_place)
    resume = False
    if stage.work is not None and checkpoint_dirs(stage.work):
        resume = same_start and last_checkpoint(stage.work) is not None
        force = force or not resume  # checkpoints of other settings: start over
    return Decision("run", force, resume)


def _write_record(stage: Stage, state_dir: Path, cmd: list[str], seconds: float) -> None:
    atomic_write_text(
        state_dir / f"{stage.name}.json",
        json.dumps(
            {"key": stage.key(), "command": cmd[1:], "seconds": round(seconds, 1)}, indent=2
        ),
    )
    (state_dir / f"{stage.name}.started.json").unlink(missing_ok=True)


def run_stage(
    stage: Stage, state_dir: Path, log_dir: Path, env: dict | None = None, stream: bool = True
) -> str:
    """Run ``stage`` unless it is current; returns "cached" or "ran".

    The CLI's output goes to ``<log_dir>/<name>.log`` and, with ``stream``, to the terminal
    too (its progress bars included; off while several stages run at once, whose lines
    would interleave). A failing stage raises `ShortcotError` naming the log.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    decision = decide(stage, state_dir)
    if decision.action == "cached":
        print(f"[pipeline] {stage.name}: up to date ({stage.output}), skipped", flush=True)
        return "cached"
    cmd = stage.command(decision.force, decision.resume)
    if decision.action == "recover":
        started = _read_json(state_dir / f"{stage.name}.started.json")
        _write_record(stage, state_dir, cmd, time.time() - started.get("time", time.time()))
        print(
            f"[pipeline] {stage.name}: {stage.output} was completed by the interrupted run; "
            "recorded",
            flush=True,
        )
        return "cached"
    atomic_write_text(
        state_dir / f"{stage.name}.started.json",
        json.dumps({"key": stage.key(), "output": _identity(stage.output), "time": time.time()}),
    )
    stage.write_config()
    shown = cmd if stage.launcher else cmd[1:]  # the Python executable's path is noise
    print(f"[pipeline] {stage.name}: {' '.join(shown)}", flush=True)
    log_path = log_dir / f"{stage.name}.log"
    start = time.time()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **stage.env, **(env or {})},
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if stream:
                sys.stdout.write(line)
            log.write(line)
        code = proc.wait()
    if code != 0:
        raise ShortcotError(
            f"stage {stage.name} failed (exit {code}); see {log_path}, fix the cause and rerun: "
            "finished stages are kept"
        )
    seconds = time.time() - start
    _write_record(stage, state_dir, cmd, seconds)
    print(f"[pipeline] {stage.name}: done in {seconds:.0f} s", flush=True)
    return "ran"


def run_all(stages: list[Stage], state_dir: Path, log_dir: Path, jobs: int = 1) -> dict:
    """Run ``stages`` (in dependency order), up to ``jobs`` at once: a stage starts as soon
    as every stage it `needs` has finished. Returns ``{name: (status, seconds)}``.

    Running stages side by side changes no result: each stage is its own process with its
    own settings and inputs, and the pipeline pins each to its thread count. After a failure
    no new stage starts; the running ones finish (their outputs are kept) and the first
    error is raised.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    names = {s.name for s in stages}
    pending = list(stages)
    done: set[str] = set()
    times: dict[str, tuple[str, float]] = {}
    running: dict = {}
    failure: ShortcotError | None = None
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while pending or running:
            for s in list(pending):
                if failure is not None or len(running) >= max(1, jobs):
                    break
                if all(n in done or n not in names for n in s.needs):
                    pending.remove(s)
                    future = pool.submit(run_stage, s, state_dir, log_dir, None, jobs <= 1)
                    running[future] = (s, time.time())
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                s, start = running.pop(future)
                try:
                    times[s.name] = (future.result(), time.time() - start)
                    done.add(s.name)
                except ShortcotError as err:
                    failure = failure or err
    if failure is not None:
        raise failure
    if pending:  # only with a `needs` cycle, which plan() never makes
        raise ShortcotError(f"stages {[s.name for s in pending]} wait on each other")
    return times
