"""The configs and the code stay in step: every key documented, every option composes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from data_synth.paths import CONF_DIR

KEY_LINE = re.compile(r"^\s*(-\s+)?[A-Za-z_@][\w@.]*\s*:")
YAML_FILES = sorted(CONF_DIR.rglob("*.yaml"))


def undocumented_keys(path: Path) -> list[str]:
    """Keys with neither an inline comment nor a comment line right above them."""
    missing, previous = [], ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        is_key = KEY_LINE.match(line) and not stripped.startswith("#")
        documented = "#" in line or previous.startswith("#")
        structural = stripped.startswith(("defaults:", "- ", "_target_:"))
        if is_key and not documented and not structural:
            missing.append(f"{path.relative_to(CONF_DIR)}:{number}: {stripped}")
        if stripped:
            previous = stripped
    return missing


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CONF_DIR)))
def test_every_key_is_commented(path: Path) -> None:
    assert undocumented_keys(path) == []


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={option}"
        for group in ("model", "trainer", "logger", "noise")
        for option in group_options(group)
    ]
    + [f"experiment={option}" for option in group_options("experiment")]
    + [f"corpus@data.corpus={option}" for option in group_options("corpus")],
)
def test_every_group_option_composes_into_the_train_config(override: str) -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[override])
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.model.config.d_model > 0


@pytest.mark.parametrize("name", ["train", "synth", "eval", "export", "serve"])
def test_every_primary_config_composes(name: str) -> None:
    if not (CONF_DIR / f"{name}.yaml").is_file():
        pytest.fail(f"conf/{name}.yaml is missing")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        compose(name)


def test_every_callback_file_is_in_the_default_set_with_a_target_and_a_switch() -> None:
    """A file in conf/callbacks/ holds the entry it is named for, listed by default.yaml,
    whose ``_target_`` exists and which ``enabled`` switches (build_callbacks reads it)."""
    from hydra.utils import get_object

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        callbacks = compose("train").callbacks
    assert set(callbacks) == set(group_options("callbacks")) - {"default"}
    for name, entry in callbacks.items():
        assert isinstance(entry.enabled, bool), name
        assert callable(get_object(entry._target_)), name


def test_model_presets_build_the_shapes_they_claim() -> None:
    from transformers import BartConfig

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        base = compose("train", overrides=["model=bart_base"]).model.config
    config = BartConfig(**base, vocab_size=50265)
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (768, 6, 6)
    assert (config.encoder_ffn_dim, config.encoder_attention_heads) == (3072, 12)


# Each command, the config groups its --help must list (group -> options from conf/<group>/).
COMMAND_GROUPS = {
    "spellfix-train": ["build", "callbacks", "corpus", "data", "decoding", "experiment",
                       "logger", "model", "noise", "paths", "trainer", "tuner"],
    "spellfix-synth": ["corpus", "noise", "build"],
    "spellfix-eval": [],
    "spellfix-export": [],
    "spellfix-serve": [],
}  # fmt: skip


def listed_groups(help_text: str) -> dict[str, list[str]]:
    """``group -> options`` from the "Configuration groups" section of a --help text."""
    if "== Configuration groups ==" not in help_text:
        return {}
    section = help_text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    rows = [re.split(r"[:\s]\s*", line.strip(), maxsplit=1) for line in section.splitlines()]
    return {
        row[0]: [option.strip() for option in row[1].split(",")]
        for row in rows
        if len(row) == 2 and not row[0].startswith("Compose")
    }


@pytest.mark.parametrize("command", sorted(COMMAND_GROUPS))
def test_help_names_the_command_and_only_the_groups_it_reads(command: str) -> None:
    """`spellfix-serve --help` used to list the training groups (trainer, model, ...), none
    of which it reads; a group listed by hand must also follow the files in conf/."""
    import subprocess
    import sys

    executable = Path(sys.executable).parent / command
    done = subprocess.run(
        [str(executable), "--help"], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.startswith(f"{command} ") or done.stdout.startswith(f"{command}:")
    expected = {group: group_options(group) for group in COMMAND_GROUPS[command]}
    assert {g: sorted(o) for g, o in listed_groups(done.stdout).items()} == expected
    assert "== Config ==" in done.stdout
