"""Seeded, named typo operations that turn a clean search query into a realistic noisy one.

A corrector learns exactly the errors it is shown, so every operation here models one
thing people really do when typing a query: hit a neighbouring key, drop or double a
letter, swap two letters, spell by ear (``ph`` -> ``f``), run words together or split
them, skip diacritics, apostrophes and capitals. Each operation has its own rate, the
number of typos per query follows a configurable distribution, typos avoid a word's
first letter (people rarely get it wrong), and a share of queries stays clean so that
the model also learns to leave correct input alone.

Every result carries the names of the operations applied, so datasets can be audited
(``data_synth.stats``) and the model's errors broken down by cause.

Speed matters: the training data module re-noises the whole corpus every epoch, so
operations pick positions by rejection sampling on a single ``random.Random`` instead
of scanning the query, and each word's phonetic confusions are found once (one regular
expression over the table, rules pre-sorted by where in a word they may apply) and cached.
None of this changes a result: the same seed gives the same outputs with or without it.
"""

from __future__ import annotations

import bisect
import csv
import random
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate, chain, product
from pathlib import Path
from typing import Any, NamedTuple

from data_synth.keyboards import LAYOUTS, get_keyboard
from data_synth.paths import CONF_DIR

DEFAULT_CONFUSIONS = Path(__file__).with_name("phonetic.tsv")

# Typos: each noisy query gets a drawn number of these, chosen by their relative rates.
TYPO_OPS: tuple[str, ...] = (
    "keyboard_substitute",  # a neighbouring key instead of the intended one
    "keyboard_insert",  # a neighbouring key pressed as well
    "delete",  # a letter left out
    "transpose",  # two neighbouring letters swapped
    "double",  # a letter typed twice (`bettles`)
    "undouble",  # a double letter typed once (`beatls` <- `beattls`, `acomodate`)
    "phonetic",  # a sound-alike spelling from the confusion table (`fone`)
    "merge_words",  # the space between two words left out (`thebeatles`)
    "split_word",  # a space typed inside a word (`beat les`)
)
# Query habits: each applies independently with its own probability.
QUERY_OPS: tuple[str, ...] = (
    "strip_diacritics",  # `Beyoncé` -> `Beyonce`
    "drop_punctuation",  # `don't stop` -> `dont stop`, `AC/DC` -> `AC DC`
    "case_change",  # `Hey Jude` -> `hey jude` (or, rarely, all capitals)
)
CONFIG_KEYS: tuple[str, ...] = (
    "layout",
    "clean_share",
    "error_count_weights",
    "max_errors_per_char",
    "first_letter_factor",
    "typo_weights",
    "query_ops",
    "confusions",
)

_POSITION_TRIES = 8  # random positions tried before an operation counts as not applicable
_OP_TRIES = 4  # operations tried per typo before giving up on that typo
_LOWERCASE_SHARE = 0.95  # case_change: share lower-casing (the rest writes all capitals)
_DROPPED_MARKS = frozenset("'’‘`.")  # vanish when typed (`dont`); other marks become spaces
_PUNCTUATION = re.compile(r"[^\w\s]|_")
_DOUBLE_LETTER = re.compile(r"([^\W\d_])\1", re.IGNORECASE)
_ASCII_WORD = re.compile(r"[A-Za-z]+")  # in an ASCII text, exactly the runs of str.isalpha()
_WORD_CACHE_SIZE = 50_000  # words whose phonetic confusions are kept (about 750 bytes each)


class NoiseConfigError(ValueError):
    """A noise profile or confusion table is unusable; the message names the key and fix."""


@dataclass(slots=True)
class Corruption:
    """One noisy version of a clean query and the operations, in order, that made it."""

    noisy: str
    clean: str
    ops: list[str]


@dataclass(frozen=True)
class Confusion:
    """One row of the confusion table: lower-case ``letters`` and where they must stand."""

    letters: str
    replacement: str
    weight: float
    at_word_start: bool
    at_word_end: bool


class WordConfusions(NamedTuple):
    """The confusions that fit one lower-case word, in the order the table finds them.

    Plain tuples of numbers and strings, which the garbage collector stops tracking, so a
    large cache adds nothing to its full collections.
    """

    spans: tuple[tuple[int, int], ...]  # start and end of the letters each one replaces
    replacements: tuple[str, ...]
    weights: tuple[float, ...]
    cumulative: tuple[float, ...]  # running sums of ``weights``, for one bisect per draw


