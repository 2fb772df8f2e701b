"""Writes a crash cannot leave half done: what every model, dataset and report relies on."""

import json
import os
import stat

import pytest

from data_synth.files import (
    atomic_path,
    staged_directory,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def _names(directory):
    return sorted(path.name for path in directory.iterdir())


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert _names(tmp_path) == ["report.md"]


def test_writes_replace_the_file_whole_and_create_missing_parents(tmp_path):
    text_path = write_text_atomic(tmp_path / "a" / "notes.txt", "naïve café\n")
    assert text_path.read_text(encoding="utf-8") == "naïve café\n"
    write_bytes_atomic(tmp_path / "a" / "cache.bin", b"\x00\x01")
    assert (tmp_path / "a" / "cache.bin").read_bytes() == b"\x00\x01"
    json_path = write_json_atomic(tmp_path / "a" / "m.json", {"b": 1, "a": "é"}, sort_keys=True)
    assert json_path.read_text(encoding="utf-8") == '{\n  "a": "é",\n  "b": 1\n}\n'
    assert _names(tmp_path / "a") == ["cache.bin", "m.json", "notes.txt"]


def test_files_and_directories_keep_the_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "config.pbtxt", "x")
        with staged_directory(tmp_path / "model") as staging:
            (staging / "weights").write_text("w")
    finally:
        os.umask(previous)
    # tempfile's 0600/0700 would lock out a server running as another user.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


def test_a_staged_directory_appears_only_when_complete(tmp_path):
    target = tmp_path / "model"
    with staged_directory(target) as staging:
        (staging / "config.json").write_text("{}")
        assert not target.exists()
    assert _names(target) == ["config.json"]
    assert _names(tmp_path) == ["model"]


def test_a_failure_inside_leaves_the_old_directory_untouched(tmp_path):
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "manifest.json").write_text(json.dumps({"old": True}))
    with pytest.raises(KeyboardInterrupt), staged_directory(target, "replace") as staging:
        (staging / "manifest.json").write_text("{}")
        raise KeyboardInterrupt
    assert json.loads((target / "manifest.json").read_text()) == {"old": True}
    assert _names(tmp_path) == ["dataset"]


def test_replace_swaps_in_the_new_directory_and_removes_the_old(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.onnx").write_text("old")
    with staged_directory(target, "replace") as staging:
        (staging / "new.onnx").write_text("new")
    assert _names(target) == ["new.onnx"]
    assert _names(tmp_path) == ["export"]


def test_keep_leaves_what_another_process_finished_first(tmp_path):
    target = tmp_path / "backends"
    with staged_directory(target, "keep") as staging:
        (staging / "mine").write_text("late")
        target.mkdir()  # the other process renames its complete copy into place first
        (target / "theirs").write_text("first")
    assert _names(target) == ["theirs"]
    assert _names(tmp_path) == ["backends"]


def test_fail_refuses_to_replace_and_cleans_up(tmp_path):
    target = tmp_path / "repository"
    refused = pytest.raises(FileExistsError, match="repository exists")
    with refused, staged_directory(target, "fail") as staging:
        (staging / "config.pbtxt").write_text("x")
        target.mkdir()
    assert _names(target) == []
    assert _names(tmp_path) == ["repository"]
