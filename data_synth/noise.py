"""Seeded, named typo operations that turn a clean search query into a realistic noisy one.

A corrector learns exactly the errors it is shown, so every operation here models one
thing people really do when typing a query: hit a neighbouring key (or a letter from
anywhere: ``nite``, ``smaking``), drop or double a letter, swap two letters, spell by ear
(``ph`` -> ``f``), run words together or split them, skip diacritics, apostrophes and
capitals. Each operation has its own rate, the number of typos per query follows a
configurable distribution, typos avoid a word's first letter (people rarely get it
wrong), and a share of queries stays clean so that the model also learns to leave
correct input alone.

Every result carries the names of the operations applied, so datasets can be audited
(``data_synth.stats``) and the model's errors broken down by cause.

Speed matters: the training data module re-noises the whole corpus every epoch, and a
Python loop that merely visits each query already costs more than the whole budget. So
the engine is columnar and works on a whole batch at once:

* the queries become one flat array of code points (all rows back to back, no padding:
  short queries of mixed length would be mostly padding in a matrix);
* every random decision is drawn for all rows at once, in a fixed order, from one seeded
  ``numpy.random.Generator`` (the same seed and inputs give the same outputs);
* what a character is (a letter, a space, a key with neighbours, a letter of the
  confusion table, its lower case) is read from lookup tables indexed by code point;
* every typo is the same kind of edit, "replace ``removed`` characters at ``start`` by a
  short replacement", so one round of typos for all rows is one splice of the array;
  each operation only decides, by vectorized masks, where it may land and what it types.

Python touches single queries only where Unicode is not per-character (for example
``'ß'.upper() == 'SS'``). ``corrupt`` and ``apply_op`` are batches of one.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from itertools import product, repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from data_synth.keyboards import LAYOUTS, get_keyboard
from data_synth.paths import CONF_DIR

DEFAULT_CONFUSIONS = Path(__file__).with_name("phonetic.tsv")

# Typos: each noisy query gets a drawn number of these, chosen by their relative rates.
TYPO_OPS: tuple[str, ...] = (
    "keyboard_substitute",  # a neighbouring key instead of the intended one
    "keyboard_insert",  # a neighbouring key pressed as well
    "substitute",  # any other letter instead of the intended one (`nite` for `nice`)
    "insert",  # any other letter typed as well, next to one (`smaking`, `wmore`)
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

_OPS = TYPO_OPS + QUERY_OPS  # an op's index here is its code in the ops matrix
_OP_TRIES = 4  # operations tried per typo before giving up on that typo
_LOWERCASE_SHARE = 0.95  # case_change: share lower-casing (the rest writes all capitals)
_DROPPED_MARKS = "'’‘`."  # vanish when typed (`dont`); other marks become spaces
_SPACE_CODE = ord(" ")
_UNICODE_SIZE = 0x110000
# Where rows become a padded matrix (the phonetic scan, the output strings), they form one
# matrix unless padding them to the longest would cost this many times the characters they
# hold; then they go in groups of similar length.
_PADDING_LIMIT = 4
_MIN_GROUP_WIDTH = 64
# strip_diacritics reads a table for these code points (Latin, Greek, Cyrillic and the other
# alphabets up to Devanagari, and Latin/Greek Extended); outside them it asks unicodedata.
# None of these characters composes with its neighbour without a combining mark (as Indic
# vowel signs and Hangul jamo do), so stripping them one by one equals stripping the text.
_STRIP_TABLE_RANGES = ((0x80, 0x900), (0x1E00, 0x2000))

# Bits of the per-code-point flags: what each character is, exactly as str methods say.
_ALPHA = 1 << 0  # str.isalpha: typos target letters, words are runs of them
_SPACE = 1 << 1  # str.isspace
_PUNCT = 1 << 2  # matches [^\w\s]|_ : drop_punctuation removes it or makes it a space
_DROPPED = 1 << 3  # one of _DROPPED_MARKS
_UPPER = 1 << 4  # str.isupper: a typed replacement keeps the capital
_COMBINING = 1 << 5  # unicodedata.combining() > 0: strip_diacritics deletes it
_OWN_LOWER = 1 << 6  # str.lower() of it is not one code point (or depends on context)
_OWN_UPPER = 1 << 7  # str.upper() of it is not one code point
_OWN_STRIP = 1 << 8  # outside the strip table: strip_diacritics asks unicodedata
_WIDE = 1 << 9  # beyond ASCII (the only characters with diacritics to strip)
_LOWERS = 1 << 10  # str.lower() changes it
_UPPERS = 1 << 11  # str.upper() changes it


class NoiseConfigError(ValueError):
    """A noise profile or confusion table is unusable; the message names the key and fix."""


class Corruption(NamedTuple):
    """One noisy version of a clean query and the operations, in order, that made it.

    A named tuple rather than a dataclass: a batch builds one per query, and a tuple is
    built in C, which keeps result objects from costing more than the typos themselves.
    """

    noisy: str
    clean: str
    ops: tuple[str, ...]  # immutable, so results with the same ops share one tuple


@dataclass(frozen=True)
class Confusion:
    """One row of the confusion table: lower-case ``letters`` and where they must stand."""

    letters: str
    replacement: str
    weight: float
    at_word_start: bool
    at_word_end: bool


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


# -- lookup tables by code point -------------------------------------------------------------


@dataclass(frozen=True)
class _CharTables:
    """Per-code-point answers to the questions the operations ask of a character."""

    flags: np.ndarray  # uint16 bits _ALPHA ... _OWN_STRIP
    lower: np.ndarray  # uint32: the one-code-point lower case (the character itself if none)
    upper: np.ndarray  # uint32: the one-code-point upper case (the character itself if none)
    strip: np.ndarray  # uint32: the character without diacritics (inside the strip table)
    lowered: np.ndarray  # the code points whose lower case is another code point


@cache
def _char_tables() -> _CharTables:
    """Built once per process (about 0.1 s): numpy's string functions classify all of Unicode
    with CPython's own character database, so the tables agree with ``str`` methods."""
    codes = np.arange(_UNICODE_SIZE, dtype=np.uint32)
    chars = codes.view("<U1")
    space = np.strings.isspace(chars)
    flags = np.where(np.strings.isalpha(chars), _ALPHA, 0).astype(np.uint16)
    flags |= np.where(space, _SPACE, 0).astype(np.uint16)
    # re's \w is str.isalnum() or "_"; code point 0 (a NUL character) is punctuation too.
    punct = ~(np.strings.isalnum(chars) | space)
    punct[ord("_")] = True
    flags |= np.where(punct, _PUNCT, 0).astype(np.uint16)
    flags |= np.where(np.strings.isupper(chars), _UPPER, 0).astype(np.uint16)
    flags[[ord(mark) for mark in _DROPPED_MARKS]] |= _DROPPED
    flags[0x80:] |= _WIDE

    # Case: only cased characters change under lower()/upper(); ask Python about those few.
    lower, upper = codes.copy(), codes.copy()
    cased = np.strings.isupper(chars) | np.strings.islower(chars) | np.strings.istitle(chars)
    for code in np.flatnonzero(cased).tolist():
        char = chr(code)
        for mapped, table, changes, own in (
            (char.lower(), lower, _LOWERS, _OWN_LOWER),
            (char.upper(), upper, _UPPERS, _OWN_UPPER),
        ):
            if mapped != char:
                flags[code] |= changes
            if len(mapped) == 1:
                table[code] = ord(mapped)
            else:  # 'ß'.upper() == 'SS', 'İ'.lower() == 'i̇'
                flags[code] |= own
    flags[ord("Σ")] |= _OWN_LOWER  # lower-cases to 'ς' at a word's end: str.lower looks around

    strip = codes.copy()
    own_strip = np.ones(_UNICODE_SIZE, dtype=bool)
    own_strip[:0x80] = False  # ASCII has nothing to strip
    for first, last in _STRIP_TABLE_RANGES:
        for code in range(first, last):
            char = chr(code)
            if unicodedata.combining(char):
                flags[code] |= _COMBINING
                own_strip[code] = False
                continue
            bare = _strip_diacritics_text(char)
            if len(bare) == 1:  # else (rare) a letter decomposing into two: ask unicodedata
                strip[code] = ord(bare)
                own_strip[code] = False
    flags |= np.where(own_strip, _OWN_STRIP, 0).astype(np.uint16)
    return _CharTables(flags, lower, upper, strip, np.flatnonzero(lower != codes))