def load_confusions(path: str | Path) -> list[Confusion]:
    """Read a confusion table (see ``phonetic.tsv`` for the format) a user may replace."""
    path = Path(path)
    if not path.is_file():
        raise NoiseConfigError(f"noise.confusions: {path} does not exist; point it at a TSV table")
    confusions = []
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line_number, row in enumerate(rows, start=1):
            if not row or row[0].startswith("#") or row[0] == "pattern":
                continue
            try:
                letters, replacement, weight = row[0], row[1], float(row[2])
            except (IndexError, ValueError):
                raise NoiseConfigError(
                    f"{path}:{line_number}: expected pattern<TAB>replacement<TAB>weight, "
                    f"got {row!r}"
                ) from None
            at_start, at_end = letters.startswith("^"), letters.endswith("$")
            letters = letters.strip("^$").lower()
            if not letters or weight < 0:
                raise NoiseConfigError(
                    f"{path}:{line_number}: pattern must have letters and weight must be >= 0"
                )
            replacement = "" if replacement == '""' else replacement
            confusions.append(Confusion(letters, replacement, weight, at_start, at_end))
    if not confusions:
        raise NoiseConfigError(f"{path}: the confusion table has no rows")
    return confusions


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict from a dict or an OmegaConf DictConfig (as Hydra passes ``cfg.noise``)."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra, a dependency
        return dict(cfg)
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return {
        key: _plain(value) if isinstance(value, Mapping) else value for key, value in cfg.items()
    }


