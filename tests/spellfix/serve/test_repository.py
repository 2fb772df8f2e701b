"""The Triton model repository: what spellfix-export writes, and the config check guarding it."""

from __future__ import annotations

import ast
import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from data_synth.paths import CONF_DIR
from spellfix.export.triton import (
    RepositorySettings,
    TritonConfigError,
    check_repository,
    write_repository,
)
from spellfix.serve import SERVER_PYTHON_PACKAGES, TritonServer, free_ports

pytestmark = pytest.mark.slow


def _settings(**changes) -> RepositorySettings:
    """conf/export.yaml's triton section (what the export fixture used), with changes."""
    defaults = OmegaConf.load(CONF_DIR / "export.yaml").triton
    return dataclasses.replace(RepositorySettings.from_config(defaults), **changes)


def _imported_modules(path: Path) -> set[str]:
    """Modules a file needs: an import tried first with an ImportError fallback is optional."""
    tree = ast.parse(path.read_text())
    optional = {
        id(statement)
        for node in ast.walk(tree)
        if isinstance(node, ast.Try)
        and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers)
        for statement in node.body
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module.split(".")[0])
    return names


def test_export_writes_a_repository_whose_public_model_matches_the_config(triton_export):
    configs = check_repository(triton_export["inprocess"])
    assert sorted(configs) == ["spellfix"]
    public = configs["spellfix"]
    defaults = _settings()
    assert public.backend == "python"
    assert public.max_batch_size == defaults.max_batch_size
    assert [(i.name, i.data_type, list(i.dims)) for i in public.input] == [("TEXT", 13, [1])]
    # The correction, its confidence (FP32) and a "did you mean" suggestion.
    assert [(o.name, o.data_type, list(o.dims)) for o in public.output] == [
        ("CORRECTED", 13, [1]),
        ("CONFIDENCE", 11, [1]),
        ("SUGGESTION", 13, [1]),
    ]
    batching = public.dynamic_batching
    assert batching.max_queue_delay_microseconds == defaults.max_queue_delay_microseconds
    assert [(g.count, g.kind) for g in public.instance_group] == [(defaults.instance_count, 2)]
    version = triton_export["inprocess"] / "spellfix" / "1"
    # Self-contained: the server needs nothing from the export directory or from spellfix.
    assert {"model.py", "ort_runner.py", "decoding.py"} <= {p.name for p in version.iterdir()}
    assert {"decoding.json", "lexicon.tsv"} <= {p.name for p in (version / "export").iterdir()}
    assert {"encoder.onnx", "decoder.onnx", "manifest.json", "tokenizer.json"} <= {
        p.name for p in (version / "export").iterdir()
    }


def test_server_side_files_import_only_what_the_server_python_has(triton_export):
    allowed = {"json", "logging", "math", "pathlib", "__future__"}
    allowed |= {"copy", "re", "unicodedata", "collections", "dataclasses", "typing"}
    allowed |= {"triton_python_backend_utils", "ort_runner", "decoding"}
    # What spellfix-serve installs into (and checks in) the server's Python.
    allowed |= {package.split("<")[0] for package in SERVER_PYTHON_PACKAGES}
    assert {"numpy", "onnxruntime", "tokenizers"} <= allowed
    for layout in ("inprocess", "bls"):
        files = sorted(triton_export[layout].glob("*/1/*.py"))
        assert len(files) == (3 if layout == "inprocess" else 5)
        for path in files:
            assert _imported_modules(path) <= allowed, path


def test_model_analyzer_config_sweeps_batch_delay_and_instances(triton_export):
    analyzer = yaml.safe_load((triton_export["export_dir"] / "model_analyzer.yaml").read_text())
    defaults = _settings().model_analyzer
    profile = analyzer["profile_models"]["spellfix"]
    sweep = profile["model_config_parameters"]
    assert sweep["max_batch_size"] == list(defaults["max_batch_size"])
    delays = sweep["dynamic_batching"]["max_queue_delay_microseconds"]
    assert delays == list(defaults["max_queue_delay_microseconds"])
    assert sweep["instance_group"][0]["count"] == list(defaults["instance_count"])
    assert profile["constraints"]["perf_latency_p99"]["max"] == defaults["latency_budget_ms"]
    assert analyzer["model_repository"] == "triton"  # beside the yaml, wherever it is moved
    bls = yaml.safe_load((triton_export["bls"].parent / "model_analyzer.yaml").read_text())
    assert bls["profile_models"]["spellfix"]["bls_composing_models"] == "encoder,decoder"


def test_bls_layout_names_production_backends_for_the_same_graphs(triton_export, tmp_path):
    python = check_repository(triton_export["bls"])
    assert sorted(python) == ["decoder", "encoder", "spellfix"]
    assert python["decoder"].backend == "python"
    assert {i.name for i in python["decoder"].input} >= {"decoder_input_ids", "past.0.key"}

    settings = _settings(layout="bls", backend="onnxruntime")
    repository = tmp_path / "ort" / "triton"
    write_repository(triton_export["export_dir"], repository, settings)
    encoder = check_repository(repository)["encoder"]
    assert encoder.platform == "onnxruntime_onnx"
    assert (repository / "encoder" / "1" / encoder.default_model_filename).is_file()
    assert not (repository / "encoder" / "1" / "model.py").exists()


def test_tensorrt_backend_without_engines_says_how_and_leaves_nothing(triton_export, tmp_path):
    settings = _settings(layout="bls", backend="tensorrt")
    with pytest.raises(TritonConfigError, match=r"tensorrt/encoder\.plan.*formats=\[onnx,tensorrt"):
        write_repository(triton_export["export_dir"], tmp_path / "triton", settings)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"layout": "ensemble"}, "triton.layout"),
        ({"preferred_batch_size": (128,)}, "triton.dynamic_batching.preferred_batch_size"),
        ({"instance_kind": "CPU"}, "triton.instance_group.kind"),
    ],
)
def test_bad_settings_name_their_key(triton_export, tmp_path, change, key):
    with pytest.raises(TritonConfigError, match=key.replace(".", r"\.")):
        write_repository(triton_export["export_dir"], tmp_path / "r", _settings(**change))


def _copy(repository: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(repository, copy)
    return copy


def test_config_check_rejects_a_broken_config_with_its_parse_error(triton_export, tmp_path):
    broken = _copy(triton_export["inprocess"], tmp_path)
    config = broken / "spellfix" / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: 1\n}", "dims: [ 1\n}", 1))
    with pytest.raises(TritonConfigError) as raised:
        check_repository(broken)
    message = str(raised.value)
    assert str(config) in message
    assert "Expected" in message  # protobuf's own words, with line:column
    # The server refuses it before starting a process, with the same message.
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(
        broken, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port
    )
    with pytest.raises(TritonConfigError, match="Expected"):
        server.start()
    assert server.process is None


def test_config_check_rejects_a_name_that_differs_from_its_directory(triton_export, tmp_path):
    renamed = _copy(triton_export["inprocess"], tmp_path)
    config = renamed / "spellfix" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "spellfix"', 'name: "speller"'))
    with pytest.raises(TritonConfigError, match="differs from its directory"):
        check_repository(renamed)
