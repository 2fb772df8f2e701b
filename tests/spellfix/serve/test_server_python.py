"""The server's Python environment is checked before tritonserver starts, in one line."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from spellfix.serve import TritonServerError, server_python


def _fake_python(env_dir: Path, script: str) -> Path:
    python = env_dir / "bin" / "python3"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return env_dir


def test_a_missing_environment_says_how_to_create_it(tmp_path):
    with pytest.raises(TritonServerError, match="no server Python there; create it with"):
        server_python(tmp_path / "nothing")


def test_a_missing_package_is_named(tmp_path):
    env = _fake_python(
        tmp_path / "env", "echo \"ModuleNotFoundError: No module named 'jellyfish'\" >&2; exit 1"
    )
    with pytest.raises(TritonServerError, match="No module named 'jellyfish'; create it with"):
        server_python(env)


def test_numpy_2_is_refused_with_the_fix(tmp_path):
    env = _fake_python(tmp_path / "env", "echo 3.11; echo /usr/lib; echo 2.1.0")
    with pytest.raises(TritonServerError, match=r"numpy 2\.1\.0; .*pip install 'numpy<2'"):
        server_python(env)


def test_a_probe_that_hangs_is_an_error_not_a_traceback(tmp_path):
    env = _fake_python(tmp_path / "env", "exec sleep 30")
    with pytest.raises(TritonServerError, match=r"took over 0\.5s"):
        server_python(env, probe_timeout_s=0.5)


def test_a_good_environment_is_described(tmp_path):
    env = _fake_python(tmp_path / "env", "echo 3.11; echo /opt/lib; echo 1.26.4")
    described = server_python(env)
    assert (described.version, described.lib_dir) == ("3.11", "/opt/lib")
    assert described.bin_dir == env / "bin"