def _check_rates(name: str, rates: Any, valid: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(rates, Mapping):
        raise NoiseConfigError(f"noise.{name}: expected a mapping of operation -> rate")
    for op, rate in rates.items():
        if op not in valid:
            raise NoiseConfigError(f"noise.{name}.{op}: unknown operation; use {', '.join(valid)}")
        if not isinstance(rate, int | float) or rate < 0:
            raise NoiseConfigError(f"noise.{name}.{op}: rate must be a number >= 0, got {rate!r}")
    return {op: float(rate) for op, rate in rates.items()}


def _check_fraction(cfg: Mapping[str, Any], key: str) -> float:
    value = cfg[key]
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise NoiseConfigError(f"noise.{key}: expected a number in [0, 1], got {value!r}")
    return float(value)


class NoiseModel:
    """Corrupts queries with the operations and rates of one noise profile.

    Build it with ``from_profile("default")`` or ``from_config(cfg.noise)``; the same
    seed and the same inputs, in the same order, always give the same outputs.
    """

    def __init__(self, config: Mapping[str, Any], seed: int = 0) -> None:
        config = _plain(config)
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        missing = [key for key in CONFIG_KEYS if key not in config]
        if unknown:
            raise NoiseConfigError(
                f"noise.{unknown[0]}: unknown key; valid keys: {', '.join(CONFIG_KEYS)}"
            )
        if missing:
            raise NoiseConfigError(f"noise.{missing[0]}: missing key; see conf/noise/default.yaml")
        if config["layout"] not in LAYOUTS:
            raise NoiseConfigError(
                f"noise.layout: unknown layout {config['layout']!r}; use {', '.join(LAYOUTS)}"
            )
        counts = config["error_count_weights"]
        if (
            not isinstance(counts, list | tuple)
            or not counts
            or any(not isinstance(w, int | float) or w < 0 for w in counts)
            or sum(counts) <= 0
        ):
            raise NoiseConfigError(
                "noise.error_count_weights: expected a list of weights >= 0 for 1, 2, 3... "
                f"typos with a positive sum, got {counts!r}"
            )
        typo_rates = _check_rates("typo_weights", config["typo_weights"], TYPO_OPS)
        query_rates = _check_rates("query_ops", config["query_ops"], QUERY_OPS)
        if sum(typo_rates.values()) <= 0:
            raise NoiseConfigError("noise.typo_weights: at least one rate must be positive")
        if any(rate > 1 for rate in query_rates.values()):
            raise NoiseConfigError("noise.query_ops: each value is a probability in [0, 1]")
        max_per_char = config["max_errors_per_char"]
        if not isinstance(max_per_char, int | float) or max_per_char <= 0:
            raise NoiseConfigError("noise.max_errors_per_char: expected a number > 0")

        self.config = config
        self.seed = seed
        self._rng = random.Random(seed)
        self._random = self._rng.random
        self._neighbors = get_keyboard(config["layout"]).neighbors
        self._clean_share = _check_fraction(config, "clean_share")
        self._first_letter_factor = _check_fraction(config, "first_letter_factor")
        self._max_errors_per_char = float(max_per_char)
        self._count_cumulative = list(accumulate(float(w) for w in counts))
        self._count_total = self._count_cumulative[-1]
        typo_names = [op for op, rate in typo_rates.items() if rate > 0]
        self._typo_cumulative = list(accumulate(typo_rates[op] for op in typo_names))
        self._typo_total = self._typo_cumulative[-1]
        confusions: dict[str, list[Confusion]] = {}
        for rule in load_confusions(config["confusions"] or DEFAULT_CONFUSIONS):
            confusions.setdefault(rule.letters, []).append(rule)
        self._confusion_re = _literal_alternation(confusions)
        self._rules_at = _rules_by_place(confusions, self._first_letter_factor)
        self._word_cache: dict[str, WordConfusions] = {}
        self._ops: dict[str, Callable[[str], str | None]] = {
            name: getattr(self, f"_{name}") for name in TYPO_OPS + QUERY_OPS
        }
        # What ``corrupt`` walks per query, looked up once here rather than on every call.
        self._typo_ops = [(name, self._ops[name]) for name in typo_names]
        self._query_ops = [
            (name, rate, self._ops[name]) for name, rate in query_rates.items() if rate > 0
        ]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], seed: int = 0) -> NoiseModel:
        """A model from a dict or DictConfig with the schema of ``conf/noise/*.yaml``."""
        return cls(cfg, seed=seed)

    @classmethod
    def from_profile(cls, name: str, seed: int = 0) -> NoiseModel:
        """A model from the named profile in ``conf/noise/`` (default, keyboard, ...)."""
        path = CONF_DIR / "noise" / f"{name}.yaml"
        if not path.is_file():
            available = sorted(p.stem for p in (CONF_DIR / "noise").glob("*.yaml"))
            raise NoiseConfigError(
                f"noise profile {name!r}: {path} not found; choose one of {', '.join(available)}"
            )
        from omegaconf import OmegaConf

        return cls(OmegaConf.load(path), seed=seed)

    def corrupt(self, text: str) -> Corruption:
        """One noisy variant of ``text`` (possibly ``text`` itself, then with no ops)."""
        rng = self._random
        if not text or rng() < self._clean_share:
            return Corruption(text, text, [])
        noisy, ops = text, []
        for name, rate, apply in self._query_ops:
            if rng() < rate:
                changed = apply(noisy)
                if changed is not None and changed.strip():
                    noisy = changed
                    ops.append(name)
        drawn = bisect.bisect(self._count_cumulative, rng() * self._count_total) + 1
        cap = max(1, int(len(text) * self._max_errors_per_char))
        typo_cumulative, typo_total, typo_ops = (
            self._typo_cumulative,
            self._typo_total,
            self._typo_ops,
        )
        for _ in range(min(drawn, cap)):
            for _attempt in range(_OP_TRIES):
                name, apply = typo_ops[bisect.bisect(typo_cumulative, rng() * typo_total)]
                changed = apply(noisy)
                if changed is not None and changed != noisy and changed.strip():
                    noisy = changed
                    ops.append(name)
                    break
        if noisy == text:  # later typos undid earlier ones: report the query as clean
            ops = []
        return Corruption(noisy, text, ops)

    def corrupt_batch(self, texts: Iterable[str]) -> list[Corruption]:
        """``corrupt`` over many queries, in order (one shared random stream)."""
        corrupt = self.corrupt
        return [corrupt(text) for text in texts]

    def apply_op(self, name: str, text: str) -> str | None:
        """Apply one named operation once; None where it cannot apply (nothing to change).

        For tests and the noise gallery: shows what each operation does in isolation.
        """
        if name not in self._ops:
            raise NoiseConfigError(f"unknown operation {name!r}; use {', '.join(self._ops)}")
        return self._ops[name](text)

    # -- choosing where a typo lands -------------------------------------------------------

    def _pick_position(self, text: str, accept: Callable[[str, int], bool]) -> int:
        """A random index that ``accept`` allows, or -1; word-initial letters are mostly skipped.

        Real misspellings rarely get a word's first letter wrong, so an index at a word's
        start is kept only with probability ``first_letter_factor``.
        """
        rng = self._random
        length = len(text)
        for _ in range(_POSITION_TRIES):
            index = int(rng() * length)
            if not accept(text, index):
                continue
            at_word_start = index == 0 or not text[index - 1].isalpha()
            if at_word_start and rng() >= self._first_letter_factor:
                continue
            return index
        return -1

    def _on_keyboard(self, text: str, index: int) -> bool:
        return bool(self._neighbors.get(text[index].lower()))

    def _neighbor_key(self, char: str) -> str:
        keys = self._neighbors[char.lower()]
        key = keys[int(self._random() * len(keys))]
        upper = key.upper()
        return upper if char.isupper() and len(upper) == 1 else key

    # -- typos -------------------------------------------------------------------------------

    def _keyboard_substitute(self, text: str) -> str | None:
        index = self._pick_position(text, self._on_keyboard)
        if index < 0:
            return None
        return text[:index] + self._neighbor_key(text[index]) + text[index + 1 :]

    def _keyboard_insert(self, text: str) -> str | None:
        index = self._pick_position(text, self._on_keyboard)
        if index < 0:
            return None
        if self._random() < 0.5:  # the stray key lands after the intended one
            index += 1
            return text[:index] + self._neighbor_key(text[index - 1]) + text[index:]
        return text[:index] + self._neighbor_key(text[index]) + text[index:]

    def _delete(self, text: str) -> str | None:
        index = self._pick_position(text, _is_letter)
        if index < 0:
            return None
        return text[:index] + text[index + 1 :]

    def _transpose(self, text: str) -> str | None:
        index = self._pick_position(text, _starts_distinct_letter_pair)
        if index < 0:
            return None
        return text[:index] + text[index + 1] + text[index] + text[index + 2 :]

    def _double(self, text: str) -> str | None:
        index = self._pick_position(text, _is_single_letter)
        if index < 0:
            return None
        return text[:index] + text[index] + text[index:]

    def _undouble(self, text: str) -> str | None:
        first = _DOUBLE_LETTER.search(text)  # most words have none: answer that cheaply
        if first is None:
            return None
        doubles = [match.start() for match in _DOUBLE_LETTER.finditer(text, first.start())]
        index = doubles[int(self._random() * len(doubles))]
        return text[:index] + text[index + 1 :]

    def _phonetic(self, text: str) -> str | None:
        words = self._words_with_confusions(text)
        if len(words) == 1:
            cumulative = words[0][1].cumulative
        else:  # the same running sums as over one list of all the query's confusions
            cumulative = list(accumulate(chain.from_iterable(c.weights for _, c in words)))
        if not cumulative or cumulative[-1] <= 0:
            return None
        # The draw of random.choices(candidates, weights): one number scaled to the total.
        pick = bisect.bisect(cumulative, self._random() * cumulative[-1], 0, len(cumulative) - 1)
        if len(words) == 1:
            offset, confusions = words[0]
        else:  # which word holds the picked confusion, and its index there
            ends = list(accumulate(len(c.spans) for _, c in words))
            word = bisect.bisect(ends, pick)
            offset, confusions = words[word]
            pick -= ends[word] - len(confusions.spans)
        start, end = confusions.spans[pick]
        start, end = start + offset, end + offset
        replacement = confusions.replacements[pick]
        found = text[start:end]
        if found[0].isupper():
            all_capitals = len(found) > 1 and found.isupper()
            replacement = replacement.upper() if all_capitals else replacement.capitalize()
        return text[:start] + replacement + text[end:]

    def _words_with_confusions(self, text: str) -> list[tuple[int, WordConfusions]]:
        """Each word of ``text`` (a run of letters) as its start and its confusions.

        Word anchors and first-letter protection only look inside a run of letters, so a
        word's confusions are found once and cached: queries share words, and the training
        data module re-noises the same queries every epoch.
        """
        if text.isascii():
            if text.isalpha():  # a one-word query: the most common case
                return [(0, self._word_confusions(text.lower()))]
            runs = [(match.start(), match.group().lower()) for match in _ASCII_WORD.finditer(text)]
        else:
            lowered = text.lower()
            if len(lowered) != len(text):  # rare letters (`İ`) that lower-case into two
                return []
            runs = [(start, lowered[start:end]) for start, end in _letter_runs(text)]
        return [(offset, self._word_confusions(word)) for offset, word in runs]

    def _word_confusions(self, word: str) -> WordConfusions:
        """The confusions of one lower-case word, cached (see ``_words_with_confusions``).

        The cache is emptied when full, which costs speed only, never changes a result.
        """
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        spans, replacements, weights = [], [], []
        for match in self._confusion_re.finditer(word):
            start, end = match.span()
            rules = self._rules_at[match.group(), start == 0, end == len(word)]
            spans += [(start, end)] * len(rules[0])
            replacements += rules[0]
            weights += rules[1]
        if len(self._word_cache) >= _WORD_CACHE_SIZE:
            self._word_cache.clear()
        cached = WordConfusions(
            tuple(spans), tuple(replacements), tuple(weights), tuple(accumulate(weights))
        )
        self._word_cache[word] = cached
        return cached

    def _merge_words(self, text: str) -> str | None:
        spaces = text.count(" ")
        if not spaces:
            return None
        position = -1
        for _ in range(int(self._random() * spaces) + 1):
            position = text.find(" ", position + 1)
        if position in (0, len(text) - 1):
            return None
        return text[:position] + text[position + 1 :]

    def _split_word(self, text: str) -> str | None:
        index = self._pick_position(text, _is_mid_word)
        if index < 0:
            return None
        return text[:index] + " " + text[index:]

    # -- query habits --------------------------------------------------------------------------

    def _strip_diacritics(self, text: str) -> str | None:
        if text.isascii():
            return None
        decomposed = unicodedata.normalize("NFD", text)
        bare = "".join(char for char in decomposed if not unicodedata.combining(char))
        bare = unicodedata.normalize("NFC", bare)
        return bare if bare != text else None

    def _drop_punctuation(self, text: str) -> str | None:
        if not _PUNCTUATION.search(text):
            return None
        spaced = _PUNCTUATION.sub(lambda m: "" if m.group() in _DROPPED_MARKS else " ", text)
        bare = " ".join(spaced.split())
        return bare if bare != text else None

    def _case_change(self, text: str) -> str | None:
        # Lower-casing is the habit; all capitals is rare. A query already in the drawn
        # case is left alone rather than pushed into the rare one.
        changed = text.lower() if self._random() < _LOWERCASE_SHARE else text.upper()
        return changed if changed != text else None


