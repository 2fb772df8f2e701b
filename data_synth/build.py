"""Corpus + noise profile -> a train/validation/test dataset of (noisy, clean, ops) on disk.

The dataset is what every later stage trusts, so it is built to be trustworthy:

* splits are made by clean query (case and diacritics ignored), so no test query, or a
  case variant of it, was ever seen in training;
* the noise is seeded per fixed-size chunk of queries, so the result depends on the
  configs alone, not on how many processes built it;
* ``manifest.json`` records the corpus fingerprint, the configs, the counts and the
  operation statistics, and ``dataset_fingerprint`` names a dataset by everything that
  shapes it, so the training data module can cache synthesized datasets by that name;
* the dataset is written to a temporary directory and renamed into place, so an
  interrupted run leaves nothing half-built.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import unicodedata
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from data_synth.corpus import (
    CorpusError,
    check_whole_numbers,
    corpus_fingerprint,
    plain_config,
    read_corpus,
)
from data_synth.files import staged_directory
from data_synth.noise.model import NoiseModel
from data_synth.noise.profile import DEFAULT_CONFUSIONS

if TYPE_CHECKING:
    from datasets import DatasetDict

MANIFEST_NAME = "manifest.json"
DATASET_FORMAT = "data_synth.dataset/1"
SPLITS = ("train", "validation", "test")
BUILD_KEYS = (
    "variants_per_query",
    "validation_fraction",
    "test_fraction",
    "seed",
    "num_proc",
    "parallel_min_queries",
    "overwrite",
    "progress",
)
# Keys that change how a dataset is built, never what it contains.
_CONTENT_FREE_KEYS = frozenset({"num_proc", "parallel_min_queries", "overwrite", "progress"})
# Queries per work unit; each chunk has its own noise seed, so output is independent of
# the number of processes. Changing it changes every dataset, hence a constant.
CHUNK_SIZE = 2000
_CODE_FILES = ("noise/*.py", "keyboards.py", "build.py")  # patterns under data_synth/
# Build keys holding a whole number: (smallest value, whether null is allowed).
_WHOLE_NUMBER_KEYS = {
    "variants_per_query": (1, False),
    "seed": (0, False),
    "num_proc": (1, True),
    "parallel_min_queries": (0, False),
}


def check_build_config(build_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The build config as a plain dict; a bad key or value raises naming ``build.<key>``."""
    cfg = plain_config(build_cfg)
    unknown = sorted(set(cfg) - set(BUILD_KEYS))
    if unknown:
        raise CorpusError(f"build.{unknown[0]}: unknown key; valid keys: {', '.join(BUILD_KEYS)}")
    missing = [key for key in BUILD_KEYS if key not in cfg]
    if missing:
        raise CorpusError(f"build.{missing[0]}: missing key; see conf/build/default.yaml")
    # A seed of "abc" would be accepted by random.Random and silently make another dataset.
    check_whole_numbers("build", cfg, _WHOLE_NUMBER_KEYS)
    for key in ("overwrite", "progress"):
        if not isinstance(cfg[key], bool):
            raise CorpusError(f"build.{key}: expected true or false, got {cfg[key]!r}")
    for key in ("validation_fraction", "test_fraction"):
        if not isinstance(cfg[key], int | float) or not 0 < cfg[key] < 1:
            raise CorpusError(f"build.{key}: expected a number in (0, 1), got {cfg[key]!r}")
    if cfg["validation_fraction"] + cfg["test_fraction"] >= 1:
        raise CorpusError("build.validation_fraction + build.test_fraction must stay below 1")
    return cfg


