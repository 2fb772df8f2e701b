"""An ONNX export -> a Triton model repository that serves the corrector with dynamic batching.

The public model is always ``spellfix``: one string in (``TEXT``); out come the
correction (``CORRECTED``), its confidence (``CONFIDENCE``) and a "did you mean"
suggestion (``SUGGESTION``, empty when none), batched by Triton's dynamic batcher. Two
layouts exist because they trade differently:

- ``inprocess``: one Python-backend model tokenizes, runs the ONNX encoder and the KV-cache
  decoder loop with ONNX Runtime for the whole dynamic batch, and detokenizes. Fewest
  hops, so the lowest latency on a CPU.
- ``bls``: the reference team's design. The ``spellfix`` Python model does the CPU work
  (tokenize, greedy loop, detokenize) and calls separate ``encoder`` and ``decoder`` models
  through Business Logic Scripting. In a production server those two run on the
  ``onnxruntime`` or ``tensorrt_plan`` backends (``backend=onnxruntime|tensorrt``); the
  pip-installed server has only the Python backend, so ``backend=python`` writes them as
  small Python-backend ONNX Runtime models over the very same ONNX files.

The Python model files (``triton_models/``) import only numpy, tokenizers and onnxruntime,
plus ``ort_runner.py`` and ``decoding.py`` copied next to them: they run in the server's
Python, which has neither torch nor spellfix, and decode exactly as every other back end.
Every ``config.pbtxt`` is built as Triton's own ``ModelConfig`` protobuf, field by field,
and written in protobuf's text format, so it cannot be malformed or name a field Triton
lacks; tritonclient provides that protobuf and comes with the ``serve`` extra. Each
config is parsed back before the repository is moved into place, and ``spellfix-serve``
parses a repository the same way, so a broken or hand-edited config fails with its parse
error instead of at server start.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from data_synth.files import staged_directory, write_text_atomic
from spellfix.decoding import CATALOG_FILE, DECODING_FILE, LEXICON_FILE
from spellfix.export.ort_runner import MANIFEST_NAME, load_manifest

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import (
        ModelConfig,
        ModelInput,
        ModelInstanceGroup,
        ModelOutput,
    )

PUBLIC_MODEL = "spellfix"
ENCODER_MODEL = "encoder"
DECODER_MODEL = "decoder"
REPOSITORY_DIR = "triton"
ANALYZER_CONFIG = "model_analyzer.yaml"
# Inside the spellfix model's version directory: the tokenizer, manifest (and, for the
# inprocess layout, the graphs) that ort_runner.OrtSeq2Seq loads.
EXPORT_SUBDIR = "export"
MODEL_FILES_DIR = Path(__file__).resolve().parent / "triton_models"
ORT_RUNNER = Path(__file__).resolve().parent / "ort_runner.py"
DECODING = Path(__file__).resolve().parent.parent / "decoding.py"
TENSORRT_ENGINE_DIR = "tensorrt"  # where spellfix.export.tensorrt writes <graph>.plan

DECODING_FILES = (DECODING_FILE, LEXICON_FILE, CATALOG_FILE)

LAYOUTS = ("inprocess", "bls")
GRAPH_BACKENDS = ("python", "onnxruntime", "tensorrt")
INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")
SERVE_EXTRA_MISSING = (
    "writing or checking a Triton model config needs tritonclient: pip install 'spellfix[serve]'"
)
_TRITON_TYPES = {
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bool": "TYPE_BOOL",
}


class TritonConfigError(ValueError):
    """A config.pbtxt Triton would refuse, or a setting (or a missing extra) that cannot
    produce one."""


@dataclass(frozen=True)
class RepositorySettings:
    """What ``conf/export.yaml``'s ``triton:`` section decides; see that file for each key."""

    layout: str = "inprocess"
    backend: str = "python"
    max_batch_size: int = 64
    dynamic_batching: bool = True
    max_queue_delay_microseconds: int = 100
    preferred_batch_size: tuple[int, ...] = ()
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    intra_op_threads: int | None = 1
    model_analyzer: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RepositorySettings:
        """Build from the ``triton:`` config section (a DictConfig or a plain dict)."""
        batching = cfg["dynamic_batching"]
        instances = cfg["instance_group"]
        analyzer = cfg.get("model_analyzer") or {}
        return cls(
            layout=cfg["layout"],
            backend=cfg["backend"],
            max_batch_size=int(cfg["max_batch_size"]),
            dynamic_batching=bool(batching["enabled"]),
            max_queue_delay_microseconds=int(batching["max_queue_delay_microseconds"]),
            preferred_batch_size=tuple(int(s) for s in batching.get("preferred_batch_size") or ()),
            instance_count=int(instances["count"]),
            instance_kind=str(instances["kind"]),
            intra_op_threads=cfg.get("intra_op_threads"),
            model_analyzer={key: analyzer[key] for key in analyzer},
        )

    def check(self) -> None:
        """Reject settings Triton would refuse later, naming the ``triton.*`` key and the fix.

        A missing ``serve`` extra is reported here too, so that ``spellfix-export`` fails
        before the slow ONNX export rather than after it.
        """
        if self.layout not in LAYOUTS:
            raise TritonConfigError(f"triton.layout={self.layout!r}: choose one of {LAYOUTS}")
        if self.backend not in GRAPH_BACKENDS:
            raise TritonConfigError(
                f"triton.backend={self.backend!r}: choose one of {GRAPH_BACKENDS}"
            )
        if self.max_batch_size < 1:
            raise TritonConfigError(f"triton.max_batch_size={self.max_batch_size}: must be >= 1")
        too_big = [s for s in self.preferred_batch_size if not 1 <= s <= self.max_batch_size]
        if too_big:
            raise TritonConfigError(
                f"triton.dynamic_batching.preferred_batch_size {too_big}: each must be "
                f"between 1 and triton.max_batch_size={self.max_batch_size}"
            )
        if self.max_queue_delay_microseconds < 0:
            raise TritonConfigError("triton.dynamic_batching.max_queue_delay_microseconds: >= 0")
        if self.instance_count < 1:
            raise TritonConfigError(f"triton.instance_group.count={self.instance_count}: >= 1")
        if self.instance_kind not in INSTANCE_KINDS:
            raise TritonConfigError(
                f"triton.instance_group.kind={self.instance_kind!r}: choose one of {INSTANCE_KINDS}"
            )
        _protobuf()


