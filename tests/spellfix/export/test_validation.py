"""Export validation: a graph that does not compute what PyTorch computes is refused, and
an export that fails validation is never left on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from hydra import compose, initialize_config_dir

from data_synth.paths import CONF_DIR
from spellfix.export.cli import export
from spellfix.export.validation import ExportValidationError, validate_export
from spellfix.loading import load_seq2seq

pytestmark = pytest.mark.slow


def test_corrupted_graph_fails_validation(
    tiny_model_dir, onnx_export_dir, tmp_path, sample_queries
):
    broken = tmp_path / "broken"
    shutil.copytree(onnx_export_dir, broken)
    _perturb_largest_weight(broken / "decoder.onnx")
    with pytest.raises(ExportValidationError, match="differs from PyTorch"):
        validate_export(
            broken, load_seq2seq(tiny_model_dir), tolerance=1e-4, queries=sample_queries
        )


def test_export_that_fails_validation_leaves_no_output_dir(tiny_model_dir, tmp_path, monkeypatch):
    import spellfix.export.onnx as onnx_export

    original = onnx_export._export_decoder

    def export_then_corrupt(model, path, *args):
        original(model, path, *args)
        _perturb_largest_weight(path)

    monkeypatch.setattr(onnx_export, "_export_decoder", export_then_corrupt)
    output = tmp_path / "exports" / "tiny"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("export", [f"model_path={tiny_model_dir}", f"output_dir={output}"])
    with pytest.raises(ExportValidationError):
        export(cfg)
    assert list((tmp_path / "exports").iterdir()) == []  # neither output nor staging dir


def _perturb_largest_weight(path: Path) -> None:
    """Simulate a broken exporter: scale the biggest weight matrix of a graph by 1.5."""
    model = onnx.load(str(path))
    largest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    values = onnx.numpy_helper.to_array(largest) * 1.5
    largest.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), largest.name))
    onnx.save(model, str(path))
