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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, product
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
_PLAN_CACHE_SIZE = 100_000  # texts whose typo plans are kept (about 1 KB each)
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


class _TypoPlan(NamedTuple):
    """A text's possible first typos (see ``NoiseModel._typo_plan``)."""

    success: float  # chance that any typo lands within the operation tries
    cumulative: tuple[float, ...]  # running sums of each operation's share of ``success``
    # per operation: (name, positions, protected count), or for phonetic
    # (name, spans, replacements, cumulative weights)
    choices: tuple[tuple, ...]
    punctuated: bool  # drop_punctuation could change it
    cap: int  # the most typos a query of its length may get


_NO_PLAN = object()  # cached for texts that take the general path (not ASCII)


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
        self._batch_rng = np.random.default_rng(seed)
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
        self._plans: dict[str, _TypoPlan | object] = {}
        self._ops: dict[str, Callable[[str], str | None]] = {
            name: getattr(self, f"_{name}") for name in TYPO_OPS + QUERY_OPS
        }
        # What ``corrupt`` walks per query, looked up once here rather than on every call.
        self._typo_ops = [(name, self._ops[name]) for name in typo_names]
        self._typo_shares = [typo_rates[name] / self._typo_total for name in typo_names]
        # case_change takes its direction from a draw made with the others (None marks it).
        self._query_ops = [
            (name, rate, None if name == "case_change" else self._ops[name])
            for name, rate in query_rates.items()
            if rate > 0
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
        habit_draws = [rng() for _ in self._query_ops]
        case_draw, count_draw, typo_draw = rng(), rng(), rng()
        count = bisect.bisect(self._count_cumulative, count_draw * self._count_total) + 1
        return self._corrupt_noisy(text, habit_draws, case_draw, count, typo_draw)

    def corrupt_batch(self, texts: Iterable[str]) -> list[Corruption]:
        """``corrupt`` over many queries, in order, with the same distribution of outputs.

        The batch draws its random numbers with numpy, all at once (its own stream, seeded
        like the model), settles clean queries and typo counts for the whole batch in one
        vectorised step, and runs Python per query only for the noisy ones; a query whose
        first typo can be read off its cached plan (see ``_typo_plan``), with no query habit
        to apply, never leaves the loop below.
        """
        texts = texts if isinstance(texts, list) else list(texts)
        # Columns: clean share, case direction, typo count, first typo, one per query habit.
        draws = self._batch_rng.random((len(texts), 4 + len(self._query_ops)))
        noisy_rows = (draws[:, 0] >= self._clean_share).tolist()
        counts = np.searchsorted(self._count_cumulative, draws[:, 2] * self._count_total, "right")
        habit_columns = draws[:, 4:]
        # Whether a habit that can change an ASCII query fires: the fast path stops for it.
        punctuation_fires = case_fires = np.zeros(len(texts), dtype=bool)
        for column, (name, rate, _) in enumerate(self._query_ops):
            if name == "drop_punctuation":
                punctuation_fires = habit_columns[:, column] < rate
            elif name == "case_change":
                case_fires = habit_columns[:, column] < rate
        punctuation_fires, case_fires = punctuation_fires.tolist(), case_fires.tolist()
        typo_draws, case_draws = draws[:, 3].tolist(), draws[:, 1].tolist()
        counts, habit_draws = (counts + 1).tolist(), habit_columns.tolist()

        plans, plan_for, planned_typo = self._plans, self._typo_plan, self._planned_typo
        corrupt_noisy, more_typos = self._corrupt_noisy, self._more_typos
        results = []
        append = results.append
        for row, text in enumerate(texts):
            if not noisy_rows[row] or not text:
                append(Corruption(text, text, []))
                continue
            plan = plans.get(text) or plan_for(text)
            if plan is _NO_PLAN or case_fires[row] or (punctuation_fires[row] and plan.punctuated):
                draws_of = habit_draws[row], case_draws[row], counts[row], typo_draws[row]
                append(corrupt_noisy(text, *draws_of))
                continue
            typo = planned_typo(text, plan, typo_draws[row])
            more = min(counts[row], plan.cap) - 1
            if not more:  # one typo: the common case, finished here
                append(
                    Corruption(text, text, [])
                    if typo is None
                    else Corruption(typo[0], text, [typo[1]])
                )
                continue
            noisy, ops = (text, []) if typo is None else (typo[0], [typo[1]])
            noisy = more_typos(noisy, ops, more)
            append(Corruption(noisy, text, ops if noisy != text else []))
        return results

    def _corrupt_noisy(
        self,
        text: str,
        habit_draws: Sequence[float],
        case_draw: float,
        count: int,
        typo_draw: float,
    ) -> Corruption:
        """A query drawn to be noisy: its habits, then ``count`` typos (at most the cap).

        The first typo comes from the query's plan where it has one (one draw, already
        made), the others from rejection sampling on the text as it stands by then.
        """
        noisy, ops = text, []
        for (name, rate, apply), draw in zip(self._query_ops, habit_draws, strict=False):
            if draw < rate:
                changed = self._change_case(noisy, case_draw) if apply is None else apply(noisy)
                if changed is not None and changed.strip():
                    noisy = changed
                    ops.append(name)
        todo = min(count, max(1, int(len(text) * self._max_errors_per_char)))
        plan = self._plans.get(noisy) or self._typo_plan(noisy)
        if plan is not _NO_PLAN and todo:
            typo = self._planned_typo(noisy, plan, typo_draw)
            todo -= 1
            if typo is not None:  # else every try failed, as rejection sampling may
                noisy = typo[0]
                ops.append(typo[1])
        noisy = self._more_typos(noisy, ops, todo)
        if noisy == text:  # later typos undid earlier ones: report the query as clean
            ops = []
        return Corruption(noisy, text, ops)

    def _more_typos(self, noisy: str, ops: list[str], count: int) -> str:
        """``count`` typos more, each by rejection sampling with up to ``_OP_TRIES`` ops."""
        rng, typo_cumulative, typo_total = self._random, self._typo_cumulative, self._typo_total
        for _ in range(count):
            for _attempt in range(_OP_TRIES):
                name, apply = self._typo_ops[bisect.bisect(typo_cumulative, rng() * typo_total)]
                changed = apply(noisy)
                if changed is not None and changed != noisy and changed.strip():
                    noisy = changed
                    ops.append(name)
                    break
        return noisy

    # -- the first typo, read off a plan of the query ------------------------------------------

    def _typo_plan(self, text: str) -> _TypoPlan | object:
        """Where each typo operation can land in ``text``, and how likely each outcome is.

        Gives the first typo exactly the distribution that rejection sampling gives it
        (``_more_typos``): up to ``_OP_TRIES`` operations drawn by rate, each landing on one
        of ``_POSITION_TRIES`` random indices that it accepts, a word's first letter kept with
        probability ``first_letter_factor``. An operation whose accepted positions weigh
        ``W`` in a text of length ``L`` therefore lands with probability
        ``1 - (1 - W / L) ** _POSITION_TRIES`` per try, on a position in proportion to its
        weight; the plan holds those numbers, so one draw picks the outcome. Plans are
        cached per text (the corpus is re-noised every epoch); only ASCII text gets one,
        the rest takes the general path.
        """
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            self._plans.clear()
        if not text.isascii():
            self._plans[text] = _NO_PLAN
            return _NO_PLAN
        length, lower = len(text), text.lower()
        letter = [char.isalpha() for char in text]
        word_start = [index == 0 or not letter[index - 1] for index in range(length)]
        neighbors = self._neighbors
        one_character = len(text.strip()) == 1  # deleting it would leave nothing
        positions = {
            "keyboard_substitute": [i for i in range(length) if neighbors.get(lower[i])],
            "delete": [] if one_character else [i for i in range(length) if letter[i]],
            "transpose": [
                i
                for i in range(length - 1)
                if letter[i] and letter[i + 1] and lower[i] != lower[i + 1]
            ],
            "double": [i for i in range(length) if _is_single_letter(text, i)],
            "split_word": [i for i in range(1, length) if letter[i] and letter[i - 1]],
        }
        positions["keyboard_insert"] = positions["keyboard_substitute"]
        factor = self._first_letter_factor
        choices, weights = [], []
        for (name, _), share in zip(self._typo_ops, self._typo_shares, strict=True):
            if name in positions:  # rejection-sampled positions, word starts down-weighted
                protected = [i for i in positions[name] if word_start[i]]
                if factor == 0:
                    protected = []
                places = protected + [i for i in positions[name] if not word_start[i]]
                weight = len(protected) * factor + len(places) - len(protected)
                lands = 1 - (1 - weight / length) ** _POSITION_TRIES
                choice: tuple = (name, tuple(places), len(protected))
            elif name in ("undouble", "merge_words"):  # uniform over doubles / inner spaces
                if name == "undouble":
                    places = [match.start() for match in _DOUBLE_LETTER.finditer(text)]
                    lands = 1.0 if places else 0.0
                else:
                    spaces = [i for i, char in enumerate(text) if char == " "]
                    places = [i for i in spaces if 0 < i < length - 1]
                    lands = len(places) / len(spaces) if spaces else 0.0
                choice = (name, tuple(places), 0)
            else:  # phonetic: the confusions of every word, by their weights
                spans, replacements, cumulative = [], [], []
                for offset, confusions in self._words_with_confusions(text):
                    spans += [(offset + start, offset + end) for start, end in confusions.spans]
                    replacements += confusions.replacements
                    cumulative += confusions.weights
                cumulative = list(accumulate(cumulative))
                lands = 1.0 if cumulative and cumulative[-1] > 0 else 0.0
                choice = (name, tuple(spans), tuple(replacements), tuple(cumulative))
            if lands > 0:
                choices.append(choice)
                weights.append(share * lands)
        per_try = sum(weights)
        plan = _TypoPlan(
            success=1 - (1 - per_try) ** _OP_TRIES if per_try < 1 else 1.0,
            cumulative=tuple(accumulate(weights)),
            choices=tuple(choices),
            punctuated=_PUNCTUATION.search(text) is not None,
            cap=max(1, int(length * self._max_errors_per_char)),
        )
        self._plans[text] = plan
        return plan

    def _planned_typo(self, text: str, plan: _TypoPlan, draw: float) -> tuple[str, str] | None:
        """The first typo of ``text`` for a uniform ``draw``: (noisy text, operation) or None.

        One draw makes every choice: where it falls below ``plan.success`` picks the
        operation, and what is left of it, rescaled to [0, 1), picks the position and then
        the key; 53 bits leave plenty for all three.
        """
        if draw >= plan.success or not plan.cumulative:
            return None
        cumulative = plan.cumulative
        scaled = draw / plan.success * cumulative[-1]
        pick = bisect.bisect(cumulative, scaled, 0, len(cumulative) - 1)
        below = cumulative[pick - 1] if pick else 0.0
        rest = min((scaled - below) / (cumulative[pick] - below), 0.9999999999)
        choice = plan.choices[pick]
        name = choice[0]
        if name == "phonetic":
            _, spans, replacements, weights = choice
            found = bisect.bisect(weights, rest * weights[-1], 0, len(weights) - 1)
            start, end = spans[found]
            noisy = _replace_keeping_case(text, start, end, replacements[found])
            return (noisy, name) if noisy != text and noisy.strip() else None
        _, places, protected = choice
        # Protected places (word starts) each weigh first_letter_factor, the others 1.
        factor = self._first_letter_factor
        spot = rest * (protected * factor + len(places) - protected)
        spot = spot / factor if spot < protected * factor else spot - protected * factor + protected
        slot = min(int(spot), len(places) - 1)
        rest, index = spot - slot, places[slot]
        if name == "delete" or name == "undouble" or name == "merge_words":
            return text[:index] + text[index + 1 :], name
        if name == "transpose":
            return text[:index] + text[index + 1] + text[index] + text[index + 2 :], name
        if name == "double":
            return text[:index] + text[index] + text[index:], name
        if name == "split_word":
            return text[:index] + " " + text[index:], name
        char = text[index]
        if name == "keyboard_insert":  # the stray key lands after the intended one or before
            after = rest < 0.5
            rest = rest * 2 if after else rest * 2 - 1
        keys = self._neighbors[char.lower()]
        key = keys[min(int(rest * len(keys)), len(keys) - 1)]
        key = key.upper() if char.isupper() else key
        if name == "keyboard_substitute":
            return text[:index] + key + text[index + 1 :], name
        if after:
            return text[: index + 1] + key + text[index + 1 :], name
        return text[:index] + key + text[index:], name

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
        replacement = confusions.replacements[pick]
        return _replace_keeping_case(text, start + offset, end + offset, replacement)

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
        return self._change_case(text, self._random())

    def _change_case(self, text: str, draw: float) -> str | None:
        # Lower-casing is the habit; all capitals is rare. A query already in the drawn
        # case is left alone rather than pushed into the rare one.
        changed = text.lower() if draw < _LOWERCASE_SHARE else text.upper()
        return changed if changed != text else None


def _replace_keeping_case(text: str, start: int, end: int, replacement: str) -> str:
    """``text`` with ``replacement`` for ``text[start:end]``, capitalised as what it replaces."""
    found = text[start:end]
    if found[0].isupper():
        all_capitals = len(found) > 1 and found.isupper()
        replacement = replacement.upper() if all_capitals else replacement.capitalize()
    return text[:start] + replacement + text[end:]


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
