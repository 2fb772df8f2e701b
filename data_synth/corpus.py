"""Clean queries from wherever a search team keeps them, normalized and counted.

A corrector is trained to map noisy text back to these queries, so they must be clean
and unique, and whatever could not be used must be visible: every reader counts the
lines it read, the ones it kept, and why it dropped the rest (undecodable bytes,
malformed rows, empty, too short, too long, duplicates) instead of crashing on the
first odd line or silently losing data. Anything that makes the whole corpus unusable
(a missing file, an unknown column, a binary file, nothing left after filtering) raises
``CorpusError`` with one line that names the file or key and the fix.

Sources: a plain text file (one query a line), CSV/TSV (one or several named columns),
JSONL (a field), a local Hugging Face dataset directory, a hub dataset when the user
names one, and a built-in corpus of frequent English words, word pairs and three- to
ten-word phrases chained from those pairs, all taken from the dictionaries symspellpy
ships, so that the default path needs no file at all.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import json
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

SOURCES = ("auto", "builtin", "text", "csv", "tsv", "jsonl", "hf_disk", "hf_hub")
CONFIG_KEYS = (
    "source",
    "path",
    "columns",
    "join_columns",
    "field",
    "name",
    "hub_config",
    "split",
    "encoding",
    "min_chars",
    "max_chars",
    "max_queries",
    "lowercase",
    "builtin_words",
    "builtin_bigrams",
    "builtin_phrases",
)
# Counts and lengths: key -> (smallest allowed value, whether null is allowed). A string or
# a negative number would otherwise fail deep in a reader or slice the word lists oddly.
_COUNT_KEYS = {
    "min_chars": (0, False),
    "max_chars": (1, True),
    "max_queries": (1, True),
    "builtin_words": (0, True),
    "builtin_bigrams": (0, False),
    "builtin_phrases": (0, False),
}
_SUFFIX_SOURCES = {
    ".txt": "text",
    ".text": "text",
    ".lst": "text",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_BINARY_PROBE_BYTES = 8192
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_BUILTIN_WORDS_FILE = "frequency_dictionary_en_82_765.txt"
_BUILTIN_BIGRAMS_FILE = "frequency_bigramdictionary_en_243_342.txt"
# Built-in phrases: fixed, so the built-in corpus is the same on every machine; each starts
# at one of the most frequent pairs and continues along the more frequent ones.
_PHRASE_SEED = 0
_PHRASE_START_PAIRS = 12_000
_PHRASE_LINK_PAIRS = 30_000
# Phrase lengths and their relative weights: mostly short, as queries are, up to ten words
# so that a model also sees sentences-long input.
_PHRASE_LENGTHS = (3, 4, 5, 6, 7, 8, 9, 10)
_PHRASE_LENGTH_WEIGHTS = (4, 4, 3, 3, 2, 2, 1, 1)
# Words a query does not end on ("file for printing and"): a phrase stops elsewhere.
_DANGLING = (
    "a an the of and or but nor to in on at by for from with into onto than as that "
    "this these those my your our their his her its is are was were be been being has "
    "have had will would shall should can could may might must do does did"
)
_DANGLING_WORDS = frozenset(_DANGLING.split())


class CorpusError(ValueError):
    """The corpus cannot be used; the one-line message names the file or key and the fix."""


@dataclass
class CorpusReport:
    """What happened to every candidate query read from the source."""

    source: str
    location: str
    read: int = 0
    kept: int = 0
    undecodable: int = 0
    malformed: int = 0
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    duplicates: int = 0
    truncated: bool = False

    def summary(self) -> str:
        """One line for logs and error messages."""
        dropped = [
            f"{count} {reason}"
            for reason, count in (
                ("undecodable", self.undecodable),
                ("malformed", self.malformed),
                ("empty", self.empty),
                ("too short", self.too_short),
                ("too long", self.too_long),
                ("duplicate", self.duplicates),
            )
            if count
        ]
        detail = f" (dropped: {', '.join(dropped)})" if dropped else ""
        cut = ", stopped at corpus.max_queries" if self.truncated else ""
        return f"{self.location}: read {self.read}, kept {self.kept}{detail}{cut}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Corpus:
    """Unique, normalized clean queries in source order, and how they were obtained."""

    texts: list[str]
    report: CorpusReport
    config: dict[str, Any] = field(default_factory=dict)


def plain_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict from a dict or an OmegaConf DictConfig (as Hydra passes ``cfg.corpus``)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def resolve_source(cfg: Mapping[str, Any]) -> str:
    """The concrete source a config means; ``auto`` decides from ``path`` and ``name``.

    ``auto`` is the default so that ``corpus.path=songs.csv`` alone does the right thing.
    """
    source, path = cfg["source"], cfg["path"]
    if source not in SOURCES:
        raise CorpusError(f"corpus.source: unknown source {source!r}; use {', '.join(SOURCES)}")
    if source != "auto":
        return source
    if path is None:
        return "hf_hub" if cfg["name"] else "builtin"
    if Path(path).is_dir():
        return "hf_disk"
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_SOURCES:
        raise CorpusError(
            f"{path}: cannot tell the format from suffix {suffix!r}; set corpus.source to "
            "text, csv, tsv or jsonl"
        )
    return _SUFFIX_SOURCES[suffix]


def check_whole_numbers(
    group: str, cfg: Mapping[str, Any], rules: Mapping[str, tuple[int, bool]]
) -> None:
    """Raise naming ``<group>.<key>`` unless each key of ``rules`` (smallest value, whether
    null is allowed) holds a whole number: YAML gives ``true`` and ``"abc"`` as readily."""
    for key, (smallest, nullable) in rules.items():
        value = cfg[key]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            allowed = f"a whole number >= {smallest}" + (" or null" if nullable else "")
            raise CorpusError(f"{group}.{key}={value!r}: expected {allowed}")


def check_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config as a plain dict, with unknown or missing keys reported by name."""
    cfg = plain_config(cfg)
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise CorpusError(f"corpus.{unknown[0]}: unknown key; valid keys: {', '.join(CONFIG_KEYS)}")
    missing = [key for key in CONFIG_KEYS if key not in cfg]
    if missing:
        raise CorpusError(f"corpus.{missing[0]}: missing key; see conf/corpus/builtin.yaml")
    required = [key for key, value in cfg.items() if value == "???"]
    if required:
        raise CorpusError(f"corpus.{required[0]}: required; set it, e.g. corpus.{required[0]}=...")
    check_whole_numbers("corpus", cfg, _COUNT_KEYS)
    if isinstance(cfg["columns"], str):
        cfg["columns"] = [cfg["columns"]]
    if cfg["columns"] is not None and len(cfg["columns"]) == 0:
        raise CorpusError(
            "corpus.columns=[]: name at least one column, or null for the first column"
        )
    return cfg


