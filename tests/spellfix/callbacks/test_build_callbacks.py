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
from omegaconf import DictConfig

from data_synth.app import UserConfigError
from data_synth.paths import CONF_DIR
from spellfix.callbacks import build_callbacks
from spellfix.callbacks.gpu_monitor import UtilizationMonitor
from spellfix.callbacks.samples import SampleTableLogger
from spellfix.callbacks.throughput import ThroughputMonitor

# Each entry of conf/callbacks/default.yaml and the callback it builds.
ENTRIES = {
    "checkpoint": ModelCheckpoint,
    "lr_monitor": LearningRateMonitor,
    "progress_bar": TQDMProgressBar,
    "utilization": UtilizationMonitor,
    "throughput": ThroughputMonitor,
    "samples": SampleTableLogger,
}


def callbacks_config(run_dir: Path, *overrides: str) -> DictConfig:
    """The ``callbacks`` group of the composed train config, writing under ``run_dir``."""
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=[f"paths.run_dir={run_dir}", *overrides])
    return cfg.callbacks


def test_the_default_config_builds_every_callback_with_its_settings(tmp_path: Path) -> None:
    callbacks = build_callbacks(callbacks_config(tmp_path))
    assert [type(callback) for callback in callbacks] == list(ENTRIES.values())
    by_type = {type(callback): callback for callback in callbacks}
    checkpoint = by_type[ModelCheckpoint]
    assert Path(checkpoint.dirpath) == tmp_path / "checkpoints"
    assert (checkpoint.monitor, checkpoint.mode, checkpoint.save_last) == ("val/loss", "min", True)
    assert by_type[UtilizationMonitor].interval_s == 0.5
    assert Path(by_type[UtilizationMonitor].output_dir) == tmp_path
    assert by_type[ThroughputMonitor].window == 50
    assert Path(by_type[ThroughputMonitor].output_dir) == tmp_path
    assert by_type[SampleTableLogger].max_rows == 16
    assert by_type[SampleTableLogger].run_dir == tmp_path


def test_checkpoints_go_where_the_paths_config_says(tmp_path: Path) -> None:
    cfg = callbacks_config(tmp_path / "run", f"paths.checkpoint_dir={tmp_path / 'ckpt'}")
    (checkpoint,) = [c for c in build_callbacks(cfg) if isinstance(c, ModelCheckpoint)]
    assert Path(checkpoint.dirpath) == tmp_path / "ckpt"


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_each_entry_can_be_switched_off(tmp_path: Path, entry: str) -> None:
    callbacks = build_callbacks(callbacks_config(tmp_path, f"callbacks.{entry}.enabled=false"))
    assert not any(isinstance(callback, ENTRIES[entry]) for callback in callbacks)
    assert len(callbacks) == len(ENTRIES) - 1


def test_the_rich_progress_bar_is_selectable_and_a_typo_is_named(tmp_path: Path) -> None:
    callbacks = build_callbacks(callbacks_config(tmp_path, "callbacks.progress_bar.kind=rich"))
    assert any(isinstance(callback, RichProgressBar) for callback in callbacks)
    with pytest.raises(UserConfigError, match=r"^callbacks\.progress_bar: kind='tdqm'"):
        build_callbacks(callbacks_config(tmp_path, "callbacks.progress_bar.kind=tdqm"))


def test_an_argument_a_callback_refuses_is_one_line_naming_the_entry(tmp_path: Path) -> None:
    with pytest.raises(UserConfigError, match=r"^callbacks\.utilization: .*interval_s"):
        build_callbacks(callbacks_config(tmp_path, "callbacks.utilization.interval_s=0"))


def test_an_entry_without_a_target_is_named(tmp_path: Path) -> None:
    cfg = callbacks_config(tmp_path, "+callbacks.early_stop.patience=3")
    with pytest.raises(UserConfigError, match=r"^callbacks\.early_stop: no _target_"):
        build_callbacks(cfg)


def test_a_callback_is_added_by_config_alone(tmp_path: Path) -> None:
    cfg = callbacks_config(
        tmp_path,
        "+callbacks.early_stop._target_=lightning.pytorch.callbacks.EarlyStopping",
        "+callbacks.early_stop.monitor=val/loss",
    )
    early_stop = build_callbacks(cfg)[-1]
    assert type(early_stop).__name__ == "EarlyStopping"
    assert early_stop.monitor == "val/loss"


def test_overrides_reach_the_callbacks(tmp_path: Path) -> None:
    callbacks = build_callbacks(
        callbacks_config(
            tmp_path,
            "callbacks.throughput.window=7",
            "callbacks.checkpoint.every_n_train_steps=100",
        )
    )
    throughput = next(c for c in callbacks if isinstance(c, ThroughputMonitor))
    checkpoint = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    assert throughput.window == 7
    assert checkpoint._every_n_train_steps == 100


def test_outside_a_terminal_the_progress_bar_redraws_rarely(tmp_path: Path, monkeypatch) -> None:
    import sys

    cfg = callbacks_config(
        tmp_path,
        "callbacks.progress_bar.refresh_rate=1",
        "callbacks.progress_bar.log_refresh_rate=200",
    )
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    (bar,) = [c for c in build_callbacks(cfg) if isinstance(c, TQDMProgressBar)]
    assert bar.refresh_rate == 200  # a log file gets a line per 200 batches, not per batch
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    (bar,) = [c for c in build_callbacks(cfg) if isinstance(c, TQDMProgressBar)]
    assert bar.refresh_rate == 1
