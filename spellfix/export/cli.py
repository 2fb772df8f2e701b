"""``spellfix-export``: a trained model -> a validated export directory, all or nothing.

``export(cfg)`` is the plain function (tests call it with a composed config); ``main`` is
the Hydra shim. Every format writes into one staging directory beside ``output_dir``,
which is renamed into place only after every format has written and validated, so a
failed run leaves no ``output_dir`` behind.

Formats are a registry (``FORMATS``): each entry takes the config and the staging
directory and returns a summary. A new format (the Triton model repository) is one more
entry; its exporter finds the ONNX graphs and ``manifest.json`` already in the directory.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from data_synth.app import Interrupted, hydra_app
from data_synth.files import staged_directory
from spellfix.export.onnx import MANIFEST_FORMAT, export_onnx
from spellfix.export.ort_runner import MANIFEST_NAME
from spellfix.export.validation import ExportValidationError, builtin_validation_queries


class ExportConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


def load_validation_queries(cfg: DictConfig) -> tuple[list[str], str]:
    """The queries the greedy check runs on, and a description for the manifest.

    A dataset dir gives its ``split``/``column``; a text file one query per line; nothing
    gives the built-in list. A source with fewer than ``num_queries`` is topped up from the
    built-in list, so the check always covers ``num_queries`` queries.
    """
    wanted = cfg.num_queries
    if cfg.queries is None:
        return builtin_validation_queries(wanted), "built-in list + seeded random strings"
    source = Path(cfg.queries)
    if source.is_dir():
        import datasets

        loaded = datasets.load_from_disk(str(source))
        if isinstance(loaded, datasets.DatasetDict):
            if cfg.split not in loaded:
                raise ExportConfigError(
                    f"validation.split={cfg.split!r} not in {source} (splits: {list(loaded)})"
                )
            loaded = loaded[cfg.split]
        if cfg.column not in loaded.column_names:
            raise ExportConfigError(
                f"validation.column={cfg.column!r} not in {source} (columns: {loaded.column_names})"
            )
        texts = loaded[cfg.column]
        described = f"{source} [{cfg.split}].{cfg.column}"
    elif source.is_file():
        texts = source.read_text(encoding="utf-8").splitlines()
        described = str(source)
    else:
        raise ExportConfigError(f"validation.queries={source} is neither a directory nor a file")
    queries = list(dict.fromkeys(text for text in texts if text.strip()))[:wanted]
    if len(queries) < wanted:
        extra = builtin_validation_queries(wanted - len(queries))
        described += f" ({len(queries)}) + built-in ({len(extra)})"
        queries += extra
    return queries, described


def _export_onnx_format(cfg: DictConfig, staging: Path) -> dict:
    queries, source = load_validation_queries(cfg.validation)
    manifest = export_onnx(
        cfg.model_path,
        staging,
        opset=cfg.onnx.opset,
        precision=cfg.onnx.precision,
        tolerance=cfg.validation.tolerance,
        fp16_tolerance=cfg.validation.fp16_tolerance,
        fp16_min_greedy_agreement=cfg.validation.fp16_min_greedy_agreement,
        int8_tolerance=cfg.validation.int8_tolerance,
        int8_min_greedy_agreement=cfg.validation.int8_min_greedy_agreement,
        validation_queries=queries,
        validation_source=source,
    )
    validation = manifest["validation"]
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in validation["max_abs_diff"].items())
    greedy, decoded = validation["greedy"], validation["corrections"]
    return {
        "files": sorted(manifest["files"]),
        "verified": [
            f"max abs diff vs PyTorch (tolerance {validation['tolerance']:g}): {diffs}",
            f"greedy identical to PyTorch on {greedy['identical']}/{greedy['queries']} "
            f"queries from {greedy['source']}",
            f"corrections identical to PyTorch on {decoded['identical']}/{decoded['queries']} "
            f"queries ({decoded['mode']} decoding; confidence max abs diff "
            f"{decoded['max_confidence_diff']:.1e})",
        ],
    }


def _export_tensorrt_format(cfg: DictConfig, staging: Path) -> dict:
    from spellfix.export.tensorrt import build_engines

    return build_engines(staging, cfg.tensorrt)


def _export_triton_format(cfg: DictConfig, staging: Path) -> dict:
    from spellfix.export.triton import REPOSITORY_DIR, RepositorySettings, write_repository

    settings = RepositorySettings.from_config(cfg.triton)
    return write_repository(staging, staging / REPOSITORY_DIR, settings)


# Format name -> exporter, in the order they run (later formats build on earlier files).
FORMATS: dict[str, Callable[[DictConfig, Path], dict]] = {
    "onnx": _export_onnx_format,
    "tensorrt": _export_tensorrt_format,
    "triton": _export_triton_format,
}


def export(cfg: DictConfig) -> dict:
    """Export ``cfg.model_path`` to ``cfg.output_dir`` in ``cfg.formats``; returns a summary.

    Raises ``ExportConfigError`` for bad settings and ``ExportValidationError`` when the
    export does not reproduce the PyTorch model; either way nothing is left in place.
    """
    for key in ("model_path", "output_dir"):
        if cfg.get(key) is None:
            name = "model" if key == "model_path" else key
            raise ExportConfigError(f"{name} is required: spellfix-export {name}=<path>")
    unknown = [name for name in cfg.formats if name not in FORMATS]
    if unknown:
        raise ExportConfigError(f"formats: unknown {unknown}; choose from {list(FORMATS)}")
    if not Path(cfg.model_path).exists():
        raise ExportConfigError(f"model={cfg.model_path} does not exist")
    output = Path(cfg.output_dir)
    if output.exists() and not cfg.overwrite:
        raise ExportConfigError(f"output_dir={output} exists; choose another or set overwrite=true")
    if output.exists() and not _is_replaceable_export(output):
        raise ExportConfigError(
            f"output_dir={output} exists and is not a spellfix export; overwrite=true only "
            "replaces an earlier export: choose another output_dir"
        )
    if cfg.validation.num_queries < 1:  # 0 would quietly fall back to the built-in 200
        raise ExportConfigError(
            f"validation.num_queries={cfg.validation.num_queries}: validation is always on; "
            "give at least 1 query"
        )
    if "tensorrt" in cfg.formats and cfg.onnx.precision == "int8":
        raise ExportConfigError(
            "formats=[tensorrt] needs onnx.precision=fp32 or fp16: TensorRT does not read "
            "ONNX Runtime's int8 MatMulNBits nodes (export int8 separately for CPU serving)"
        )
    if "triton" in cfg.formats:  # fail before the slow ONNX export, not after it
        from spellfix.export.triton import RepositorySettings

        RepositorySettings.from_config(cfg.triton).check()
    # The ONNX graphs are what every other format is built from.
    formats = [name for name in FORMATS if name == "onnx" or name in cfg.formats]

    with staged_directory(output, if_exists="replace") as staging:
        results = {name: FORMATS[name](cfg, staging) for name in formats}
    summary = {"output_dir": str(output), "formats": results}
    _print_summary(summary)
    return summary


def _is_replaceable_export(path: Path) -> bool:
    """An empty directory, or one an earlier ``spellfix-export`` wrote (its manifest says so)."""
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT


def _print_summary(summary: dict) -> None:
    print(f"spellfix-export: wrote {summary['output_dir']}")
    for name, result in summary["formats"].items():
        print(f"  {name}: {', '.join(result['files'])}")
        for line in result["verified"]:
            print(f"    verified: {line}")


@hydra_app(
    "export",
    "spellfix-export",
    # The loaders and the exporter raise these for a model or setting the user named.
    user_errors=(ValueError, KeyError, TypeError, ImportError),
    model_argument="model_path",
)
def main(cfg: DictConfig) -> int | None:
    """``spellfix-export``; ``model=<x>`` is passed on as ``model_path=<x>`` (see the config)."""
    try:
        export(cfg)
    except ExportValidationError as error:
        print(f"spellfix-export: validation failed, nothing written: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {cfg.output_dir} was not written") from None
    return None


if __name__ == "__main__":
    main()