def read_corpus(cfg: Mapping[str, Any]) -> Corpus:
    """Read, normalize (NFC, collapsed whitespace), filter and deduplicate clean queries."""
    cfg = check_config(cfg)
    source = resolve_source(cfg)
    path = Path(cfg["path"]) if cfg["path"] is not None else None
    if source in ("text", "csv", "tsv", "jsonl", "hf_disk"):
        if path is None:
            raise CorpusError(f"corpus.path: source {source!r} reads a file; set corpus.path")
        if not path.exists():
            raise CorpusError(f"{path}: no such file; set corpus.path to an existing file")
    if source in ("text", "csv", "tsv", "jsonl"):
        if path.is_dir():  # type: ignore[union-attr]
            raise CorpusError(f"{path}: is a directory; set corpus.path to a {source} file")
        _refuse_binary(path, cfg["encoding"])  # type: ignore[arg-type]
    location = str(path) if path is not None else (cfg["name"] or "builtin corpus")
    report = CorpusReport(source=source, location=location)
    candidates = _CANDIDATE_READERS[source](cfg, report)
    texts = _normalize_and_filter(candidates, cfg, report)
    if report.undecodable and report.undecodable >= report.kept:
        raise CorpusError(
            f"{report.summary()}: most lines are not valid {cfg['encoding']}; if the file is "
            "Latin-1 (Windows-1252), set corpus.encoding=latin-1"
        )
    if not texts and report.read == 0:
        raise CorpusError(f"{location}: empty; there is nothing to read")
    if not texts:
        raise CorpusError(
            f"{report.summary()}: no queries left after filtering; check corpus.columns/field "
            "and corpus.min_chars/max_chars"
        )
    return Corpus(texts=texts, report=report, config=cfg)