def _rules_by_place(
    confusions: Mapping[str, list[Confusion]], first_letter_factor: float
) -> dict[tuple[str, bool, bool], tuple[tuple[str, ...], tuple[float, ...]]]:
    """For letters found at/not at a word's start and end: the rules that fit, and weights.

    Answers ahead of time what the phonetic operation would otherwise work out per match.
    """
    table = {}
    for letters, rules in confusions.items():
        for at_start, at_end in product((False, True), repeat=2):
            fitting = [
                rule
                for rule in rules
                if (at_start or not rule.at_word_start) and (at_end or not rule.at_word_end)
            ]
            # A mid-word confusion at a word's first letter is as rare as any other typo there.
            weights = tuple(
                rule.weight * (first_letter_factor if at_start and not rule.at_word_start else 1.0)
                for rule in fitting
            )
            table[letters, at_start, at_end] = (tuple(r.replacement for r in fitting), weights)
    return table


def _literal_alternation(groups: Mapping[str, object]) -> re.Pattern[str]:
    """One regex finding any of the literal strings, longest first where they overlap.

    Grouping the alternatives by first letter makes matching about fifteen times faster
    than a flat alternation, which matters: the phonetic operation runs on every epoch.
    """
    by_first: dict[str, list[str]] = {}
    for letters in sorted(groups, key=lambda s: (-len(s), s)):
        by_first.setdefault(letters[0], []).append(re.escape(letters[1:]))
    return re.compile(
        "|".join(f"{re.escape(first)}(?:{'|'.join(rest)})" for first, rest in by_first.items())
    )


def _letter_runs(text: str) -> list[tuple[int, int]]:
    """Start and end of each maximal run of ``str.isalpha`` characters (the words)."""
    runs, start = [], -1
    for index, char in enumerate(text):
        if char.isalpha():
            if start < 0:
                start = index
        elif start >= 0:
            runs.append((start, index))
            start = -1
    if start >= 0:
        runs.append((start, len(text)))
    return runs


def _is_letter(text: str, index: int) -> bool:
    return text[index].isalpha()


def _is_single_letter(text: str, index: int) -> bool:
    char = text[index]
    return (
        char.isalpha()
        and (index == 0 or text[index - 1] != char)
        and (index + 1 == len(text) or text[index + 1] != char)
    )


def _starts_distinct_letter_pair(text: str, index: int) -> bool:
    return (
        index + 1 < len(text)
        and text[index].isalpha()
        and text[index + 1].isalpha()
        and text[index].lower() != text[index + 1].lower()
    )


def _is_mid_word(text: str, index: int) -> bool:
    return index > 0 and text[index].isalpha() and text[index - 1].isalpha()