# --------------------------------------------------------------------------- ModelConfig
def _protobuf() -> tuple[ModuleType, ModuleType]:
    """tritonclient's ``model_config_pb2`` (as ``pb`` below) and protobuf's ``text_format``,
    or ``TritonConfigError`` naming the fix in one line.

    Imported here, not at the top: tritonclient comes with the optional ``serve`` extra,
    and everything else in spellfix (the ONNX and TensorRT exports included) runs without it.
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise TritonConfigError(SERVE_EXTRA_MISSING) from None
    return model_config_pb2, text_format


def parse_model_config(text: str, source: str | Path) -> ModelConfig:
    """Parse config.pbtxt text into ``ModelConfig``; a parse error names ``source`` and where."""
    pb, text_format = _protobuf()
    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise TritonConfigError(f"{source}: not a valid Triton ModelConfig: {error}") from None
    return config


def check_repository(repository: str | Path) -> dict[str, ModelConfig]:
    """Parse every ``<model>/config.pbtxt`` of a repository; returns model name -> ModelConfig.

    Besides the syntax, a config whose ``name`` differs from its directory is rejected:
    Triton refuses to load such a model, and only says so at server start.
    """
    repository = Path(repository)
    configs = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        config = parse_model_config(path.read_text(encoding="utf-8"), path)
        if config.name and config.name != path.parent.name:
            raise TritonConfigError(
                f"{path}: name {config.name!r} differs from its directory "
                f"{path.parent.name!r}; Triton would not load it"
            )
        configs[path.parent.name] = config
    if PUBLIC_MODEL not in configs:
        raise TritonConfigError(f"{repository}: no {PUBLIC_MODEL}/config.pbtxt")
    return configs


def _tensors(
    message: type[ModelInput | ModelOutput], tensors: list[dict]
) -> list[ModelInput | ModelOutput]:
    """``ModelInput``s or ``ModelOutput``s of ``{name, dtype, shape}`` rows, as the manifest
    describes a graph; a symbolic (named) dimension is Triton's -1."""
    pb, _ = _protobuf()
    return [
        message(
            name=tensor["name"],
            data_type=pb.DataType.Value(_TRITON_TYPES[tensor["dtype"]]),
            dims=[d if isinstance(d, int) else -1 for d in tensor["shape"]],
        )
        for tensor in tensors
    ]


def _instance_group(settings: RepositorySettings) -> ModelInstanceGroup:
    """The ``instance_group`` entry every model of the repository shares."""
    pb, _ = _protobuf()
    kind = pb.ModelInstanceGroup.Kind.Value(settings.instance_kind)
    return pb.ModelInstanceGroup(count=settings.instance_count, kind=kind)