def corpus_fingerprint(cfg: Mapping[str, Any]) -> str:
    """A hex digest that changes whenever the config or the source's content changes.

    Files are hashed by content; directories (HF datasets) by file names, sizes and
    modification times, which is enough to notice a re-saved dataset without reading
    gigabytes; the built-in corpus by the symspellpy version it comes from.
    """
    cfg = check_config(cfg)
    source = resolve_source(cfg)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    digest.update(source.encode())
    if source == "builtin":
        digest.update(metadata.version("symspellpy").encode())
    elif source == "hf_hub":
        pass  # the name, config and split in cfg identify it; the hub has no local content
    else:
        path = Path(cfg["path"])
        if not path.exists():
            raise CorpusError(f"{path}: no such file; set corpus.path to an existing file")
        if path.is_dir():
            for item in sorted(path.rglob("*")):
                if item.is_file():
                    stat = item.stat()
                    digest.update(
                        f"{item.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
                    )
        else:
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


# -- turning raw candidates into clean queries ---------------------------------------------


def normalize_query(text: str, lowercase: bool = False) -> str:
    """NFC, no control characters, single spaces: the form every stored query takes."""
    text = unicodedata.normalize("NFC", text)
    text = " ".join(_CONTROL_CHARACTERS.sub("", text).split())
    return text.lower() if lowercase else text


def _normalize_and_filter(
    candidates: Iterable[str | None], cfg: Mapping[str, Any], report: CorpusReport
) -> list[str]:
    min_chars, max_chars, limit = cfg["min_chars"], cfg["max_chars"], cfg["max_queries"]
    lowercase = bool(cfg["lowercase"])
    seen: set[str] = set()
    kept: list[str] = []
    for candidate in candidates:
        report.read += 1
        if candidate is None:
            report.malformed += 1
            continue
        text = normalize_query(candidate, lowercase)
        if not text:
            report.empty += 1
        elif len(text) < min_chars:
            report.too_short += 1
        elif max_chars is not None and len(text) > max_chars:
            report.too_long += 1
        elif text in seen:
            report.duplicates += 1
        else:
            seen.add(text)
            kept.append(text)
            if limit is not None and len(kept) >= limit:
                report.truncated = True
                break
    report.kept = len(kept)
    return kept


# -- readers: each yields one candidate per query (None for a malformed row) ------------------


_WIDE_BOMS = {
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}


