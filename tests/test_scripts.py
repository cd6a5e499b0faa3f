"""The experiment and benchmark scripts' command lines (`artifacts.cli`): every setting has
a help text and is both a flag and a YAML key. The scripts themselves run for minutes to
hours on the built testbed, so only their parsing is tested here."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import yaml

from artifacts.cli import to_yaml_values
from artifacts.errors import ShortcotError

SCRIPTS = [
    "experiments.distill_testbed",
    "experiments.dler_ablation",
    "experiments.merge_sweep_testbed",
    "experiments.rl_testbed",
    "experiments.testbed_properties",
    "experiments.useful_checks",
    "benchmarks.generation_speed",
    "benchmarks.grading_overhead",
    "benchmarks.trainer_overhead",
]


@pytest.mark.parametrize("name", SCRIPTS)
def test_settings_have_help_and_round_trip_through_a_recipe(name, tmp_path):
    script = importlib.import_module(name)
    (cfg,) = script.parse_args([])
    assert all(f.metadata.get("help") for f in dataclasses.fields(cfg))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(to_yaml_values(cfg)))
    assert script.parse_args(["--config", str(recipe)]) == (cfg,)
    with pytest.raises(ShortcotError, match=f"unrecognized .*--nope.* python -m {name} --help"):
        script.parse_args(["--nope", "1"])


def test_list_settings_and_their_checks():
    from experiments import dler_ablation, merge_sweep_testbed, rl_testbed, testbed_properties

    (args,) = rl_testbed.parse_args(["--methods", "dler", "laser", "--set", "max_steps=20"])
    assert args.methods == ["dler", "laser"] and args.overrides == ["max_steps=20"]
    with pytest.raises(ShortcotError, match=r"unknown method\(s\) \['grpo'\]"):
        rl_testbed.parse_args(["--methods", "grpo"])
    (args,) = dler_ablation.parse_args(["--variants", "dler - batch std", "--seeds", "0", "1"])
    assert args.variants == ["dler - batch std"] and args.seeds == [0, 1]
    with pytest.raises(ShortcotError, match="unknown variant"):
        dler_ablation.parse_args(["--variants", "dler - everything"])
    (args,) = testbed_properties.parse_args(["--budgets", "30", "60", "--max-new-tokens", "60"])
    assert args.budgets == [30, 60] and args.max_new_tokens == 60
    with pytest.raises(ShortcotError, match="invalid choice"):
        testbed_properties.parse_args(["--split", "train"])
    (args,) = merge_sweep_testbed.parse_args(["--densities", "0.1", "0.25"])
    assert args.densities == [0.1, 0.25] and args.scales == [0.5, 0.7, 1.0]
