"""Score correctors on misspellings and show them side by side: ``spellfix-eval``.

A model's validation loss says little about whether it fixes the typos real people make.
This runs one or more systems (a trained model directory, ``identity``, ``symspell``) over
the same pairs, a TSV/CSV of real misspellings or a ``data_synth`` test split, and reports
the metrics of :mod:`spellfix.metrics` plus throughput, as JSON for machines and a
markdown table for people. The baselines sit in the same table on purpose: a number
without the dictionary speller beside it cannot tell a user whether to ship the model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from data_synth.app import UserConfigError, hydra_app
from data_synth.corpus import CorpusError, read_pairs
from data_synth.files import write_json_atomic, write_text_atomic
from spellfix.baselines import load_system
from spellfix.correct import DeviceError
from spellfix.metrics import compute_metrics, normalize

RESULTS_JSON = "eval_results.json"
RESULTS_MARKDOWN = "eval_results.md"


class EvalInputError(UserConfigError):
    """Input a user must fix (a path, a column, a setting); reported as one line."""


@dataclass
class Pairs:
    """What users typed and what they meant, plus where the pairs came from."""

    sources: list[str]
    references: list[str]
    origin: str
    dropped: str = ""  # rows of a file the reader skipped, and why ("" when none)


def load_pairs(
    path: str | Path,
    pairs_columns: tuple[str, str] = ("misspelled", "correct"),
    dataset_columns: tuple[str, str] = ("noisy", "clean"),
    split: str = "test",
    limit: int | None = None,
    columns_key: str = "pairs_columns",
    path_key: str = "pairs",
) -> Pairs:
    """Read pairs from a TSV/CSV file with a header row or a ``data_synth`` dataset dir.

    Columns are ``(source, target)`` header names; ``path_key`` and ``columns_key`` are
    the settings that name the file and its columns, for the errors that say what to fix.
    A directory is read with ``datasets.load_from_disk`` and its ``split`` is used. A file
    is read by the corpus reader, so lines it cannot use are counted (``Pairs.dropped``)
    rather than fatal.
    """
    path = Path(path)
    if not path.exists():
        raise EvalInputError(
            f"{path_key}={path} does not exist; set {path_key}=<TSV/CSV file or dataset dir>"
        )
    if limit is not None and limit < 1:
        raise EvalInputError(f"limit must be a positive number of pairs or null, got {limit}")
    dropped = ""
    if path.is_dir():
        sources, references, origin = _read_dataset_split(path, dataset_columns, split)
    else:
        fix = f"set {columns_key}.source and {columns_key}.target to columns it has"
        try:
            sources, references, report = read_pairs(path, pairs_columns, fix)
        except CorpusError as error:
            raise EvalInputError(str(error)) from None
        origin = str(path)
        if report.kept < report.read:
            dropped = report.summary()
    if limit is not None:
        sources, references = sources[:limit], references[:limit]
    if not sources:
        raise EvalInputError(f"{dropped or origin}: no pairs to evaluate")
    return Pairs(sources, references, origin, dropped)


def _read_dataset_split(
    path: Path, columns: tuple[str, str], split: str
) -> tuple[list[str], list[str], str]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except FileNotFoundError as error:
        raise EvalInputError(
            f"{path} is a directory but not a saved dataset ({error}); "
            f"point pairs= at a data_synth dataset directory or a TSV/CSV file"
        ) from error
    origin = str(path)
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise EvalInputError(
                f"dataset {path} has no split {split!r} (splits: {', '.join(dataset)}); "
                f"set split=<one of those>"
            )
        dataset = dataset[split]
        origin = f"{path} [{split}]"
    for key, column in zip(("source", "target"), columns, strict=True):
        if column not in dataset.column_names:
            raise EvalInputError(
                f"dataset {origin} has no column {column!r} "
                f"(columns: {', '.join(dataset.column_names)}); set dataset_columns.{key}=<one>"
            )
    return list(dataset[columns[0]]), list(dataset[columns[1]]), origin


def describe_pairs(pairs: Pairs) -> dict[str, Any]:
    """Counts that change how the metrics read: how many inputs are already correct
    (ignoring case, as the metrics do) and how many of those differ only in case, like
    ``presbyterian -> Presbyterian`` in the real misspelling lists."""
    clean = [
        (source, reference)
        for source, reference in zip(pairs.sources, pairs.references, strict=True)
        if normalize(source) == normalize(reference)
    ]
    case_only = sum(
        normalize(source, cased=True) != normalize(reference, cased=True)
        for source, reference in clean
    )
    return {
        "path": pairs.origin,
        "n": len(pairs.sources),
        "n_clean": len(clean),
        "n_case_only": case_only,
        "dropped": pairs.dropped,
    }


def evaluate_system(
    system_name: str, pairs: Pairs, cfg: DictConfig, show_errors: int = 0
) -> dict[str, Any]:
    """Load one system, correct every pair once and score it.

    Throughput is measured over that single pass and excludes loading (a dictionary
    build or a model load happens once per process, not per query).
    """
    system = load_system(
        system_name,
        backend=cfg.backend,
        device=cfg.device,
        batch_size=cfg.batch_size,
        num_beams=cfg.num_beams,
    )
    started = time.perf_counter()
    predictions = system.correct(list(pairs.sources))
    seconds = time.perf_counter() - started
    if len(predictions) != len(pairs.sources):
        raise RuntimeError(
            f"system {system.name} returned {len(predictions)} corrections "
            f"for {len(pairs.sources)} queries"
        )
    errors = [
        {"source": source, "prediction": prediction, "reference": reference}
        for source, prediction, reference in zip(
            pairs.sources, predictions, pairs.references, strict=True
        )
        if normalize(prediction) != normalize(reference)
    ]
    return {
        "system": system.name,
        **compute_metrics(pairs.sources, predictions, pairs.references),
        "queries_per_s": len(predictions) / seconds if seconds > 0 else float("inf"),
        "seconds": seconds,
        "errors": errors[:show_errors],
    }


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def markdown_report(results: dict[str, Any]) -> str:
    """The side-by-side table people read, with the data set's caveats above it."""
    pairs = results["pairs"]
    lines = [
        f"Pairs: `{pairs['path']}`: {pairs['n']} queries, {pairs['n_clean']} already correct "
        f"ignoring case ({pairs['n_case_only']} of them differ only in case).",
        *([f"Lines skipped: {pairs['dropped']}."] if pairs["dropped"] else []),
        "",
        "| system | accuracy | cased acc. | CER | WER | corr. precision | corr. recall "
        "| over-correction | queries/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["systems"]:
        lines.append(
            f"| {row['system']} | {_percent(row['exact_match'])} "
            f"| {_percent(row['exact_match_cased'])} | {_percent(row['cer'])} "
            f"| {_percent(row['wer'])} | {_percent(row['correction_precision'])} "
            f"| {_percent(row['correction_recall'])} | {_percent(row['overcorrection_rate'])} "
            f"| {row['queries_per_s']:,.0f} |"
        )
    lines += [
        "",
        "accuracy: exact match ignoring case and extra spaces; CER/WER: edit distance to the "
        "correct text per reference character/word; correction precision: share of the "
        "system's word changes that were right; recall: share of misspelled words fixed; "
        "over-correction: share of already-correct queries the system changed.",
    ]
    for row in results["systems"]:
        if row["errors"]:
            lines += ["", f"Wrong corrections by {row['system']} (first {len(row['errors'])}):", ""]
            lines += [
                f"- `{e['source']}` -> `{e['prediction']}` (expected `{e['reference']}`)"
                for e in row["errors"]
            ]
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    """NaN (an undefined ratio) becomes null, since strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _system_names(cfg: DictConfig) -> list[str]:
    names = ([str(cfg.system)] if cfg.system is not None else []) + [str(s) for s in cfg.systems]
    unique = list(dict.fromkeys(names))
    if not unique:
        raise EvalInputError(
            "no system to evaluate; set model=<dir|identity|symspell> or systems=[...]"
        )
    return unique


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate every configured system on the configured pairs and write the report.

    Returns the results (``pairs`` description, one ``systems`` row per system with the
    metric keys, ``queries_per_s`` and sample ``errors``) and the paths written.
    """
    if cfg.pairs is None:
        raise EvalInputError("no pairs to evaluate on; set pairs=<TSV/CSV file or dataset dir>")
    output_dir = OmegaConf.select(cfg, "output_dir", throw_on_resolution_failure=False)
    if output_dir is None:
        raise EvalInputError(
            "output_dir is not set and there is no Hydra run dir; set output_dir=<dir>"
        )
    for key in ("batch_size", "num_beams"):
        if cfg[key] < 1:
            raise EvalInputError(f"{key}={cfg[key]}: expected a whole number >= 1")
    system_names = _system_names(cfg)
    pairs = load_pairs(
        cfg.pairs,
        pairs_columns=(cfg.pairs_columns.source, cfg.pairs_columns.target),
        dataset_columns=(cfg.dataset_columns.source, cfg.dataset_columns.target),
        split=cfg.split,
        limit=cfg.limit,
    )
    results: dict[str, Any] = {
        "pairs": describe_pairs(pairs),
        "systems": [evaluate_system(name, pairs, cfg, cfg.show_errors) for name in system_names],
    }
    markdown = markdown_report(results)
    json_path, markdown_path = Path(output_dir) / RESULTS_JSON, Path(output_dir) / RESULTS_MARKDOWN
    write_json_atomic(json_path, _json_safe(results))
    write_text_atomic(markdown_path, markdown)
    print(markdown)
    print(f"Wrote {json_path} and {markdown_path}")
    return {**results, "json_path": str(json_path), "markdown_path": str(markdown_path)}


@hydra_app("eval", "spellfix-eval", user_errors=(DeviceError,), model_argument="system")
def main(cfg: DictConfig) -> None:
    """``spellfix-eval``: bad input ends in one line on stderr and exit status 2."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