def _is_wide(encoding: str) -> bool:
    """UTF-16/32: NUL bytes are text there, and lines cannot be split on raw bytes."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise CorpusError(f"corpus.encoding: unknown encoding {encoding!r}") from None
    return name.startswith(("utf-16", "utf-32"))


def _refuse_binary(
    path: Path, encoding: str, wanted: str = "a UTF-8 text, CSV/TSV or JSONL file"
) -> None:
    with path.open("rb") as handle:
        probe = handle.read(_BINARY_PROBE_BYTES)
    if _is_wide(encoding) or b"\x00" not in probe:
        return
    wide = next((name for bom, name in _WIDE_BOMS.items() if probe.startswith(bom)), None)
    if wide is None and probe[1::2].count(0) > 0.4 * len(probe[1::2]):
        wide = "utf-16"  # every other byte NUL: ASCII text in UTF-16 without a BOM
    if wide:
        raise CorpusError(f"{path}: looks like {wide.upper()} text; set corpus.encoding={wide}")
    raise CorpusError(f"{path}: looks like a binary file (NUL bytes), not text; pass {wanted}")


def _decoded_lines(path: Path, encoding: str, report: CorpusReport) -> Iterator[str]:
    """Lines as text; a line that does not decode is counted and skipped, not fatal.

    Any line end is one (``\\n``, ``\\r\\n`` and the ``\\r`` of old Mac files, which
    public data sets still ship). A file of which no line decodes is an error that
    names the encoding to set.
    """
    if _is_wide(encoding):
        try:
            text = path.read_text(encoding=encoding)
        except UnicodeDecodeError as error:
            raise CorpusError(f"{path}: not {encoding} text ({error.reason})") from None
        yield from text.lstrip("\ufeff").splitlines()
        return
    decoded = 0
    with path.open("rb") as handle:
        for raw in handle:
            for part in raw.rstrip(b"\r\n").split(b"\r"):
                try:
                    line = part.decode(encoding)
                except UnicodeDecodeError:
                    report.read += 1
                    report.undecodable += 1
                    continue
                yield line.lstrip("\ufeff") if decoded == 0 else line
                decoded += 1
    if report.undecodable and not decoded:
        raise CorpusError(
            f"{path}: no line is valid {encoding}; if the file is Latin-1 (Windows-1252), "
            "set corpus.encoding=latin-1"
        )


def _read_text(cfg: Mapping[str, Any], report: CorpusReport) -> Iterator[str]:
    yield from _decoded_lines(Path(cfg["path"]), cfg["encoding"], report)


def read_columns(
    path: Path,
    columns: Sequence[str],
    report: CorpusReport,
    encoding: str = "utf-8",
    fix: str = "set corpus.columns",
) -> Iterator[list[str | None] | None]:
    """The values of ``columns`` in each row of a CSV/TSV file with a header row.

    Corpora and files of (typo, correct) pairs are read alike: undecodable lines are
    counted in ``report`` and skipped, a row the CSV parser rejects is ``None``, a row
    too short for a column holds ``None`` there, and the caller counts what it drops.
    ``report.source`` says the dialect: ``tsv`` follows the usual tab-separated
    convention of no quoting, so the stray quotes in real titles
    (`Missing You (From Set It Off")"`) stay part of the title. An empty ``columns``
    reads the first column. ``fix`` ends the error for a column the header lacks.
    """
    is_tsv = report.source == "tsv"
    reader = csv.reader(
        _decoded_lines(path, encoding, report),
        delimiter="\t" if is_tsv else ",",
        quoting=csv.QUOTE_NONE if is_tsv else csv.QUOTE_MINIMAL,
    )
    header = next(reader, None)
    if header is None:
        raise CorpusError(f"{path}: empty; a CSV/TSV file needs a header row naming its columns")
    header = [name.strip() for name in header]
    wanted = list(columns) or header[:1]
    missing = [name for name in wanted if name not in header]
    if missing:
        raise CorpusError(
            f"{path}: no column {missing[0]!r}; the header has {', '.join(header)}; {fix}"
        )
    indices = [header.index(name) for name in wanted]
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield None
            continue
        if not row:
            continue  # a blank line is no row at all in CSV
        yield [row[i] if i < len(row) else None for i in indices]


def read_pairs(
    path: str | Path, columns: tuple[str, str], fix: str
) -> tuple[list[str], list[str], CorpusReport]:
    """(typed, correct) columns of a CSV/TSV file of pairs, read as a corpus file is.

    Real pairs (a team's query logs, the misspelling lists evaluations run on) get the
    corpus file's checks: a binary file or a missing column is an error naming the file
    (``fix`` says which setting names the columns), a line that does not decode or a
    row without both columns is counted in the report and skipped. ``.csv`` is
    comma-separated, anything else tab-separated.
    """
    path = Path(path)
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory; name a TSV/CSV file of pairs")
    _refuse_binary(path, "utf-8", wanted="a UTF-8 TSV/CSV file of pairs")
    source = "csv" if path.suffix.lower() == ".csv" else "tsv"
    report = CorpusReport(source=source, location=str(path))
    typed: list[str] = []
    correct: list[str] = []
    for values in read_columns(path, columns, report, fix=fix):
        report.read += 1
        if values is None or None in values:
            report.malformed += 1
            continue
        typed.append(values[0])  # type: ignore[arg-type]
        correct.append(values[1])  # type: ignore[arg-type]
    report.kept = len(typed)
    if report.undecodable and report.undecodable >= report.kept:
        raise CorpusError(f"{report.summary()}: most lines are not valid UTF-8; re-save as UTF-8")
    return typed, correct, report


def _read_delimited(cfg: Mapping[str, Any], report: CorpusReport) -> Iterator[str | None]:
    rows = read_columns(Path(cfg["path"]), cfg["columns"] or [], report, cfg["encoding"])
    for values in rows:
        if values is None:
            yield None
        else:
            yield from _row_queries(values, cfg["join_columns"])


def _row_queries(values: list[str | None], join_columns: bool) -> Iterator[str | None]:
    if join_columns:
        present = [value for value in values if value]
        yield " ".join(present) if present else ""
    else:
        yield from values


def _read_jsonl(cfg: Mapping[str, Any], report: CorpusReport) -> Iterator[str | None]:
    name = cfg["field"]
    for line in _decoded_lines(Path(cfg["path"]), cfg["encoding"], report):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            yield None
            continue
        value = record.get(name) if isinstance(record, dict) else None
        if isinstance(value, list):
            yield from (item if isinstance(item, str) else None for item in value)
        else:
            yield value if isinstance(value, str) else None


def _read_hf_dataset(cfg: Mapping[str, Any], report: CorpusReport) -> Iterator[str | None]:
    import datasets

    if report.source == "hf_disk":
        try:
            loaded = datasets.load_from_disk(cfg["path"])
        except FileNotFoundError:
            raise CorpusError(
                f"{cfg['path']}: not a dataset saved with save_to_disk; pass a file or such a "
                "directory"
            ) from None
    else:
        loaded = datasets.load_dataset(cfg["name"], cfg["hub_config"], split=cfg["split"])
    if isinstance(loaded, datasets.DatasetDict):
        if cfg["split"] not in loaded:
            raise CorpusError(
                f"{report.location}: no split {cfg['split']!r}; it has {', '.join(loaded)}; "
                "set corpus.split"
            )
        loaded = loaded[cfg["split"]]
    wanted = cfg["columns"] or ["text"]
    missing = [name for name in wanted if name not in loaded.column_names]
    if missing:
        raise CorpusError(
            f"{report.location}: no column {missing[0]!r}; it has "
            f"{', '.join(loaded.column_names)}; set corpus.columns"
        )
    for row in loaded.select_columns(wanted).iter(batch_size=1000):
        for values in zip(*(row[name] for name in wanted), strict=True):
            as_text = [value if isinstance(value, str) else None for value in values]
            yield from _row_queries(as_text, cfg["join_columns"])


def _read_builtin(cfg: Mapping[str, Any], report: CorpusReport) -> Iterator[str]:
    """The most frequent English word pairs and words, then longer phrases, as queries."""
    yield from _most_frequent(_BUILTIN_BIGRAMS_FILE, 2)[: cfg["builtin_bigrams"]]
    yield from _most_frequent(_BUILTIN_WORDS_FILE, 1)[: cfg["builtin_words"]]
    yield from _chained_phrases(cfg["builtin_phrases"])


@cache
def contractions() -> dict[str, int]:
    """The built-in dictionary's contractions (``don't``) and their counts."""
    found = {}
    words = resources.files("symspellpy").joinpath(_BUILTIN_WORDS_FILE).read_text()
    for line in words.splitlines():
        parts = line.split()
        if len(parts) == 2 and "'" in parts[0] and parts[0].replace("'", "").isalpha():
            found[parts[0]] = int(parts[1])
    return found


def builtin_frequencies() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Word and word-pair counts of the built-in dictionaries (what the corpus is drawn from).

    A corrector trained on the built-in corpus knows the language through these counts,
    not through the sample of it that became training queries.
    """
    words = dict(_frequency_entries(_BUILTIN_WORDS_FILE, 1))
    pairs = {
        tuple(text.split(" ")): count
        for text, count in _frequency_entries(_BUILTIN_BIGRAMS_FILE, 2)
    }
    return words, pairs  # type: ignore[return-value]