def _set_python_parameters(
    config: ModelConfig, parameters: dict[str, Any], settings: RepositorySettings
) -> None:
    """What a Python-backend model file reads from its config: ``parameters`` and the ONNX
    Runtime thread count, each a string as Triton passes them."""
    if settings.intra_op_threads is not None:
        parameters = {**parameters, "intra_op_threads": settings.intra_op_threads}
    for key, value in parameters.items():
        config.parameters[key].string_value = str(value)


def public_model_config(settings: RepositorySettings) -> ModelConfig:
    """``ModelConfig`` of ``spellfix``: strings in, strings out, batched by Triton."""
    pb, _ = _protobuf()
    config = pb.ModelConfig(
        name=PUBLIC_MODEL,
        backend="python",
        max_batch_size=settings.max_batch_size,
        input=[pb.ModelInput(name="TEXT", data_type=pb.TYPE_STRING, dims=[1])],
        output=[
            pb.ModelOutput(name="CORRECTED", data_type=pb.TYPE_STRING, dims=[1]),
            pb.ModelOutput(name="CONFIDENCE", data_type=pb.TYPE_FP32, dims=[1]),
            pb.ModelOutput(name="SUGGESTION", data_type=pb.TYPE_STRING, dims=[1]),
        ],
        instance_group=[_instance_group(settings)],
    )
    if settings.dynamic_batching:
        config.dynamic_batching.CopyFrom(
            pb.ModelDynamicBatching(
                max_queue_delay_microseconds=settings.max_queue_delay_microseconds,
                preferred_batch_size=settings.preferred_batch_size,
            )
        )
    _set_python_parameters(
        config, {"layout": settings.layout, "export_dir": EXPORT_SUBDIR}, settings
    )
    return config


def graph_model_config(name: str, graph: dict, settings: RepositorySettings) -> ModelConfig:
    """``ModelConfig`` of ``encoder`` or ``decoder`` for the bls layout.

    ``max_batch_size: 0`` because the BLS model already sends whole batches, and its
    decoder calls differ in cache length, so Triton could not batch them together anyway.
    """
    pb, _ = _protobuf()
    config = pb.ModelConfig(
        name=name,
        max_batch_size=0,
        input=_tensors(pb.ModelInput, graph["inputs"]),
        output=_tensors(pb.ModelOutput, graph["outputs"]),
        instance_group=[_instance_group(settings)],
    )
    if settings.backend == "python":
        config.backend = "python"
        _set_python_parameters(config, {"onnx_file": graph["file"]}, settings)
    elif settings.backend == "onnxruntime":
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = graph["file"]
    else:
        config.platform = "tensorrt_plan"
        config.default_model_filename = f"{name}.plan"
    return config


def _write_model_config(model_dir: Path, config: ModelConfig) -> None:
    """``<model_dir>/config.pbtxt``: the ``ModelConfig`` in protobuf's text format."""
    _, text_format = _protobuf()
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")


# --------------------------------------------------------------------------- repository
def _graph_files(export_dir: Path, manifest: dict, graph: str) -> list[Path]:
    """The ONNX file of ``graph`` plus its external-data file when the export wrote one."""
    name = manifest["graphs"][graph]["file"]
    return [export_dir / f for f in manifest["files"] if f == name or f.startswith(name + ".")]


