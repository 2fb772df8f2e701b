"""build_callbacks: the callbacks config group and the callbacks it produces stay in step."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from omegaconf import DictConfig, OmegaConf

from data_synth.paths import CONF_DIR
from spellfix.callbacks import ThroughputMonitor, UtilizationMonitor, build_callbacks
from spellfix.callbacks.samples import SampleTableLogger

DEFAULT_YAML = CONF_DIR / "callbacks" / "default.yaml"


def default_config(**changes: object) -> DictConfig:
    cfg = OmegaConf.load(DEFAULT_YAML)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_the_default_config_builds_every_callback_with_its_settings(tmp_path: Path) -> None:
    callbacks = build_callbacks(default_config(), tmp_path)
    by_type = {type(callback): callback for callback in callbacks}
    assert set(by_type) == {
        ModelCheckpoint,
        LearningRateMonitor,
        TQDMProgressBar,
        UtilizationMonitor,
        ThroughputMonitor,
        SampleTableLogger,
    }
    checkpoint = by_type[ModelCheckpoint]
    assert Path(checkpoint.dirpath) == tmp_path / "checkpoints"
    assert (checkpoint.monitor, checkpoint.mode, checkpoint.save_last) == ("val/loss", "min", True)
    assert by_type[UtilizationMonitor].interval_s == 0.5
    assert by_type[UtilizationMonitor].output_dir == tmp_path
    assert by_type[ThroughputMonitor].window == 50
    assert by_type[ThroughputMonitor].output_dir == tmp_path
    assert by_type[SampleTableLogger].max_rows == 16


def test_checkpoints_go_where_the_paths_config_says(tmp_path: Path) -> None:
    callbacks = build_callbacks(default_config(), tmp_path / "run", tmp_path / "ckpt")
    (checkpoint,) = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    assert Path(checkpoint.dirpath) == tmp_path / "ckpt"


def test_each_section_can_be_switched_off(tmp_path: Path) -> None:
    sections = {
        "checkpoint": ModelCheckpoint,
        "lr_monitor": LearningRateMonitor,
        "progress_bar": TQDMProgressBar,
        "utilization": UtilizationMonitor,
        "throughput": ThroughputMonitor,
        "samples": SampleTableLogger,
    }
    for section, kind in sections.items():
        callbacks = build_callbacks(default_config(**{f"{section}.enabled": False}), tmp_path)
        assert not any(isinstance(callback, kind) for callback in callbacks), section
        assert len(callbacks) == len(sections) - 1


def test_the_rich_progress_bar_is_selectable_and_a_typo_is_named(tmp_path: Path) -> None:
    callbacks = build_callbacks(default_config(**{"progress_bar.kind": "rich"}), tmp_path)
    assert any(isinstance(callback, RichProgressBar) for callback in callbacks)
    with pytest.raises(ValueError, match=r"callbacks\.progress_bar\.kind='tdqm'"):
        build_callbacks(default_config(**{"progress_bar.kind": "tdqm"}), tmp_path)


def test_the_train_config_composes_the_group_and_overrides_reach_the_callbacks(
    tmp_path: Path,
) -> None:
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose(
            "train",
            overrides=[
                "callbacks.throughput.window=7",
                "callbacks.checkpoint.every_n_train_steps=100",
            ],
        )
    callbacks = build_callbacks(cfg.callbacks, tmp_path)
    throughput = next(c for c in callbacks if isinstance(c, ThroughputMonitor))
    checkpoint = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    assert throughput.window == 7
    assert checkpoint._every_n_train_steps == 100


def test_outside_a_terminal_the_progress_bar_redraws_rarely(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    cfg = default_config(**{"progress_bar.refresh_rate": 1, "progress_bar.log_refresh_rate": 200})
    (bar,) = [c for c in build_callbacks(cfg, tmp_path) if isinstance(c, TQDMProgressBar)]
    assert bar.refresh_rate == 200  # a log file gets a line per 200 batches, not per batch
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    (bar,) = [c for c in build_callbacks(cfg, tmp_path) if isinstance(c, TQDMProgressBar)]
    assert bar.refresh_rate == 1