@cache
def _frequency_entries(file_name: str, words_per_entry: int) -> tuple[tuple[str, int], ...]:
    """(entry, count) of a symspellpy frequency dictionary, most frequent first (parsed once)."""
    entries = []
    for line in resources.files("symspellpy").joinpath(file_name).read_text().splitlines():
        parts = line.split()
        if len(parts) == words_per_entry + 1 and all(p.isalpha() for p in parts[:-1]):
            entries.append((-int(parts[-1]), " ".join(parts[:-1])))
    entries.sort()
    return tuple((text, -negated) for negated, text in entries)


@cache
def _most_frequent(file_name: str, words_per_entry: int) -> tuple[str, ...]:
    return tuple(text for text, _ in _frequency_entries(file_name, words_per_entry))


@cache
def _chained_phrases(count: int) -> tuple[str, ...]:
    """Up to ``count`` phrases of three to ten words, each a walk along frequent word pairs.

    "new york" continues with a second word drawn by how often pairs start with "york"
    ("york city"), and so on. Word salad at times, but pairs alone would teach a model
    that every query ends after two words: it then drops the rest of longer queries.
    """
    pairs = [
        (tuple(text.split(" ")), frequency)
        for text, frequency in _frequency_entries(_BUILTIN_BIGRAMS_FILE, 2)[:_PHRASE_LINK_PAIRS]
    ]
    followers: dict[str, list[str]] = defaultdict(list)
    frequencies: dict[str, list[int]] = defaultdict(list)
    for (first, second), frequency in pairs:
        followers[first].append(second)
        frequencies[first].append(frequency)
    cumulative = {word: list(itertools.accumulate(f)) for word, f in frequencies.items()}
    starts = [words for words, _ in pairs[:_PHRASE_START_PAIRS]]
    rng = random.Random(_PHRASE_SEED)
    phrases: dict[str, None] = {}  # insertion-ordered set
    for _ in range(20 * count):  # bounded: a huge count ends with what the pairs allow
        if len(phrases) == count:
            break
        words = list(rng.choice(starts))
        length = rng.choices(_PHRASE_LENGTHS, weights=_PHRASE_LENGTH_WEIGHTS)[0]
        while len(words) < length and words[-1] in followers:
            last = words[-1]
            words += rng.choices(followers[last], cum_weights=cumulative[last])
        if len(words) == length and words[-1] not in _DANGLING_WORDS:
            phrases[" ".join(words)] = None
    return tuple(phrases)


_CANDIDATE_READERS = {
    "text": _read_text,
    "csv": _read_delimited,
    "tsv": _read_delimited,
    "jsonl": _read_jsonl,
    "hf_disk": _read_hf_dataset,
    "hf_hub": _read_hf_dataset,
    "builtin": _read_builtin,
}