def dataset_fingerprint(
    corpus_cfg: Mapping[str, Any], noise_cfg: Mapping[str, Any], build_cfg: Mapping[str, Any]
) -> str:
    """A stable hex name for the dataset these configs produce (for caching by name).

    It covers the corpus content, the noise config and its confusion table, the build
    keys that shape the rows, and the source of the noise code itself, so that a changed
    typo operation is never served from a stale cache.
    """
    noise = plain_config(noise_cfg)
    build = check_build_config(build_cfg)
    table = Path(noise.get("confusions") or DEFAULT_CONFUSIONS)
    here = Path(__file__).parent
    parts = {
        "format": DATASET_FORMAT,
        "corpus": corpus_fingerprint(corpus_cfg),
        "noise": noise,
        "confusions": hashlib.sha256(table.read_bytes()).hexdigest() if table.is_file() else "",
        "build": {key: value for key, value in build.items() if key not in _CONTENT_FREE_KEYS},
        "code": [
            hashlib.sha256(path.read_bytes()).hexdigest()
            for pattern in _CODE_FILES
            for path in sorted(here.glob(pattern))
        ],
    }
    encoded = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def split_key(text: str) -> str:
    """What two clean queries share when they count as the same query for splitting."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def split_queries(
    texts: list[str], validation_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Assign whole clean queries (with their case/diacritic variants) to one split each.

    Every split gets at least one query, so a small corpus still has something to
    validate and test on (and no split is ever an empty table); train keeps the rest.
    """
    groups: dict[str, list[str]] = {}
    for text in texts:
        groups.setdefault(split_key(text), []).append(text)
    if len(groups) < len(SPLITS):
        raise CorpusError(
            f"the corpus has {len(groups)} distinct queries; a dataset needs at least "
            f"{len(SPLITS)} (one per split): add queries or lower corpus.min_chars"
        )
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_test = max(1, round(len(keys) * test_fraction))
    n_validation = max(1, round(len(keys) * validation_fraction))
    n_validation = min(n_validation, len(keys) - n_test - 1)
    assigned = {
        "test": keys[:n_test],
        "validation": keys[n_test : n_test + n_validation],
        "train": keys[n_test + n_validation :],
    }
    return {split: [t for key in assigned[split] for t in groups[key]] for split in SPLITS}


def _chunk_seed(seed: int, split: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _corrupt_chunk(task: tuple[dict[str, Any], int, list[str], int]) -> list[tuple[str, str, list]]:
    """Rows for one chunk: ``variants`` distinct noisy versions of each clean query at most."""
    noise_cfg, seed, texts, variants = task
    model = NoiseModel.from_config(noise_cfg, seed=seed)
    # One batch for the whole chunk (each text repeated, side by side): the noise engine
    # works on whole batches, so a call per text would cost more than its typos.
    repeated = [text for text in texts for _ in range(variants)]
    rows, seen = [], set()
    for corruption in model.corrupt_batch(repeated):
        if (corruption.noisy, corruption.clean) not in seen:
            seen.add((corruption.noisy, corruption.clean))
            rows.append((corruption.noisy, corruption.clean, corruption.ops))
    return rows


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def synthesize_rows(
    splits: dict[str, list[str]], noise_cfg: dict[str, Any], build_cfg: dict[str, Any]
) -> dict[str, list[tuple[str, str, list]]]:
    """Noisy rows per split, in a process pool when the corpus is large enough to pay."""
    tasks, owners = [], []
    for split in SPLITS:
        texts = splits[split]
        for index, start in enumerate(range(0, len(texts), CHUNK_SIZE)):
            seed = _chunk_seed(build_cfg["seed"], split, index)
            chunk = texts[start : start + CHUNK_SIZE]
            tasks.append((noise_cfg, seed, chunk, build_cfg["variants_per_query"]))
            owners.append(split)
    NoiseModel.from_config(noise_cfg)  # a bad noise config fails here, not in a worker
    total = sum(len(texts) for texts in splits.values())
    workers = min(build_cfg["num_proc"] or _usable_cores(), len(tasks))
    bar = tqdm(total=total, desc="synthesizing", unit="query", disable=not build_cfg["progress"])
    rows: dict[str, list[tuple[str, str, list]]] = {split: [] for split in SPLITS}
    with bar:
        if workers > 1 and total >= build_cfg["parallel_min_queries"]:
            # spawn, not fork: the caller may be a training process with torch threads.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for split, task, result in zip(
                    owners, tasks, pool.map(_corrupt_chunk, tasks), strict=True
                ):
                    rows[split].extend(result)
                    bar.update(len(task[2]))
        else:
            for split, task in zip(owners, tasks, strict=True):
                rows[split].extend(_corrupt_chunk(task))
                bar.update(len(task[2]))
    return rows


