"""The DLER story as a list of stages (DLER section 4.6 + the distillation alternative):

    testbed -> rl (DLER) -> merge (back into the base) -> distill data -> distill sft
            -> evaluate base, DLER, merged, distilled -> compare (table + Pareto plot)

`plan(cfg)` is pure: it only decides the command lines, so it is tested without running
anything and ``python -m pipeline run --dry-run`` prints it.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from artifacts.errors import ShortcotError
from pipeline.config import PipelineConfig
from pipeline.stages import Stage

# The four models the pipeline compares, in table order (the first is the baseline).
MODELS = ("base", "dler", "merged", "distilled")


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


def _file_digest(path: str) -> str:
    p = Path(path)
    if not p.exists():
        raise ShortcotError(f"recipe {p} does not exist; check the path (recipes live in configs/)")
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def _work_dir(recipe: str, overrides: list[str], out: str) -> Path:
    """Where a training CLI keeps its checkpoints: ``work_dir`` from the overrides, else
    from the recipe, else its default ``OUT.work``."""
    from artifacts.config import parse_overrides, read_yaml_mapping

    work = parse_overrides(overrides).get("work_dir") or read_yaml_mapping(recipe).get("work_dir")
    return Path(str(work)) if work else Path(f"{out.rstrip('/')}.work")


def _flags(overrides: list[str]) -> list[str]:
    """``["samples=4", "limit=10"]`` -> ``["--samples", "4", "--limit", "10"]``."""
    out: list[str] = []
    for item in overrides:
        if "=" not in item:
            raise ShortcotError(f"override {item!r} is not key=value; write e.g. samples=4")
        key, value = item.split("=", 1)
        out += ["--" + key.strip().replace("_", "-"), value]
    return out


def plan(cfg: PipelineConfig) -> list[Stage]:
    """The stages of one pipeline run, in order."""
    p = resolve_paths(cfg)
    if cfg.threads < 0:
        raise ShortcotError(f"threads must be 0 (torch's default) or positive, got {cfg.threads}")
    env = {"OMP_NUM_THREADS": str(cfg.threads)} if cfg.threads else {}

    def stage(*args, **kwargs) -> Stage:  # every stage with the run's environment
        return Stage(*args, env=env, **kwargs)

    stages: list[Stage] = []
    if not cfg.base_model:
        # testbed.build has its own cache (same settings -> returns at once), so it is never
        # forced: a testbed built by hand or by another run is reused, not rebuilt.
        stages.append(
            stage(
                "testbed",
                "testbed.build",
                ["--out", cfg.testbed_out, "--preset", cfg.testbed_preset],
                Path(cfg.testbed_out),
                force_flag=None,
            )
        )

    def rl_stage(
        name: str, recipe: str, overrides: list[str], start: str, out: str, upstream=None
    ) -> Stage:
        """A train.rl stage from the model ``start`` into ``out``."""
        return stage(
            name,
            "train.rl",
            [
                "--config",
                recipe,
                "--out",
                out,
                f"model={start}",
                f"data={p.train_data}",
                f"reward.grader={cfg.grader}",
                *overrides,
            ],
            Path(out),
            settings={"recipe": _file_digest(recipe), **(upstream or {})},
            launcher=shlex.split(cfg.train_launcher),
            work=_work_dir(recipe, overrides, out),
        )

    # DLER; with rl2_config a second, ThinkPrune-style stage continues from the first
    # stage's model as a separate run (fresh optimizer state, its own budget).
    rl_out = str(p.workdir / "models" / "dler_stage1") if cfg.rl2_config else p.model("dler")
    stages.append(rl_stage("rl", cfg.rl_config, cfg.rl_overrides, p.base_model, rl_out))
    if cfg.rl2_config:
        stages.append(
            rl_stage(
                "rl2",
                cfg.rl2_config,
                cfg.rl2_overrides,
                rl_out,
                p.model("dler"),
                upstream={"model": stages[-1].key()},
            )
        )
    stages.append(
        stage(
            "merge",
            "merge.selective",
            [
                "--base",
                p.base_model,
                "--tuned",
                p.model("dler"),
                "--out",
                p.model("merged"),
                "--density",
                str(cfg.merge_density),
                "--scale",
                str(cfg.merge_scale),
                "--scope",
                cfg.merge_scope,
            ],
            Path(p.model("merged")),
            settings={"tuned": stages[-1].key()},
        )
    )
    teacher = {"base": p.base_model, "dler": p.model("dler")}.get(
        cfg.distill_teacher, cfg.distill_teacher
    )
    rl_key = stages[-2].key()  # the DLER model's stage (before merge)
    stages.append(
        stage(
            "distill_data",
            "distill.build",
            [
                "--config",
                cfg.distill_build_config,
                "--teacher",
                teacher,
                "--data",
                p.train_data,
                "--grader",
                cfg.grader,
                "--out",
                str(p.distill_data),
                *_flags(cfg.distill_build_overrides),
            ],
            p.distill_data,
            settings={
                "recipe": _file_digest(cfg.distill_build_config),
                "teacher": rl_key if cfg.distill_teacher == "dler" else teacher,
            },
        )
    )
    stages.append(
        stage(
            "distill_sft",
            "distill.sft",
            [
                "--config",
                cfg.distill_sft_config,
                "--student",
                p.base_model,
                "--data",
                str(p.distill_data),
                "--out",
                p.model("distilled"),
                *cfg.distill_sft_overrides,
            ],
            Path(p.model("distilled")),
            settings={"recipe": _file_digest(cfg.distill_sft_config), "data": stages[-1].key()},
            launcher=shlex.split(cfg.train_launcher),
            work=_work_dir(cfg.distill_sft_config, cfg.distill_sft_overrides, p.model("distilled")),
        )
    )
    producers = {s.name: s for s in stages}
    made_by = {
        "base": "testbed",
        "dler": "rl2" if cfg.rl2_config else "rl",
        "merged": "merge",
        "distilled": "distill_sft",
    }
    eval_digest = _file_digest(cfg.eval_config)
    for name in MODELS:
        upstream = producers.get(made_by[name])
        stages.append(
            stage(
                f"eval_{name}",
                "evals.run",
                [
                    "--config",
                    cfg.eval_config,
                    "--model",
                    p.model(name),
                    "--data",
                    p.test_data,
                    "--grader",
                    cfg.grader,
                    "--out",
                    str(p.eval_dir(name)),
                    *_flags(cfg.eval_overrides),
                ],
                p.eval_dir(name),
                settings={
                    "recipe": eval_digest,
                    "model": upstream.key() if upstream else p.model(name),
                },
                resumes_in_place=True,
            )
        )
    stages.append(
        stage(
            "compare",
            "evals.compare",
            [
                *(str(p.eval_dir(n)) for n in MODELS),
                "--labels",
                *MODELS,
                "--plot",
                str(cfg_report_dir(cfg) / "pareto.png"),
                "--out",
                str(cfg_report_dir(cfg) / "table.md"),
            ],
            cfg_report_dir(cfg) / "table.md",
            settings={"evals": [s.key() for s in stages if s.name.startswith("eval_")]},
        )
    )
    return stages


def cfg_report_dir(cfg: PipelineConfig) -> Path:
    return Path(cfg.workdir) / "report"