def _strip_diacritics_text(text: str) -> str:
    """Drop combining marks after canonical decomposition: `Beyoncé` -> `Beyonce`."""
    decomposed = unicodedata.normalize("NFD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return unicodedata.normalize("NFC", bare)


@dataclass(frozen=True)
class _KeyTable:
    """A layout's neighbour keys for every code point that is typed with a key."""

    row: np.ndarray  # uint16 per code point: its row in ``keys`` (0: no neighbours)
    count: np.ndarray  # per row: how many neighbours
    keys: np.ndarray  # (rows, most neighbours) uint32: the neighbours, in the typed case


@cache
def _key_table(layout: str) -> _KeyTable:
    neighbors = get_keyboard(layout).neighbors
    tables = _char_tables()
    key_codes = [ord(key) for key, close in neighbors.items() if close]
    # A key is typed as itself, its capital, or an oddity that lower-cases to it (Kelvin sign).
    typed = np.flatnonzero(np.isin(tables.lower, key_codes)).tolist()
    widest = max(len(close) for close in neighbors.values())
    row = np.zeros(_UNICODE_SIZE, dtype=np.uint16)
    count = np.zeros(len(typed) + 1, dtype=np.int64)
    keys = np.zeros((len(typed) + 1, widest), dtype=np.uint32)
    for index, code in enumerate(typed, start=1):
        char = chr(code)
        close = neighbors[chr(tables.lower[code])]
        if char.isupper():  # a capital's neighbours are typed as capitals too
            close = "".join(key.upper() if len(key.upper()) == 1 else key for key in close)
        row[code] = index
        count[index] = len(close)
        keys[index, : len(close)] = [ord(key) for key in close]
    return _KeyTable(row, count, keys)


@dataclass(frozen=True)
class _ConfusionTable:
    """The confusion table as a trie over its letters, walked for all positions at once.

    A match is found the way a regex alternation scanning each word would find it: at each
    position the longest pattern, matches never overlapping. Which rules of a pattern fit
    depends on where the match stands (word start or end), so rules are grouped in *slots*:
    ``pattern * 4 + at_word_start * 2 + at_word_end``.
    """

    letter: np.ndarray  # uint8 per code point: its letter's column in ``step`` (0: none)
    step: np.ndarray  # (states, letters + 1): next state; state 0 is dead, 1 the root
    completes: np.ndarray  # per state: the pattern it completes, or -1
    depth: int  # letters in the longest pattern
    slot_weight: np.ndarray  # per slot: total weight of its fitting rules
    slot_weight_int: np.ndarray  # the same as integers (for drawing a position), ratios kept
    rule_cumulative: np.ndarray  # (slots, most rules): running sums, inf past the last rule
    replacement: np.ndarray  # (slots, most rules, 3 cases, longest) uint32
    replacement_length: np.ndarray  # (slots, most rules, 3)


@lru_cache(maxsize=16)
def _compile_confusions(
    confusions: tuple[Confusion, ...], first_letter_factor: float
) -> _ConfusionTable:
    """Cached: the dataset builder makes a model per chunk of queries, all with one table."""
    tables = _char_tables()
    rules_of: dict[str, list[Confusion]] = {}
    for rule in confusions:
        rules_of.setdefault(rule.letters, []).append(rule)
    patterns = list(rules_of)
    alphabet = sorted({char for letters in patterns for char in letters})
    column = {char: index for index, char in enumerate(alphabet, start=1)}

    # A letter of the text is looked up by its lower case, and only letters match (a word
    # is a run of letters, so no match crosses a space or punctuation).
    letter = np.zeros(_UNICODE_SIZE, dtype=np.uint16 if len(alphabet) > 254 else np.uint8)
    for char, index in column.items():
        if len(char) == 1:
            letter[ord(char)] = index
    sources = tables.lowered[np.isin(tables.lower[tables.lowered], [ord(c) for c in alphabet])]
    letter[sources] = [column[chr(tables.lower[code])] for code in sources.tolist()]
    letter[(tables.flags & _ALPHA) == 0] = 0

    step_rows: list[list[int]] = [[0] * (len(alphabet) + 1), [0] * (len(alphabet) + 1)]
    completes = [-1, -1]
    for index, letters in enumerate(patterns):
        state = 1
        for char in letters:
            if not step_rows[state][column[char]]:
                step_rows.append([0] * (len(alphabet) + 1))
                completes.append(-1)
                step_rows[state][column[char]] = len(step_rows) - 1
            state = step_rows[state][column[char]]
        completes[state] = index

    slots = _rules_by_place(patterns, rules_of, first_letter_factor)
    most_rules = max(len(fitting) for fitting, _ in slots)
    variants = [
        [(r, r.upper(), r.capitalize()) for r in fitting] for fitting, _ in slots
    ]  # the replacement as written, and for a match in capitals or with a capital first
    longest = max(1, *(len(v) for rules in variants for variant in rules for v in variant))
    rule_cumulative = np.full((len(slots), max(1, most_rules)), np.inf)
    replacement = np.zeros((len(slots), max(1, most_rules), 3, longest), dtype=np.uint32)
    replacement_length = np.zeros((len(slots), max(1, most_rules), 3), dtype=np.int64)
    for slot, ((_, weights), rules) in enumerate(zip(slots, variants, strict=True)):
        rule_cumulative[slot, : len(weights)] = np.cumsum(weights)
        for rule, texts in enumerate(rules):
            for variant, text in enumerate(texts):
                replacement[slot, rule, variant, : len(text)] = [ord(char) for char in text]
                replacement_length[slot, rule, variant] = len(text)
    slot_weight = np.array([sum(weights) for _, weights in slots])
    scaled = np.round(slot_weight * (2**30 / max(slot_weight.max(), 1e-300)))
    return _ConfusionTable(
        letter=letter,
        step=np.array(step_rows, dtype=np.intp),
        completes=np.array(completes, dtype=np.int64),
        depth=max(len(letters) for letters in patterns),
        slot_weight=slot_weight,
        slot_weight_int=np.where(slot_weight > 0, np.maximum(1, scaled), 0).astype(np.int64),
        rule_cumulative=rule_cumulative,
        replacement=replacement,
        replacement_length=replacement_length,
    )


def _rules_by_place(
    patterns: list[str], rules_of: Mapping[str, list[Confusion]], first_letter_factor: float
) -> list[tuple[list[str], list[float]]]:
    """Per slot (pattern, at word start, at word end): the fitting replacements and weights.

    Answers ahead of time what the phonetic operation would otherwise work out per match.
    """
    slots = []
    for letters in patterns:
        for at_start, at_end in product((False, True), repeat=2):
            fitting = [
                rule
                for rule in rules_of[letters]
                if (at_start or not rule.at_word_start) and (at_end or not rule.at_word_end)
            ]
            # A mid-word confusion at a word's first letter is as rare as any other typo there.
            weights = [
                rule.weight * (first_letter_factor if at_start and not rule.at_word_start else 1.0)
                for rule in fitting
            ]
            slots.append(([rule.replacement for rule in fitting], weights))
    return slots


# -- the engine ------------------------------------------------------------------------------

# Candidate positions carry integer weights, so that drawing one is exact: _WEIGHT for a
# plain candidate, less at a word's first letter (see NoiseModel._first_letter_weight).
_WEIGHT = 1 << 20
# Typos whose position avoids a word's first letter (the others never land there anyway,
# or, like undouble and merge_words, are about a double letter or a space).
_PROTECTED = frozenset(
    {
        "keyboard_substitute",
        "keyboard_insert",
        "substitute",
        "insert",
        "delete",
        "transpose",
        "double",
    }
)
_ASCII_LOWER = np.arange(ord("a"), ord("z") + 1)
_NOTHING = -1  # a drawn operation known not to fit its row


class _Plan(NamedTuple):
    """What a batch draws: a profile's rates, or (for ``apply_op``) one forced operation."""

    clean_share: float
    habit_rates: dict[str, float]  # query habit -> probability
    count_cumulative: np.ndarray  # running sums of the weights of 0, 1, 2, ... typos
    typo_cumulative: np.ndarray  # running sums of the rates of TYPO_OPS, in that order
    op_tries: int


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``range(start, start + length)`` for every pair, back to back, without a Python loop."""
    offsets = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) + np.repeat(starts - offsets, lengths)


def _row_sums(values: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Per row (``lens`` consecutive entries of ``values`` each): their sum, e.g. how many
    of a row's characters satisfy a mask. Differences of one running sum: cheaper than
    ``np.bincount`` or ``np.add.reduceat``, and right for rows of length 0."""
    running = np.concatenate(([0], np.cumsum(values)))
    ends = np.cumsum(lens)
    return running[ends] - running[ends - lens]


class _Chars:
    """The characters of some rows of a batch, back to back, and where each one stands.

    Where each character stands (its row, its column, ...) is worked out on first use:
    most steps need only a little of it, and every array costs a pass over the characters.
    """

    def __init__(
        self, codes: np.ndarray, flags: np.ndarray, lens: np.ndarray, starts: np.ndarray
    ) -> None:
        self.codes = codes  # uint32 code points
        self.flags = flags  # uint16 _CharTables.flags of each
        self.lens = lens  # per row: its length
        self.starts = starts  # per row: where it starts in the batch's ``codes``

    @cached_property
    def offsets(self) -> np.ndarray:
        """Per row: where its characters start here."""
        return np.cumsum(self.lens) - self.lens

    @cached_property
    def row(self) -> np.ndarray:
        """Per character: which of the rows holds it (0, 1, ... in the rows' order)."""
        return np.repeat(np.arange(len(self.lens)), self.lens)

    @cached_property
    def column(self) -> np.ndarray:
        """Per character: its position in its row."""
        return np.arange(len(self.codes)) - self.offsets[self.row]

    @cached_property
    def first(self) -> np.ndarray:
        """Per character: whether it starts its row."""
        return self._mark(self.offsets)

    @cached_property
    def last(self) -> np.ndarray:
        """Per character: whether it ends its row."""
        return self._mark(self.offsets + self.lens - 1)

    def _mark(self, positions: np.ndarray) -> np.ndarray:
        marked = np.zeros(len(self.codes), dtype=bool)
        marked[positions[self.lens > 0]] = True
        return marked

    def in_batch(self, position: np.ndarray) -> np.ndarray:
        """Where characters at ``position`` (one per row, in row order) are in the batch."""
        return self.starts + (position - self.offsets)

    def only(self, keep: np.ndarray) -> _Chars:
        """The characters of the rows where ``keep`` (a mask over rows) is true."""
        mine = keep[self.row]
        return _Chars(self.codes[mine], self.flags[mine], self.lens[keep], self.starts[keep])

    def part(self, rows: slice, chars: slice) -> _Chars:
        """A contiguous run of rows (``rows``), whose characters are ``chars``: all views."""
        return _Chars(self.codes[chars], self.flags[chars], self.lens[rows], self.starts[rows])

    def has(self, bits: np.ndarray | int) -> np.ndarray:
        """Per character: whether its flags have any of ``bits``."""
        return (self.flags & bits) != 0


class _Edit(NamedTuple):
    """Per row: replace ``codes[start : start + removed]`` by ``replacement[:added]``."""

    start: np.ndarray  # a position in the batch's ``codes``
    removed: np.ndarray
    replacement: np.ndarray  # (rows, width) uint32
    added: np.ndarray


class _Batch:
    """Queries as one flat array of code points (all rows back to back), their lengths,
    and the operations applied to each.

    Flat rather than a padded matrix: short queries of mixed length would otherwise be
    mostly padding, and every vectorized step costs per cell.
    """

    def __init__(self, texts: list[str], op_slots: int) -> None:
        # One C call each: join the strings, encode as UTF-32, read the code points.
        joined = "".join(texts).encode("utf-32-le", "surrogatepass")
        self.codes = np.frombuffer(joined, dtype=np.uint32)
        self.lens = np.array(list(map(len, texts)), dtype=np.int64)
        self.original = self.codes, self.lens.copy()
        # Per row, every flag any of its characters has (and perhaps a few of characters a
        # typo has since removed): tells which rows a query habit need look at.
        self.row_flags = self._row_flags(self.codes, self.lens)
        self.ops = np.full((len(texts), op_slots), -1, dtype=np.int8)
        self.op_count = np.zeros(len(texts), dtype=np.int64)

    def starts(self) -> np.ndarray:
        return np.cumsum(self.lens) - self.lens

    @staticmethod
    def _row_flags(codes: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """The bitwise or of the flags of each row's characters (rows back to back)."""
        row_flags = np.zeros(len(lens), dtype=np.uint16)
        filled = np.flatnonzero(lens > 0)  # reduceat needs rows that have characters
        if len(filled):
            starts = (np.cumsum(lens) - lens)[filled]
            row_flags[filled] = np.bitwise_or.reduceat(_char_tables().flags[codes], starts)
        return row_flags

    def chars(self, rows: np.ndarray) -> _Chars:
        """The characters of ``rows``, in the order given."""
        starts, lens = self.starts()[rows], self.lens[rows]
        codes = self.codes[_ranges(starts, lens)]
        return _Chars(codes, _char_tables().flags[codes], lens, starts)

    def text(self, row: int) -> str:
        start = int(self.starts()[row])
        codes = self.codes[start : start + self.lens[row]]
        return codes.tobytes().decode("utf-32-le", "surrogatepass")

    def record(self, rows: np.ndarray, op: np.ndarray | int) -> None:
        self.ops[rows, self.op_count[rows]] = op
        self.op_count[rows] += 1

    def splice(self, rows: np.ndarray, edit: _Edit) -> None:
        """Apply one edit to each of ``rows`` (ascending), all in a few passes over ``codes``:
        the removed spans are masked out, and the typed characters and the kept ones are
        each written to their places in a new array."""
        keep = np.ones(len(self.codes), dtype=bool)
        keep[_ranges(edit.start, edit.removed)] = False
        kept = np.compress(keep, self.codes)
        # Where each typed character lands: its edit's start, less what earlier edits
        # removed, plus what they (and this edit, before it) typed.
        typed_before = np.cumsum(edit.added) - edit.added
        landing = edit.start - (np.cumsum(edit.removed) - edit.removed) + typed_before
        typed_at = _ranges(landing, edit.added)
        width = edit.replacement.shape[1]
        typed = edit.replacement.ravel()[_ranges(np.arange(len(rows)) * width, edit.added)]
        codes = np.empty(len(kept) + len(typed_at), dtype=np.uint32)
        is_kept = np.ones(len(codes), dtype=bool)
        is_kept[typed_at] = False
        codes[typed_at] = typed
        codes[np.flatnonzero(is_kept)] = kept
        self.codes = codes
        self.lens[rows] += edit.added - edit.removed
        self.row_flags[rows] |= self._row_flags(codes[typed_at], edit.added)

    def rewrite(
        self, rows: np.ndarray, old: _Chars, codes: np.ndarray, lens: np.ndarray, op: int
    ) -> None:
        """Give ``rows`` new contents (``codes``: theirs back to back, ``lens`` long) where
        that changes them and leaves a visible character, and record ``op`` for those.

        For the query habits, which rewrite whole queries.
        """
        count = len(rows)
        if not count:  # a splice costs a pass over the whole batch
            return
        row = np.repeat(np.arange(count), lens)
        width = max(1, int(lens.max(initial=0)), int(old.lens.max(initial=0)))
        new, before = np.zeros((2, count, width), dtype=np.uint32)
        new[row, np.arange(len(codes)) - (np.cumsum(lens) - lens)[row]] = codes
        before[old.row, old.column] = old.codes
        shown = (_char_tables().flags[codes] & _SPACE) == 0
        keep = ((lens != old.lens) | (new != before).any(axis=1)) & (_row_sums(shown, lens) > 0)
        start = self.starts()[rows]
        self.splice(rows[keep], _Edit(start[keep], old.lens[keep], new[keep], lens[keep]))
        self.record(rows[keep], op)

    def strings(self) -> list[str]:
        """The rows as strings: scattered into a zero-padded matrix that numpy reads as
        fixed-width UTF-32 strings, one C call for all rows (it drops the padding)."""
        starts = self.starts()
        groups = _length_groups(self.lens)
        strings: list[str] = [""] * len(self.lens) if len(groups) > 1 else []
        for group in groups:
            lens = self.lens[group]
            width = max(1, int(lens.max(initial=0)))
            matrix = np.zeros((len(group), width), dtype=np.uint32)
            codes = self.codes if len(groups) == 1 else self.codes[_ranges(starts[group], lens)]
            matrix.ravel()[_ranges(np.arange(len(group)) * width, lens)] = codes
            found = matrix.view(f"<U{width}").ravel().tolist()
            if len(groups) == 1:
                strings = found
            else:  # rare (a very long query): put each group's rows in place
                for row_number, string in zip(group.tolist(), found, strict=True):
                    strings[row_number] = string
        # The padding is zeros, so a text ending in a NUL character lost it: rebuild those.
        filled = np.flatnonzero(self.lens > 0)
        ends_in_nul = self.codes[starts[filled] + self.lens[filled] - 1] == 0
        for row_number in filled[ends_in_nul].tolist():
            strings[row_number] = self.text(row_number)
        return strings

    def unchanged(self) -> np.ndarray:
        """Per row: whether it reads as it did at the start (its typos may undo each other)."""
        codes, lens = self.original
        same = self.op_count == 0
        check = np.flatnonzero(~same & (self.lens == lens))
        now = self.codes[_ranges(self.starts()[check], lens[check])]
        then = codes[_ranges((np.cumsum(lens) - lens)[check], lens[check])]
        same[check] = _row_sums(now != then, lens[check]) == 0
        return same

    def op_tuples(self) -> list[tuple[str, ...]]:
        """Each row's ops as a tuple of names, one shared tuple per distinct sequence (a
        batch holds a few dozen), which is a third of a result's cost saved per query."""
        base = len(_OPS) + 1
        if base ** self.ops.shape[1] < 2**62:  # each sequence as one int64 (base-13 digits)
            keys = (self.ops.astype(np.int64) + 1) @ (base ** np.arange(self.ops.shape[1]))
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            sequences = self.ops[first]
        else:  # a profile allowing over a dozen typos: compare whole rows (slower)
            sequences, inverse = np.unique(self.ops, axis=0, return_inverse=True)
        shared = [tuple(_OPS[code] for code in row if code >= 0) for row in sequences.tolist()]
        return list(map(shared.__getitem__, inverse.ravel().tolist()))


def _sample(
    weight: np.ndarray, lens: np.ndarray, uniform: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row (``lens`` consecutive entries of ``weight`` each, rows back to back): an entry
    drawn with probability proportional to its integer weight, and whether the row had any
    weight (where it had none, the entry is meaningless).

    Inverse-transform sampling on one running sum over all rows: a row's entries occupy
    ``[running[i], running[i + 1])`` on the number line, a uniform draw scaled into the row's
    stretch falls into exactly one of them (never into a zero-weight entry's empty one), and
    one binary search per row finds it.
    """
    running = np.concatenate(([0], np.cumsum(weight)))
    ends = np.cumsum(lens)
    before = running[ends - lens]
    total = running[ends] - before
    offset = np.minimum((uniform * total).astype(np.int64), np.maximum(total - 1, 0))
    entry = np.searchsorted(running, before + offset, side="right") - 1
    return np.clip(entry, ends - lens, ends - 1), total > 0


def _draw(cumulative: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Indices drawn by the running sums of their weights (``bisect`` on each, vectorized)."""
    total = cumulative[-1]
    target = np.minimum(uniform * total, np.nextafter(total, 0))
    return np.searchsorted(cumulative, target, side="right")


def _length_groups(lens: np.ndarray) -> list[np.ndarray]:
    """Rows grouped so that padding each group to its longest row costs little.

    One group unless a long row would make the padded matrix mostly padding; then groups
    of widths 64, 128, 256, ... (no row pads to more than twice its length, or to 64).
    """
    longest = int(lens.max(initial=0))
    if longest <= _MIN_GROUP_WIDTH or longest * len(lens) <= _PADDING_LIMIT * max(lens.sum(), 1):
        return [np.arange(len(lens))]
    group = np.ceil(np.log2(np.maximum(lens, _MIN_GROUP_WIDTH))).astype(np.int64)
    order = np.argsort(group, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(group[order])) + 1)


class _Around:
    """What stands next to each character of a ``_Chars`` within its own row."""

    def __init__(self, chars: _Chars, lower: np.ndarray) -> None:
        self.chars = chars
        self.first, self.last = chars.first, chars.last
        self.letter = chars.has(_ALPHA)
        self._lower = lower

    @cached_property
    def lower(self) -> np.ndarray:
        return self._lower[self.chars.codes]

    @cached_property
    def word_start(self) -> np.ndarray:
        return self.first | ~self.before(self.letter)

    def before(self, values: np.ndarray) -> np.ndarray:
        """Each character's predecessor's value (zero at the start of a row)."""
        return np.concatenate((np.zeros(1, values.dtype), values[:-1])) * ~self.first

    def after(self, values: np.ndarray) -> np.ndarray:
        """Each character's successor's value (zero at the end of a row)."""
        return np.concatenate((values[1:], np.zeros(1, values.dtype))) * ~self.last


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
        self._rng = np.random.default_rng(seed)
        self._tables = _char_tables()
        self._keys = _key_table(config["layout"])
        first_letter_factor = _check_fraction(config, "first_letter_factor")
        self._first_letter_weight = round(first_letter_factor * _WEIGHT)
        self._max_errors_per_char = float(max_per_char)
        self._confusions = _compile_confusions(
            tuple(load_confusions(config["confusions"] or DEFAULT_CONFUSIONS)),
            first_letter_factor,
        )
        self._plan = _Plan(
            clean_share=_check_fraction(config, "clean_share"),
            habit_rates={op: rate for op, rate in query_rates.items() if rate > 0},
            count_cumulative=np.cumsum([0.0, *map(float, counts)]),
            typo_cumulative=np.cumsum([typo_rates.get(op, 0.0) for op in TYPO_OPS]),
            op_tries=_OP_TRIES,
        )

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
        return self._corrupt([text], self._plan)[0]

    def corrupt_batch(self, texts: Iterable[str]) -> list[Corruption]:
        """``corrupt`` over many queries, in order; far faster per query than ``corrupt``."""
        return self._corrupt(list(texts), self._plan)

    def apply_op(self, name: str, text: str) -> str | None:
        """Apply one named operation once; None where it cannot apply (nothing to change).

        For tests and the noise gallery: shows what each operation does in isolation.
        """
        if name not in _OPS:
            raise NoiseConfigError(f"unknown operation {name!r}; use {', '.join(_OPS)}")
        is_typo = name in TYPO_OPS
        forced = _Plan(
            clean_share=0.0,
            habit_rates={} if is_typo else {name: 1.0},
            count_cumulative=np.array([0.0, 1.0]) if is_typo else np.array([1.0]),
            typo_cumulative=np.cumsum([float(op == name) for op in TYPO_OPS]),
            op_tries=1,
        )
        result = self._corrupt([text], forced)[0]
        return result.noisy if result.ops else None

    # -- one batch -------------------------------------------------------------------------

    def _corrupt(self, texts: list[str], plan: _Plan) -> list[Corruption]:
        n = len(texts)
        rng = self._rng
        batch = _Batch(texts, len(plan.habit_rates) + len(plan.count_cumulative) - 1)
        # Every per-query decision is drawn up front, in a fixed order, for all rows at once.
        noisy = batch.lens > 0
        if plan.clean_share > 0:
            noisy &= rng.random(n) >= plan.clean_share
        habits = {op: noisy & (rng.random(n) < rate) for op, rate in plan.habit_rates.items()}
        if "case_change" in habits:
            lowercase = rng.random(n) < _LOWERCASE_SHARE
        drawn = _draw(plan.count_cumulative, rng.random(n))
        cap = np.maximum(1, np.floor(batch.lens * self._max_errors_per_char).astype(np.int64))
        typos = np.minimum(drawn, cap) * noisy

        if "strip_diacritics" in habits:
            self._strip_diacritics(batch, np.flatnonzero(habits["strip_diacritics"]))
        if "drop_punctuation" in habits:
            self._drop_punctuation(batch, np.flatnonzero(habits["drop_punctuation"]))
        if "case_change" in habits:
            rows = np.flatnonzero(habits["case_change"])
            self._case_change(batch, rows, lowercase[rows])
        for round_index in range(int(typos.max(initial=0))):
            self._typo_round(batch, np.flatnonzero(typos > round_index), plan)

        noisy_texts = batch.strings()
        batch.ops[batch.unchanged()] = -1  # typos that undid each other leave a clean query
        # tuple.__new__ through map builds the results in C (see Corruption).
        results = zip(noisy_texts, texts, batch.op_tuples(), strict=True)
        return list(map(tuple.__new__, repeat(Corruption), results))

    # -- query habits: a table lookup per character; Python only for rare characters -------

    def _strip_diacritics(self, batch: _Batch, rows: np.ndarray) -> None:
        rows = rows[(batch.row_flags[rows] & _WIDE) != 0]  # ASCII has no diacritics
        chars = batch.chars(rows)
        own = _row_sums(chars.has(_OWN_STRIP), chars.lens) > 0
        chars = chars.only(~own)
        bare = ~chars.has(_COMBINING)
        lens = _row_sums(bare, chars.lens)
        code = _OPS.index("strip_diacritics")
        batch.rewrite(rows[~own], chars, self._tables.strip[chars.codes[bare]], lens, code)
        self._python_habit(batch, rows[own], _strip_diacritics_text, code)

    def _drop_punctuation(self, batch: _Batch, rows: np.ndarray) -> None:
        """Marks in _DROPPED_MARKS vanish, others become spaces; then ``" ".join(split())``."""
        rows = rows[(batch.row_flags[rows] & _PUNCT) != 0]
        chars = batch.chars(rows)
        punct = _row_sums(chars.has(_PUNCT), chars.lens) > 0  # row_flags may be stale
        rows, chars = rows[punct], chars.only(punct)
        dropped = chars.has(_DROPPED)
        blank = chars.has(_PUNCT | _SPACE) & ~dropped
        codes, row, blank = chars.codes[~dropped], chars.row[~dropped], blank[~dropped]
        lens = _row_sums(~dropped, chars.lens)
        # Collapse whitespace: a blank stays (as one space) only right after a word character
        # of its row, with another word character of its row somewhere after it.
        word = ~blank
        after_word = np.zeros_like(word)
        after_word[1:] = word[:-1] & (row[1:] == row[:-1])
        words_up_to_row_end = np.cumsum(_row_sums(word, lens))[row]
        word_later = words_up_to_row_end > np.cumsum(word)
        keep = word | (after_word & word_later)
        codes = np.where(blank, _SPACE_CODE, codes)[keep]
        lens = _row_sums(keep, lens)
        batch.rewrite(rows, chars, codes, lens, _OPS.index("drop_punctuation"))

    def _case_change(self, batch: _Batch, rows: np.ndarray, lowercase: np.ndarray) -> None:
        # Lower-casing is the habit; all capitals is rare. A query already in the drawn
        # case is left alone rather than pushed into the rare one.
        changes = (batch.row_flags[rows] & np.where(lowercase, _LOWERS, _UPPERS)) != 0
        rows, lowercase = rows[changes], lowercase[changes]
        chars = batch.chars(rows)
        own_bit = np.where(lowercase[chars.row], _OWN_LOWER, _OWN_UPPER)
        own = _row_sums(chars.has(own_bit), chars.lens) > 0
        code = _OPS.index("case_change")
        table = chars.only(~own)
        to_lower = lowercase[~own][table.row]
        cased = np.where(to_lower, self._tables.lower[table.codes], self._tables.upper[table.codes])
        batch.rewrite(rows[~own], table, cased, table.lens, code)
        for lower in (True, False):
            mine = own & (lowercase == lower)
            self._python_habit(batch, rows[mine], str.lower if lower else str.upper, code)

    def _python_habit(
        self, batch: _Batch, rows: np.ndarray, change: Callable[[str], str], code: int
    ) -> None:
        """A habit done by Python's own string functions, for rows the tables cannot do."""
        if not len(rows):
            return
        changed = [change(batch.text(row)) for row in rows.tolist()]
        codes = np.frombuffer("".join(changed).encode("utf-32-le", "surrogatepass"), np.uint32)
        lens = np.array(list(map(len, changed)), dtype=np.int64)
        batch.rewrite(rows, batch.chars(rows), codes, lens, code)

    # -- typos: one round gives each of ``rows`` one more typo -------------------------------

    def _typo_round(self, batch: _Batch, rows: np.ndarray, plan: _Plan) -> None:
        """Give each of ``rows`` one typo: the first of up to ``op_tries`` drawn operations
        that finds something to change; then apply all rows' edits in one splice."""
        count = len(rows)
        op = _draw(plan.typo_cumulative, self._rng.random(count))
        tries = np.ones(count, dtype=np.int64)
        self._skip_hopeless(batch, rows, op, tries, plan)
        done = np.zeros(count, dtype=bool)
        start, removed, added = np.zeros((3, count), dtype=np.int64)
        replacement = np.zeros((count, max(2, self._confusions.replacement.shape[-1])), np.uint32)
        pending = np.flatnonzero(op != _NOTHING)
        while len(pending):
            applies, edit = self._attempt(batch, rows[pending], op[pending])
            ok = np.flatnonzero(applies)
            hit = pending[ok]
            done[hit] = True
            start[hit], removed[hit], added[hit] = edit.start[ok], edit.removed[ok], edit.added[ok]
            replacement[hit, : edit.replacement.shape[1]] = edit.replacement[ok]
            pending = pending[np.flatnonzero(~applies)]
            pending = pending[tries[pending] < plan.op_tries]  # the others give up this typo
            op[pending] = _draw(plan.typo_cumulative, self._rng.random(len(pending)))
            tries[pending] += 1
        done = np.flatnonzero(done)
        batch.splice(rows[done], _Edit(start[done], removed[done], replacement[done], added[done]))
        batch.record(rows[done], op[done])

    def _skip_hopeless(
        self, batch: _Batch, rows: np.ndarray, op: np.ndarray, tries: np.ndarray, plan: _Plan
    ) -> None:
        """Redraw, without trying them, the drawn ``undouble`` and ``merge_words`` that find
        nothing: most words have no double letter and many queries are one word, so these
        would otherwise fail often. Rows that run out of draws get _NOTHING."""
        hopeful = {TYPO_OPS.index(name): name for name in ("undouble", "merge_words")}
        chosen = np.flatnonzero(np.logical_or.reduce([op == code for code in hopeful]))
        if not len(chosen):
            return
        around = _Around(batch.chars(rows[chosen]), self._tables.lower)
        fits = {  # per chosen row: whether the operation finds anything in it
            code: _row_sums(self._fits(name, around), around.chars.lens) > 0
            for code, name in hopeful.items()
        }
        hopeless = np.ones(len(chosen), dtype=bool)
        while True:
            hopeless[:] = False
            for code, found in fits.items():
                hopeless |= (op[chosen] == code) & ~found
            spent = hopeless & (tries[chosen] >= plan.op_tries)
            op[chosen[spent]] = _NOTHING
            redraw = chosen[hopeless & ~spent]
            if not len(redraw):
                return
            op[redraw] = _draw(plan.typo_cumulative, self._rng.random(len(redraw)))
            tries[redraw] += 1

    def _attempt(self, batch: _Batch, rows: np.ndarray, op: np.ndarray) -> tuple[np.ndarray, _Edit]:
        """Each row's operation once: where it lands (a position drawn among the places it
        fits, by weight), and what it types there; and per row whether it found anything to
        change. The edits come in the order of ``rows``."""
        count = len(op)
        uniform = self._rng.random((count, 3))
        # Rows sorted by operation: each operation then works on one contiguous slice of
        # the characters, and never on a mask over all of them.
        order = np.argsort(op.astype(np.int8), kind="stable")  # a radix sort, for small ints
        chars = batch.chars(rows[order])
        row_bounds = np.searchsorted(op[order], np.arange(len(TYPO_OPS) + 1))
        char_bounds = np.concatenate(([0], np.cumsum(chars.lens)))[row_bounds]
        parts = {
            code: (slice(*row_bounds[code : code + 2]), slice(*char_bounds[code : code + 2]))
            for code in np.flatnonzero(np.diff(row_bounds))
        }
        uniform = uniform[order]

        weight = np.empty(len(chars.codes), dtype=np.int64)
        matches = None
        for code, (row_part, char_part) in parts.items():
            name, part = TYPO_OPS[code], chars.part(row_part, char_part)
            if name == "phonetic":
                matches = self._confusion_matches(part)
                weight[char_part] = matches.weight
            else:
                around = _Around(part, self._tables.lower)
                fits = self._fits(name, around)
                if name in _PROTECTED:
                    protect = _WEIGHT - self._first_letter_weight  # taken off at a word start
                    fits = fits * (_WEIGHT - protect * around.word_start)
                else:
                    fits = fits * _WEIGHT
                weight[char_part] = fits
        position, applies = _sample(weight, chars.lens, uniform[:, 0])

        start = chars.in_batch(position)  # the drawn character's place in the batch
        removed, added = np.zeros((2, count), dtype=np.int64)
        replacement = np.zeros((count, max(2, self._confusions.replacement.shape[-1])), np.uint32)
        for code, (mine, char_part) in parts.items():
            at, drawn = position[mine], uniform[mine]
            match TYPO_OPS[code]:
                case "keyboard_substitute":
                    removed[mine], added[mine] = 1, 1
                    replacement[mine, 0] = self._neighbour(chars.codes[at], drawn[:, 1])
                case "substitute":
                    removed[mine], added[mine] = 1, 1
                    replacement[mine, 0] = self._other_letter(chars.codes[at], drawn[:, 1])
                case "keyboard_insert":  # the stray key lands after the intended one, or before
                    start[mine] += drawn[:, 2] < 0.5
                    added[mine] = 1
                    replacement[mine, 0] = self._neighbour(chars.codes[at], drawn[:, 1])
                case "insert":  # after the letter or before it; never the letter itself
                    start[mine] += drawn[:, 2] < 0.5
                    added[mine] = 1
                    replacement[mine, 0] = self._other_letter(chars.codes[at], drawn[:, 1])
                case "delete" | "undouble" | "merge_words":
                    removed[mine] = 1
                case "transpose":
                    removed[mine], added[mine] = 2, 2
                    following = np.minimum(at + 1, len(chars.codes) - 1)
                    replacement[mine, 0] = chars.codes[following]
                    replacement[mine, 1] = chars.codes[at]
                case "double":
                    added[mine] = 1
                    replacement[mine, 0] = chars.codes[at]
                case "split_word":
                    added[mine] = 1
                    replacement[mine, 0] = _SPACE_CODE
                case "phonetic":
                    typed, length, typed_length = self._confusion_typed(
                        chars, matches, char_part.start, at, drawn
                    )
                    removed[mine], added[mine] = length, typed_length
                    replacement[mine, : typed.shape[1]] = typed
        edit = _Edit(start, removed, replacement, added)
        applies &= _changes_visibly(chars, position, edit)
        restore = np.empty_like(order)  # the inverse of the sort by operation
        restore[order] = np.arange(count)
        return applies[restore], _Edit(*(field[restore] for field in edit))

    def _fits(self, name: str, around: _Around) -> np.ndarray:
        """Where in each row (a mask over characters) an operation other than phonetic fits."""
        chars, letter, lower = around.chars, around.letter, around.lower
        match name:
            case "keyboard_substitute" | "keyboard_insert":
                return self._keys.row[chars.codes] > 0  # a key with neighbours
            case "delete":
                return letter
            case "substitute" | "insert":  # a letter of the English alphabet, in either case
                return np.isin(lower, _ASCII_LOWER)
            case "transpose":  # two letters side by side that differ (`ee` would not change)
                return letter & around.after(letter) & (lower != around.after(lower))
            case "double":  # a letter not already doubled
                codes = chars.codes
                return letter & (around.before(codes) != codes) & (around.after(codes) != codes)
            case "undouble":  # a letter followed by the same letter, in either case
                return letter & (lower == around.after(lower))
            case "merge_words":  # a space between two characters
                return (chars.codes == _SPACE_CODE) & ~around.first & ~around.last
            case "split_word":  # a letter after a letter
                return letter & around.before(letter)
        raise AssertionError(name)

    def _neighbour(self, codes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A random neighbouring key of each character, in its case."""
        key_row = self._keys.row[codes]
        choice = (uniform * self._keys.count[key_row]).astype(np.int64)
        return self._keys.keys[key_row, np.minimum(choice, self._keys.keys.shape[1] - 1)]

    def _other_letter(self, codes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A random other letter of a-z for each (a-z, either case) letter, in its case."""
        lower = self._tables.lower[codes].astype(np.int64)
        index = lower - ord("a")
        drawn = np.minimum((uniform * 25).astype(np.int64), 24)
        letter = ord("a") + drawn + (drawn >= index)  # skips the letter itself
        return np.where(lower != codes, letter - 32, letter).astype(np.uint32)

    # -- phonetic: matches of the confusion table --------------------------------------------

    def _confusion_matches(self, chars: _Chars) -> _Matches:
        """Per character: the weight of drawing the confusions that start there (0 where none
        does), their slot and the number of letters they replace."""
        table = self._confusions
        letter = table.letter[chars.codes].astype(np.intp)
        left = chars.lens[chars.row] - chars.column  # characters from here to the row's end
        # 1. The longest pattern starting at every character: walk the trie from all of them
        #    at once, one letter deeper per step (state 0 is a dead end).
        step = table.step.ravel()  # step[state * letters + letter]: the next state
        letters = table.step.shape[1]
        state = step[letters + letter]  # one letter down from the root (state 1)
        longest, pattern = np.zeros((2, len(letter)), dtype=np.int64)
        following = np.zeros_like(letter)
        for depth in range(1, table.depth + 1):
            completed = table.completes[state]
            found = completed >= 0
            longest = np.maximum(longest, depth * found)  # a deeper match is a longer one
            pattern += found * (completed - pattern)
            if depth == table.depth or not state.any():
                break
            following[:-depth] = letter[depth:]  # the letter `depth` places on, in the same row
            state = step[state * letters + following * (left > depth)]
        # 2. Where each match stands in its word picks the rules that fit it (its slot).
        alpha = chars.has(_ALPHA)
        word_start = chars.first | ~np.concatenate(([False], alpha[:-1]))
        after = np.minimum(np.arange(len(letter)) + longest, len(letter) - 1)
        word_end = (longest >= left) | ~alpha[after]
        slot = pattern * 4 + word_start * 2 + word_end
        kept = _leftmost_matches(longest, chars)
        return _Matches(table.slot_weight_int[slot] * kept, slot, longest)

    def _confusion_typed(
        self, chars: _Chars, matches: _Matches, offset: int, at: np.ndarray, uniform: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For matches drawn at ``at``: a rule of their slot by weight, its replacement in
        the case of the letters it replaces (`Phone` -> `Fone`, `PHONE` -> `FONE`), the
        number of letters replaced and typed. ``matches`` begin at character ``offset``."""
        table = self._confusions
        slot, length = matches.slot[at - offset], matches.length[at - offset]
        cumulative, total = table.rule_cumulative[slot], table.slot_weight[slot]
        target = np.minimum(uniform[:, 1] * total, np.nextafter(total, 0))
        rule = np.minimum((cumulative <= target[:, None]).sum(axis=1), cumulative.shape[1] - 1)
        offsets = np.arange(table.depth)
        span = np.minimum(at[:, None] + offsets, len(chars.codes) - 1)
        upper = chars.has(_UPPER)[span] | (offsets >= length[:, None])
        capitals = np.where(upper.all(axis=1) & (length > 1), 1, 2)
        variant = np.where(chars.has(_UPPER)[at], capitals, 0)
        typed = table.replacement[slot, rule, variant]
        return typed, length, table.replacement_length[slot, rule, variant]


class _Matches(NamedTuple):
    """Per character: the confusions that would start there (see _confusion_matches)."""

    weight: np.ndarray  # integer weight of drawing this position (0: no match kept here)
    slot: np.ndarray
    length: np.ndarray


def _leftmost_matches(longest: np.ndarray, chars: _Chars) -> np.ndarray:
    """The matches a left-to-right scan of each row keeps, as a regex finds them: a kept
    match (``longest`` letters from its start, 0 where none starts) hides the starts it covers.

    The scan is sequential along a row, so it runs one column at a time over all rows at
    once, on a matrix (column by column in memory) of rows grouped by similar length.
    """
    kept = np.zeros(len(longest), dtype=bool)
    groups = _length_groups(chars.lens)
    for group in groups:
        if len(groups) == 1:  # the usual case: all rows in one matrix
            mine, cells = slice(None), (chars.column, chars.row)
        else:
            rank = np.full(len(chars.lens), -1)
            rank[group] = np.arange(len(group))
            mine = np.flatnonzero(rank[chars.row] >= 0)
            cells = chars.column[mine], rank[chars.row[mine]]
        columns = np.zeros((int(chars.lens[group].max()), len(group)), dtype=np.int64)
        columns[cells] = longest[mine]
        found = np.zeros(columns.shape, dtype=bool)
        free_from = np.zeros(len(group), dtype=np.int64)  # where each row's scan resumes
        for column, lengths in enumerate(columns):
            found[column] = (lengths > 0) & (free_from <= column)
            free_from += found[column] * (column + lengths - free_from)
        kept[mine] = found[cells]
    return kept


def _changes_visibly(chars: _Chars, position: np.ndarray, edit: _Edit) -> np.ndarray:
    """Where an edit changes its row and leaves more than whitespace in it (an edit that
    does not counts as an operation that could not apply, and is redrawn).

    Each check looks only at the rows that could fail it: an edit that types as many
    characters as it removes, and a row with no more visible characters than it removes.
    """
    ok = np.ones(len(position), dtype=bool)
    spaces = _row_sums(chars.has(_SPACE), chars.lens)
    same_size = (edit.removed == edit.added) & (edit.removed > 0)
    at_risk = chars.lens - spaces <= edit.removed
    rows = np.flatnonzero(same_size | at_risk)
    offsets = np.arange(max(int(edit.removed.max(initial=0)), edit.replacement.shape[1], 1))
    span = np.minimum(position[rows, None] + offsets, len(chars.codes) - 1)
    old = chars.codes[span]
    new = np.zeros_like(old)
    new[:, : edit.replacement.shape[1]] = edit.replacement[rows]
    in_old = offsets < edit.removed[rows, None]
    in_new = offsets < edit.added[rows, None]
    same = same_size[rows] & ((old == new) | ~in_old).all(axis=1)
    flags = _char_tables().flags
    old_visible = (in_old & ((flags[old] & _SPACE) == 0)).sum(axis=1)
    new_visible = (in_new & ((flags[new] & _SPACE) == 0)).sum(axis=1)
    visible = (chars.lens - spaces)[rows] - old_visible + new_visible
    ok[rows] = ~same & (visible > 0)
    return ok
