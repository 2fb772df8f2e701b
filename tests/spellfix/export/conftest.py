"""One validated ONNX export of the shared tiny model, reused by the export and Corrector tests,
and the queries the export tests feed it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def onnx_export_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spellfix.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("export") / "tiny_onnx"
    export_onnx(tiny_model_dir, out)
    return out


@pytest.fixture(scope="session")
def sample_queries() -> list[str]:
    """Queries the shared tiny model was taught to copy (tests/conftest.py), so greedy output
    runs for many steps instead of stopping at once."""
    return [
        "queen bohemian rhapsody",
        "the beatles let it be",
        "news podcasts",
        "beyoncé halo",
        "daft punk get lucky",
        "coldplay yellow",
        "michael jackson thriller",
    ]
