"""TensorRT: the CPU-side contract everywhere, engines against ONNX Runtime on a GPU."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from data_synth.paths import CONF_DIR
from spellfix.correct import Corrector
from spellfix.export.tensorrt import INSTALL_HINT, _profile_shapes, build_engines

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def tensorrt_config(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("export", overrides=list(overrides)).tensorrt


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_the_error_is_one_line_naming_the_extra(tmp_path):
    with pytest.raises(ImportError) as error:
        build_engines(tmp_path, tensorrt_config())
    message = str(error.value)
    assert message == INSTALL_HINT  # the one message every TensorRT entry point raises
    assert "pip install 'spellfix[tensorrt]'" in message and "\n" not in message


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_names_the_extra(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ImportError, match=r"spellfix\[tensorrt\]"):
        Corrector.from_pretrained(tmp_path, backend="tensorrt")


def test_profile_shapes_come_from_the_config():
    manifest = {
        "kv_cache": {
            "num_heads": 4,
            "head_dim": 8,
            "past": ["past.0.key"],
            "cross": ["cross.0.key"],
        },
        "generation": {"max_input_tokens": 64, "max_decoder_positions": 64},
    }
    shapes = _profile_shapes(manifest, tensorrt_config().profile)
    assert shapes["input_ids"] == ((1, 1), (8, 16), (64, 64))
    assert shapes["decoder_input_ids"] == ((1, 1), (8, 1), (64, 1))
    # The first step runs with an empty cache, so the profile must admit length 0.
    assert shapes["past.0.key"] == ((1, 4, 0, 8), (8, 4, 16, 8), (64, 4, 63, 8))
    assert shapes["cross.0.key"][2] == (64, 4, 64, 8)
    too_long = tensorrt_config("tensorrt.profile.source_length=[1,16,512]").profile
    with pytest.raises(ValueError, match=r"tensorrt\.profile"):
        _profile_shapes(manifest, too_long)


def _gpu_ready() -> bool:
    if not HAS_TENSORRT:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not _gpu_ready(), reason="needs a CUDA GPU and TensorRT")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engines_match_onnxruntime(onnx_export_dir: Path, tmp_path: Path, precision: str):
    export_dir = tmp_path / "export"
    shutil.copytree(onnx_export_dir, export_dir)
    cfg = tensorrt_config(
        f"tensorrt.precision={precision}",
        f"tensorrt.timing_cache={tmp_path / 'timing.cache'}",
    )
    summary = build_engines(export_dir, cfg)
    metadata = json.loads((export_dir / "tensorrt" / "engines.json").read_text())
    assert metadata["validation"]["max_abs_diff"] <= cfg.tolerance
    assert (tmp_path / "timing.cache").stat().st_size > 0
    if precision == "fp16":
        assert metadata["engines"]["decoder"]["fp32_pinned_layers"] > 0
    assert summary["files"][0] == "tensorrt/encoder.plan"
    queries = ["queen bohemian rhapsody", "news podcasts", "beyoncé halo", ""]
    engines = Corrector.from_pretrained(export_dir, backend="tensorrt", batch_size=3)
    reference = Corrector.from_pretrained(export_dir, backend="onnx", batch_size=3)
    if precision == "fp32":
        assert engines.correct(queries) == reference.correct(queries)
    assert engines.correct(queries)[3] == ""
