"""Shared helpers for the data_synth tests: configs exactly as Hydra composes them."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from data_synth.paths import CONF_DIR

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MUSIC_FILE = SHARED_DATA / "music" / "billboard_hot100_1997_2021.tsv"


def group_config(group: str, name: str, **overrides):
    """A config group file as a plain dict, with overrides (as on the command line)."""
    config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"))
    config.update(overrides)
    return config


@pytest.fixture
def group():
    """``group("noise", "default", clean_share=0.5)``: a config group file with overrides."""
    return group_config


@pytest.fixture
def corpus_config():
    return lambda **overrides: group_config("corpus", "builtin", **overrides)


@pytest.fixture
def music_file():
    if not MUSIC_FILE.is_file():
        pytest.skip(f"{MUSIC_FILE} is absent (only development machines have ../shared/data)")
    return MUSIC_FILE
