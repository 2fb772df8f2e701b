"""Writes that a crash or Ctrl-C never leaves half done: the one home for both packages.

A reader (a dashboard, the next run, a Triton server polling its repository) must see
either the old file or the new one. So every file is written beside its target and
renamed over it, and every output directory is built in a staging directory beside
its target and renamed into place when complete. The helpers live in ``data_synth``,
the lowest layer, because both import packages write files and ``data_synth`` may not
import ``spellfix``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` on success.

    Use it for writers that want a file name (``figure.savefig``, ``tokenizer.save``);
    on any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _sibling(path, "tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) so that no reader ever sees half of it."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` so that no reader ever sees half of it."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any, *, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented JSON (non-ASCII kept readable) ending in a newline."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False, default=str)
    return write_text_atomic(path, text + "\n")


@contextmanager
def staged_directory(
    target: str | Path, if_exists: Literal["replace", "keep", "fail"] = "fail"
) -> Iterator[Path]:
    """A fresh directory beside ``target`` to fill; it becomes ``target`` when the block ends.

    On an error inside the block the staging directory is removed and ``target`` is
    untouched. When ``target`` already exists at the end: ``replace`` retires it and
    removes it only once the new one is in place (restoring it if the rename fails),
    ``keep`` leaves it (another process built the same thing first) and drops the new
    one, ``fail`` raises ``FileExistsError``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "partial")
    staging.mkdir()
    try:
        yield staging
        if target.exists() and if_exists == "fail":
            raise FileExistsError(f"{target} exists; remove it or choose another directory")
        try:
            _move_into_place(staging, target, replace=if_exists == "replace")
        except OSError:
            if not (if_exists == "keep" and target.exists()):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path, replace: bool) -> None:
    if not (replace and target.exists()):
        staging.rename(target)
        return
    retired = _sibling(target, "old")
    target.rename(retired)
    try:
        staging.rename(target)
    except OSError:
        retired.rename(target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _sibling(path: Path, kind: str) -> Path:
    """A hidden, unique name beside ``path``. Not ``tempfile``: its files and directories
    are private to the owner, and a model or repository must keep the umask's permissions
    (a Triton server or a colleague may read it as another user)."""
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}")
