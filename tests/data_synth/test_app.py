"""Every command line refuses a careless override the same way: one line, exit 2, no work."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import InstantiationException

from data_synth.app import ConfigTypeError, UserConfigError, compose_checked, instantiate_checked

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# command -> the module behind its console script
COMMANDS = {
    "spellfix-synth": "data_synth.cli",
    "spellfix-train": "spellfix.train",
    "spellfix-eval": "spellfix.evaluate",
    "spellfix-export": "spellfix.export.cli",
    "spellfix-serve": "spellfix.serve",
}


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        (
            "train",
            ["trainer.max_step=100"],
            "trainer.max_step: no such key; did you mean trainer.max_steps?",
        ),
        (
            "eval",
            ["no_such_key=1"],
            "no_such_key: no such key (the eval config has system, systems, pairs,",
        ),
        (
            "train",
            ["model=bogus"],
            "In 'train': Could not find 'model/bogus'; "
            "Available options in 'model': bart_base, bart_small, bart_tiny",
        ),
        ("eval", ["limit=[1,"], "limit=[1,: "),
        (
            "synth",
            ["noise=qwerty"],
            "Available options in 'noise': default, keyboard, phonetic, search_queries",
        ),
    ],
)
def test_what_hydra_refuses_is_said_in_one_line(config, overrides, message):
    with pytest.raises(UserConfigError) as refused:
        compose_checked(config, overrides)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value) and "hydra.cc" not in str(refused.value)


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        ("train", ["data.max_tokens=lots"], "data.max_tokens='lots': expected int"),
        ("train", ["model=bart_small", "model.config.d_model=1.5"], "d_model=1.5: expected int"),
        ("synth", ["build.seed=abc"], "build.seed='abc': expected int like the default 0"),
        ("export", ["onnx.opset=abc"], "onnx.opset='abc': expected int like the default 18"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_before_any_work(config, overrides, message):
    with pytest.raises(ConfigTypeError, match=message):
        compose_checked(config, overrides)


def test_a_good_command_line_composes_without_hydra_settings():
    cfg = compose_checked("train", ["model=bart_small", "data.max_tokens=512", "+extra=1"])
    assert cfg.data.max_tokens == 512 and cfg.model.config.d_model == 256 and cfg.extra == 1
    assert "hydra" not in cfg


def test_overriding_a_key_whose_default_names_the_hydra_run_dir_is_checked_fine(tmp_path):
    # eval's output_dir defaults to ${hydra:runtime.output_dir}, which only a running
    # Hydra app can resolve; the check before Hydra starts must not try to.
    cfg = compose_checked("eval", [f"output_dir={tmp_path}", "limit=5"])
    assert cfg.output_dir == str(tmp_path) and cfg.limit == 5


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_an_unknown_key_in_one_line(command, tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", COMMANDS[command], "no_such_key=1", f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: no_such_key: no such key")
    assert not any(run_dir.iterdir()), "nothing is written for a refused command line"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"precision": 17}, "trainer: Precision 17 is invalid. Allowed precision values:"),
        ({"max_step": 3}, "trainer: Trainer.__init__() got an unexpected keyword argument"),
    ],
)
def test_a_constructor_refusing_its_config_is_named_in_one_line(arguments, message):
    node = {"_target_": "lightning.pytorch.Trainer", **arguments}
    with pytest.raises(UserConfigError) as refused:
        instantiate_checked(node, "trainer")
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_a_constructor_failing_for_another_reason_keeps_its_traceback():
    with pytest.raises(InstantiationException):  # a bug, not a setting: not made one line
        instantiate_checked({"_target_": "json.load", "fp": None}, "loader")
