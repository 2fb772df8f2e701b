"""One validated ONNX export of the shared tiny model, reused by the export and Corrector tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def onnx_export_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spellfix.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("export") / "tiny_onnx"
    export_onnx(tiny_model_dir, out)
    return out
