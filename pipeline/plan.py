"""The DLER story as a list of stages (DLER section 4.6 + the distillation alternative):

    testbed -> rl (DLER) -> merge (back into the base) -> distill data -> distill sft
            -> evaluate base, DLER, merged, distilled -> compare (table + Pareto plot)

`plan(cfg)` is pure: it only decides each stage's command and settings (written to
``WORKDIR/.stages/<stage>.yaml`` when the stage runs), so it is tested without running
anything and ``python -m pipeline run --dry_run`` prints it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from artifacts.cli import read_yaml_mapping
from artifacts.errors import ShortcotError
from pipeline.config import PipelineConfig
from pipeline.stages import Stage

# The four models the pipeline compares, in table order (the first is the baseline).
MODELS = ("base", "dler", "merged", "distilled")
# Every stage a run can have, in plan order.
STAGE_NAMES = (
    "testbed",
    "rl",
    "rl2",
    "merge",
    "distill_data",
    "distill_sft",
    *(f"eval_{m}" for m in MODELS),
    "compare",
)


@dataclass
class Paths:
    """Where each artifact of a run lives."""

    workdir: Path
    base_model: str
    train_data: str
    test_data: str

    def model(self, name: str) -> str:
        return self.base_model if name == "base" else str(self.workdir / "models" / name)

    def eval_dir(self, name: str) -> Path:
        return self.workdir / "eval" / name

    @property
    def distill_data(self) -> Path:
        return self.workdir / "distill_data"


def resolve_paths(cfg: PipelineConfig) -> Paths:
    workdir = Path(cfg.workdir)
    if cfg.base_model:
        if not (cfg.train_data and cfg.test_data):
            raise ShortcotError(
                "with base_model set, also set train_data and test_data (files or presets)"
            )
        return Paths(workdir, cfg.base_model, cfg.train_data, cfg.test_data)
    tb = Path(cfg.testbed_out)
    return Paths(
        workdir,
        str(tb / "model"),
        cfg.train_data or str(tb / "data" / "train.jsonl"),
        cfg.test_data or str(tb / "data" / "test.jsonl"),
    )


def stage_settings(recipe: str | None, decided: dict, changes: dict) -> dict:
    """One stage's settings: its recipe's mapping, then what the pipeline decides (model,
    data, output, grader), then the user's changes (``*_args``), last wins. The stage reads
    them from one YAML file (`Stage.config`)."""
    values = dict(read_yaml_mapping(recipe)) if recipe else {}
    values.update(decided)
    values.update(changes)
    return values


def _work_dir(settings: dict, out: str) -> Path:
    """Where a training CLI keeps its checkpoints: its ``work_dir`` setting, else ``OUT.work``."""
    work = settings.get("work_dir")
    return Path(str(work)) if work else Path(f"{out.rstrip('/')}.work")


# The field names the pipeline sets in each stage command's settings (its config's fields).
TRAIN_RL = {"model": "model_name_or_path", "data": "data", "out": "output_dir", "grader": "grader"}
DISTILL_BUILD = {"teacher": "teacher", "data": "data", "out": "out", "grader": "grader"}
DISTILL_SFT = {"student": "model_name_or_path", "data": "data", "out": "output_dir"}
EVALS_RUN = {"model": "model", "data": "data", "out": "out", "grader": "grader"}


def plan(cfg: PipelineConfig) -> list[Stage]:
    """The stages of one pipeline run, in order."""
    p = resolve_paths(cfg)
    if cfg.threads < 0:
        raise ShortcotError(f"threads must be 0 (torch's default) or positive, got {cfg.threads}")
    threads = stage_threads(cfg)
    state = state_dir(cfg)

    def stage(name: str, module: str, config: dict, output: Path, **kwargs) -> Stage:
        """A stage run as ``python -m module --config <state>/<name>.yaml`` holding
        ``config``, on its thread count (OMP_NUM_THREADS)."""
        n = threads.get(name, cfg.threads)
        return Stage(
            name,
            module,
            ["--config", str(state / f"{name}.yaml")],
            output,
            config=config,
            env={"OMP_NUM_THREADS": str(n)} if n else {},
            **kwargs,
        )

    stages: list[Stage] = []
    tb = () if cfg.base_model else ("testbed",)  # the testbed stage makes the base and data
    if not cfg.base_model:
        # testbed.build has its own cache (same settings -> returns at once), so it is never
        # forced: a testbed built by hand or by another run is reused, not rebuilt.
        stages.append(
            stage(
                "testbed",
                "testbed.build",
                {
                    "out": cfg.testbed_out,
                    "preset": cfg.testbed_preset,
                    # testbed.build sets its own thread count (default 1) over OMP_NUM_THREADS
                    **({"threads": n} if (n := threads.get("testbed", cfg.threads)) else {}),
                },
                Path(cfg.testbed_out),
                force_flag=None,
            )
        )

    def rl_stage(
        name: str, recipe: str, changes: dict, start: str, out: str, upstream=None, needs=()
    ):
        """A train.rl stage from the model ``start`` into ``out``."""
        f = TRAIN_RL
        settings = stage_settings(
            recipe,
            {f["model"]: start, f["data"]: p.train_data, f["out"]: out, f["grader"]: cfg.grader},
            changes,
        )
        return stage(
            name,
            "train.rl",
            settings,
            Path(out),
            settings=upstream or {},
            launcher=shlex.split(cfg.train_launcher),
            work=_work_dir(settings, out),
            needs=(*tb, *needs),
        )

    # DLER; with rl2_config a second, ThinkPrune-style stage continues from the first
    # stage's model as a separate run (fresh optimizer state, its own budget).
    rl_out = str(p.workdir / "models" / "dler_stage1") if cfg.rl2_config else p.model("dler")
    stages.append(rl_stage("rl", cfg.rl_config, cfg.rl_args, p.base_model, rl_out))
    if cfg.rl2_config:
        stages.append(
            rl_stage(
                "rl2",
                cfg.rl2_config,
                cfg.rl2_args,
                rl_out,
                p.model("dler"),
                upstream={"model": stages[-1].key()},
                needs=("rl",),
            )
        )
    merge_settings = {
        "base": p.base_model,
        "tuned": p.model("dler"),
        "out": p.model("merged"),
        "density": cfg.merge_density,
        "scale": cfg.merge_scale,
        "scope": cfg.merge_scope,
        **cfg.merge_args,
    }
    stages.append(
        stage(
            "merge",
            "merge.selective",
            merge_settings,
            Path(p.model("merged")),
            settings={"tuned": stages[-1].key()},
            needs=(*tb, stages[-1].name),
        )
    )
    teacher = {"base": p.base_model, "dler": p.model("dler")}.get(
        cfg.distill_teacher, cfg.distill_teacher
    )
    rl_key = stages[-2].key()  # the DLER model's stage (before merge)
    rl_name = stages[-2].name
    f = DISTILL_BUILD
    stages.append(
        stage(
            "distill_data",
            "distill.build",
            stage_settings(
                cfg.distill_build_config,
                {
                    f["teacher"]: teacher,
                    f["data"]: p.train_data,
                    f["grader"]: cfg.grader,
                    f["out"]: str(p.distill_data),
                },
                cfg.distill_build_args,
            ),
            p.distill_data,
            settings={"teacher": rl_key if cfg.distill_teacher == "dler" else teacher},
            needs=(*tb, *([rl_name] if cfg.distill_teacher == "dler" else [])),
        )
    )
    f = DISTILL_SFT
    sft_settings = stage_settings(
        cfg.distill_sft_config,
        {
            f["student"]: p.base_model,
            f["data"]: str(p.distill_data),
            f["out"]: p.model("distilled"),
        },
        cfg.distill_sft_args,
    )
    stages.append(
        stage(
            "distill_sft",
            "distill.sft",
            sft_settings,
            Path(p.model("distilled")),
            settings={"data": stages[-1].key()},
            needs=(*tb, "distill_data"),
            launcher=shlex.split(cfg.train_launcher),
            work=_work_dir(sft_settings, p.model("distilled")),
        )
    )
    producers = {s.name: s for s in stages}
    made_by = {
        "base": "testbed",
        "dler": "rl2" if cfg.rl2_config else "rl",
        "merged": "merge",
        "distilled": "distill_sft",
    }
    f = EVALS_RUN
    for name in MODELS:
        upstream = producers.get(made_by[name])
        stages.append(
            stage(
                f"eval_{name}",
                "evals.run",
                stage_settings(
                    cfg.eval_config,
                    {
                        f["model"]: p.model(name),
                        f["data"]: p.test_data,
                        f["grader"]: cfg.grader,
                        f["out"]: str(p.eval_dir(name)),
                    },
                    cfg.eval_args,
                ),
                p.eval_dir(name),
                settings={"model": upstream.key() if upstream else p.model(name)},
                resumes_in_place=True,
                needs=tuple(dict.fromkeys((*tb, *([upstream.name] if upstream else [])))),
            )
        )
    stages.append(
        stage(
            "compare",
            "evals.compare",
            {
                "dirs": [str(p.eval_dir(n)) for n in MODELS],
                "labels": list(MODELS),
                "plot": str(cfg_report_dir(cfg) / "pareto.png"),
                "out": str(cfg_report_dir(cfg) / "table.md"),
            },
            cfg_report_dir(cfg) / "table.md",
            settings={"evals": [s.key() for s in stages if s.name.startswith("eval_")]},
            needs=tuple(f"eval_{n}" for n in MODELS),
        )
    )
    return stages


def stage_threads(cfg: PipelineConfig) -> dict[str, int]:
    """``cfg.stage_threads``, checked: stage name -> a positive thread count. A stage this
    run does not have (the testbed with ``base_model`` set, rl2 without ``rl2_config``) is
    ignored; a name that is no stage at all is an error."""
    import difflib

    out = {}
    for name, n in dict(cfg.stage_threads or {}).items():
        if name not in STAGE_NAMES:
            close = difflib.get_close_matches(str(name), STAGE_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ShortcotError(
                f"stage_threads: no stage is called {name!r}{hint}; the stages are "
                f"{', '.join(STAGE_NAMES)}"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ShortcotError(
                f"stage_threads: {name}: {n!r} is not a positive number of threads, e.g. "
                "'{testbed: 2}'"
            )
        out[str(name)] = n
    return out


def state_dir(cfg: PipelineConfig) -> Path:
    """Where the stages' settings files and records live."""
    return Path(cfg.workdir) / ".stages"


def cfg_report_dir(cfg: PipelineConfig) -> Path:
    return Path(cfg.workdir) / "report"