def _copy(files: list[Path], destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy2(path, destination / path.name)


def _write_public_model(
    repository: Path, export_dir: Path, manifest: dict, settings: RepositorySettings
) -> None:
    version = repository / PUBLIC_MODEL / "1"
    version.mkdir(parents=True)
    shutil.copy2(MODEL_FILES_DIR / "spellfix" / "model.py", version / "model.py")
    shutil.copy2(ORT_RUNNER, version / ORT_RUNNER.name)
    shutil.copy2(DECODING, version / DECODING.name)
    files = [export_dir / MANIFEST_NAME]
    files += [export_dir / f for f in manifest["files"] if f.startswith("tokenizer")]
    files += [export_dir / f for f in manifest["files"] if f in DECODING_FILES]
    if settings.layout == "inprocess":
        files += _graph_files(export_dir, manifest, "encoder")
        files += _graph_files(export_dir, manifest, "decoder")
    _copy(files, version / EXPORT_SUBDIR)
    _write_model_config(repository / PUBLIC_MODEL, public_model_config(settings))


def _write_graph_model(
    repository: Path, export_dir: Path, manifest: dict, graph: str, settings: RepositorySettings
) -> None:
    version = repository / graph / "1"
    if settings.backend == "tensorrt":
        plan = export_dir / TENSORRT_ENGINE_DIR / f"{graph}.plan"
        if not plan.is_file():
            raise TritonConfigError(
                f"triton.backend=tensorrt needs {plan}; export with formats=[onnx,tensorrt,triton]"
            )
        _copy([plan], version)
    else:
        _copy(_graph_files(export_dir, manifest, graph), version)
    if settings.backend == "python":
        shutil.copy2(MODEL_FILES_DIR / "onnx_graph" / "model.py", version / "model.py")
    config = graph_model_config(graph, manifest["graphs"][graph], settings)
    _write_model_config(repository / graph, config)


def model_analyzer_config(repository: Path, settings: RepositorySettings) -> str:
    """Model Analyzer YAML: sweep batch size, queue delay and instances under a latency budget.

    Model Analyzer starts its own server on ``repository`` and runs perf_analyzer at each
    point; the constraint keeps only configurations whose p99 fits the budget, and the
    objective ranks those by throughput, the trade the reference team tuned by hand.
    """
    import yaml

    sweep = settings.model_analyzer
    profile: dict[str, Any] = {
        "model_config_parameters": {
            "max_batch_size": list(sweep.get("max_batch_size", [settings.max_batch_size])),
            "dynamic_batching": {
                "max_queue_delay_microseconds": list(
                    sweep.get(
                        "max_queue_delay_microseconds", [settings.max_queue_delay_microseconds]
                    )
                )
            },
            "instance_group": [
                {
                    "kind": settings.instance_kind,
                    "count": list(sweep.get("instance_count", [settings.instance_count])),
                }
            ],
        },
        "parameters": {"concurrency": list(sweep.get("concurrency", [1, 8, 32]))},
        "constraints": {"perf_latency_p99": {"max": sweep.get("latency_budget_ms", 25)}},
        "objectives": ["perf_throughput"],
    }
    if settings.layout == "bls":
        profile["bls_composing_models"] = f"{ENCODER_MODEL},{DECODER_MODEL}"
    config = {
        "model_repository": repository.name,
        "triton_launch_mode": "local",
        "run_config_search_disable": True,
        "profile_models": {PUBLIC_MODEL: profile},
    }
    header = (
        "# Model Analyzer sweep for the spellfix Triton repository beside this file; run it\n"
        f"# from this directory: model-analyzer profile -f {ANALYZER_CONFIG}\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def write_repository(
    export_dir: str | Path, repository: str | Path, settings: RepositorySettings
) -> dict:
    """Write a checked model repository at ``repository`` from an ONNX export directory.

    Everything is written to a temporary sibling first and renamed into place only after
    every config.pbtxt parsed, so a failure leaves no repository behind. The Model Analyzer
    config goes next to the repository (``<parent>/model_analyzer.yaml``).
    Returns the summary ``spellfix-export`` prints.
    """
    settings.check()
    export_dir, repository = Path(export_dir), Path(repository)
    manifest = load_manifest(export_dir)
    if repository.exists():
        raise FileExistsError(f"{repository} exists; remove it or choose another directory")
    with staged_directory(repository, if_exists="fail") as staging:
        _write_public_model(staging, export_dir, manifest, settings)
        if settings.layout == "bls":
            for graph in (ENCODER_MODEL, DECODER_MODEL):
                _write_graph_model(staging, export_dir, manifest, graph, settings)
        models = check_repository(staging)
        analyzer = model_analyzer_config(repository, settings)  # before the rename: no I/O left
    write_text_atomic(repository.parent / ANALYZER_CONFIG, analyzer)
    batching = (
        f"dynamic batching (max queue delay {settings.max_queue_delay_microseconds} us)"
        if settings.dynamic_batching
        else "no dynamic batching"
    )
    graphs = f"graphs on {settings.backend}" if settings.layout == "bls" else "graphs in-process"
    return {
        "files": [f"{repository.name}/{name}/config.pbtxt" for name in sorted(models)]
        + [ANALYZER_CONFIG],
        "verified": [
            f"{len(models)} config.pbtxt parsed as Triton ModelConfig "
            f"(layout {settings.layout}, {graphs}, "
            f"max_batch_size {settings.max_batch_size}, {batching})"
        ],
        "models": sorted(models),
    }