def _op_stats(rows: list[tuple[str, str, list]]) -> dict[str, Any]:
    ops = Counter(op for _, _, applied in rows for op in applied)
    per_row = Counter(len(applied) for _, _, applied in rows)
    return {
        "rows": len(rows),
        "unchanged": per_row.get(0, 0),
        "ops": dict(ops.most_common()),
        "ops_per_row": {str(count): n for count, n in sorted(per_row.items())},
    }


def build_dataset(
    corpus_cfg: Mapping[str, Any],
    noise_cfg: Mapping[str, Any],
    build_cfg: Mapping[str, Any],
    output_dir: str | Path,
) -> Path:
    """Write the DatasetDict and its manifest to ``output_dir`` atomically; return the path."""
    build = check_build_config(build_cfg)
    noise = plain_config(noise_cfg)
    output_dir = Path(output_dir)
    _check_replaceable(output_dir, build["overwrite"])
    corpus = read_corpus(corpus_cfg)
    splits = split_queries(
        corpus.texts, build["validation_fraction"], build["test_fraction"], build["seed"]
    )
    rows = synthesize_rows(splits, noise, build)
    import datasets  # here, not above: bad input fails fast without this slow import

    features = datasets.Features(
        {
            "noisy": datasets.Value("string"),
            "clean": datasets.Value("string"),
            "ops": datasets.List(datasets.Value("string")),
        }
    )
    dataset = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "noisy": [noisy for noisy, _, _ in split_rows],
                    "clean": [clean for _, clean, _ in split_rows],
                    "ops": [ops for _, _, ops in split_rows],
                },
                features=features,
            )
            for split, split_rows in rows.items()
        }
    )
    manifest = {
        "format": DATASET_FORMAT,
        "fingerprint": dataset_fingerprint(corpus_cfg, noise, build),
        "corpus_fingerprint": corpus_fingerprint(corpus_cfg),
        "corpus": corpus.config,
        "corpus_report": corpus.report.to_dict(),
        "noise": noise,
        "build": build,
        "seed": build["seed"],
        "counts": {split: len(split_rows) for split, split_rows in rows.items()},
        "clean_queries": {split: len(texts) for split, texts in splits.items()},
        "op_stats": {split: _op_stats(split_rows) for split, split_rows in rows.items()},
    }
    show_bars = datasets.is_progress_bar_enabled()
    if not build["progress"]:
        datasets.disable_progress_bars()
    try:
        with staged_directory(output_dir, if_exists="replace") as staging:
            dataset.save_to_disk(str(staging))
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    finally:
        if show_bars:
            datasets.enable_progress_bars()
    return output_dir


def _is_dataset_dir(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST_NAME).read_text())["format"] == DATASET_FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _check_replaceable(output_dir: Path, overwrite: bool) -> None:
    """Refuse before any work to replace anything but an earlier data_synth dataset."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise CorpusError(f"{output_dir}: exists and is a file; choose another output_dir")
    if not any(output_dir.iterdir()):
        return
    if not _is_dataset_dir(output_dir):
        raise CorpusError(
            f"{output_dir}: exists and is not a data_synth dataset; choose another output_dir"
        )
    if not overwrite:
        raise CorpusError(f"{output_dir}: dataset exists; pass build.overwrite=true to replace it")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a dataset directory, with the same errors as ``load_dataset_dir``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no dataset there; build one with `spellfix-synth output_dir={path}`"
        )
    if not _is_dataset_dir(path):
        raise CorpusError(
            f"{path}: not a data_synth dataset (no valid {MANIFEST_NAME}); rebuild it with "
            f"`spellfix-synth output_dir={path}`"
        )
    return json.loads((path / MANIFEST_NAME).read_text())


def load_dataset_dir(path: str | Path) -> DatasetDict:
    """The ``DatasetDict`` saved at ``path`` by ``build_dataset``."""
    import datasets

    read_manifest(path)
    return datasets.load_from_disk(str(path))
