"""The one home of decoding: how a trained model turns a query into a correction.

Training (validation metrics, calibration), every back end (PyTorch, ONNX Runtime,
TensorRT, the Triton models) and export read this module, so a query gets the same
correction wherever it runs. It imports only the standard library, numpy, rapidfuzz and
jellyfish: the Triton python-backend model copies it next to its ``model.py`` (see
``spellfix.export.triton``).

Two modes, recorded per model in ``decoding.json``:

``channel`` (what ``spellfix-train`` trains by default) is a noisy channel. The BART
model learns how people misspell, log P(typed | intended), from synthetic typos; which
words exist and how they combine comes from a lexicon of word and word-pair counts saved
beside the model. A query is split into words; each word gets candidates (itself,
lexicon words within a small edit distance, words that sound like it, splits into two
words, merges with its neighbour); a Viterbi search over those candidates maximizes

    channel log-prob + lm_weight * bigram log-prob - change_penalty * (changed words)

and each change carries a confidence: its probability against leaving those words as
typed, with its neighbours fixed. A change is
applied when its confidence reaches ``apply_threshold``; between ``suggest_threshold``
and that it is returned as a "did you mean" suggestion only. Anything that is not a
word of Latin letters (numbers, codes, emoji, other scripts), and any word with accents
(``crème``), is copied as it is, so no input is garbled and a query of any length is
corrected word by word. Names the lexicon lacks are kept where they show: capitalized
(``Ozuna``), or as a run of web words (``dua lipa``).

``generate`` is the classic seq2seq corrector (a model trained typo -> query, and every
model directory written before lexicons existed): greedy or beam generation, with a
confidence from the model's own scores of its output against the unchanged input.
Inputs longer than the model was trained on are left alone.

The weights ``change_penalty`` and ``unknown_word_logprob`` and the two thresholds are
chosen on the validation split at the end of training (``spellfix.calibrate``) and saved
in ``decoding.json``. ``lm_weight`` and the ``web_word_*`` prices are not: what they trade
is invisible in synthetic validation data, whose typos fall on random words and never on
a web word. ``lm_weight`` weighs how common a word is against how likely the typo is
(real typos fall on common words: validation prefers 1.0, real text 1.3); a web word
kept as typed (``Lexicon.web``) trades names and slang kept against the common
misspellings such lists also hold. Both were chosen on real text
(``experiments/results/accuracy.md``).
"""

from __future__ import annotations

import copy
import json
import math
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import jellyfish
import numpy as np
from rapidfuzz.distance import OSA

DECODING_FILE = "decoding.json"
LEXICON_FILE = "lexicon.tsv"
LEXICON_HEADER = "# spellfix lexicon 1: word<TAB>count, or first second<TAB>pair count"
# After this line, a lexicon file lists web words: word<TAB>frequency (share of web text).
WEB_SECTION = "# web words: word<TAB>frequency; kept when typed, never proposed"
MODES = ("channel", "generate")
CONSTRAINTS = ("lexicon", "catalog", "none")
# SymSpell's trick: deletes are indexed on a word's first characters only, which bounds
# the index at a few dozen keys per word; the full distance is checked afterwards.
PREFIX_LENGTH = 7
# Words shorter than this get no sound-alike candidates: a short key is shared by too many
# words (with 4, norvig lost 1.2 points and 0.5% more lower-cased titles changed).
PHONETIC_MIN_LENGTH = 5
# A sound-alike differs from the typed word in at most this share of its letters, and by
# at most two edits more than the edit search reaches: a key drops vowels and doubled
# letters, so `aaaaaaaa` shares one with `aah` and `brulee` with `barrel`. Of the sound-
# alikes that were the word meant in the real misspelling lists, 1 in 10 lay beyond this.
PHONETIC_MAX_SHARE = 0.5
PHONETIC_EXTRA_EDITS = 2
# Channel scores kept between calls (a serving process sees the same words again).
CHANNEL_CACHE_SIZE = 200_000


@dataclass(frozen=True)
class DecodingSettings:
    """Every knob of decoding; saved with a model as ``decoding.json``."""

    mode: str = "channel"  # channel | generate (see the module docstring)
    constraint: str = "lexicon"  # lexicon | catalog (catalog entries preferred) | none
    max_edit_distance: int = 2  # candidates differ from a typed word by at most this (OSA)
    short_word_max_edit_distance: int = 1  # ... and words of <= 4 letters by at most this
    max_candidates: int = 8  # lexicon candidates per typed word, nearest and most frequent first
    phonetic_candidates: int = 4  # more, for an unknown word: lexicon words that sound like it
    min_word_length: int = 2  # shorter words are never changed ("a", "i", "u")
    beam_width: int = 12  # states kept per position by the Viterbi search
    lm_weight: float = 1.3  # weight of the word-pair language model against the channel
    bigram_share: float = 0.6  # interpolation weight of the pair estimate (rest: unigram)
    unknown_word_logprob: float = (
        -12.0
    )  # log P(a word is not in the lexicon); its letters cost more
    change_penalty: float = 2.0  # log-odds against changing a word at all
    web_word_offset: float = -6.0  # added to a web word's log frequency when it is kept
    web_word_midpoint: float = -14.0  # log frequency below which web words are mostly typos
    web_word_steepness: float = 1.0  # how fast the share of real words falls below it
    known_word_penalty: float = 8.0  # ... and more against changing a word the lexicon knows
    keep_capitalized_unknown: bool = True  # a capitalized word the lexicon lacks is a name: kept
    keep_name_runs: bool = True  # a web word beside another web word the lexicon lacks: kept
    spelling_weight: float = 0.5  # weight of the spelling model in an unknown word's log-prob
    catalog_weight: float = 0.5  # share of probability mass given to catalog entries
    apply_threshold: float = 0.5  # confidence from which a change is applied
    isolated_word_apply_threshold: float = 0.5  # ... in a query of a single word
    suggest_threshold: float = 0.3  # confidence from which it is offered as "did you mean"
    # generate mode (and the budget every generating back end shares)
    num_beams: int = 1  # beam width of generation; 1 is greedy
    max_new_tokens_ratio: float = 1.5  # generated tokens allowed per input token
    min_new_tokens_budget: int = 8  # generation budget for very short queries

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"decoding.mode={self.mode!r}: choose one of {', '.join(MODES)}")
        if self.constraint not in CONSTRAINTS:
            raise ValueError(
                f"decoding.constraint={self.constraint!r}: choose one of {', '.join(CONSTRAINTS)}"
            )
        if self.mode == "channel" and self.constraint == "none":
            raise ValueError(
                "decoding.constraint=none needs a generating model (decoding.mode=generate); "
                "a noisy-channel model only chooses among lexicon words and the input's own"
            )
        lowest = min(self.apply_threshold, self.isolated_word_apply_threshold)
        highest = max(self.apply_threshold, self.isolated_word_apply_threshold)
        if not 0 <= self.suggest_threshold <= lowest <= highest <= 1:
            raise ValueError(
                "decoding thresholds must satisfy 0 <= suggest_threshold <= apply_threshold <= 1"
            )
        if self.web_word_steepness < 0:
            raise ValueError(
                f"decoding.web_word_steepness must be >= 0, got {self.web_word_steepness}"
            )
        if self.phonetic_candidates < 0:
            raise ValueError(
                f"decoding.phonetic_candidates must be >= 0, got {self.phonetic_candidates}"
            )
        for name in ("max_candidates", "beam_width", "num_beams", "min_new_tokens_budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"decoding.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict) -> DecodingSettings:
        """Settings from a dict; an unknown key is an error naming it (a typo is not ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"decoding.{unknown[0]}: unknown key; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def updated(self, **changes) -> DecodingSettings:
        return replace(self, **changes)


def load_settings(directory: str | Path) -> DecodingSettings | None:
    """The ``decoding.json`` of a model or export directory, or None when it has none."""
    path = Path(directory) / DECODING_FILE
    if not path.is_file():
        return None
    return DecodingSettings.from_dict(json.loads(path.read_text(encoding="utf-8")))


def save_settings(settings: DecodingSettings, directory: str | Path) -> Path:
    path = Path(directory) / DECODING_FILE
    path.write_text(json.dumps(settings.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def max_new_tokens_for(input_length: int, ratio: float, minimum: int, max_positions: int) -> int:
    """How many tokens a generated correction of an ``input_length``-token query may have.

    A correction is about as long as its query, so the budget scales with the input
    (``ratio`` leaves room for split words); ``minimum`` keeps short queries from being cut
    and the decoder's position table caps it (one position goes to the start token). The
    budget is per query, never per batch, so a query's correction does not depend on what
    else shares its batch.
    """
    budget = max(minimum, math.ceil(ratio * input_length))
    return max(1, min(budget, max_positions - 1))


# ----------------------------------------------------------------------------- words
class Word(NamedTuple):
    """A stretch of the query: ``text`` at ``start``; ``key`` (lower case) when correctable."""

    start: int
    text: str
    key: str | None


_CHUNK = re.compile(r"\S+")
# Letters only: contractions ("I'm", "nothin'") and hyphenated names are copied, since a
# dictionary lists few of them and would "correct" them into other words.
_WORD_CORE = re.compile(r"^[^\W\d_]+$")
_APOSTROPHES = frozenset("'’")


def _is_latin(text: str) -> bool:
    return all(unicodedata.name(char, "").startswith("LATIN") for char in text if char.isalpha())


def split_words(text: str) -> list[Word]:
    """The query's correctable words, and every other run of non-space characters.

    A chunk between spaces is correctable when, without its surrounding punctuation, it is
    Latin letters, and it is neither elided (``nothin'``, ``'em``, ``I'm``) nor an acronym
    (``DJ``, ``UGK``: capitals in a query that is not all capitals). Anything else
    (``mp3``, ``#1``, a word in another script, emoji) stays as typed. The positions let a
    correction rewrite only the words it changes, so spacing and punctuation survive.
    """
    letters = [char for char in text if char.isalpha()]
    shouting = bool(letters) and sum(c.isupper() for c in letters) > 0.8 * len(letters)
    words = []
    for match in _CHUNK.finditer(text):
        chunk = match.group()
        left = 0
        while left < len(chunk) and not chunk[left].isalnum():
            left += 1
        right = len(chunk)
        while right > left and not chunk[right - 1].isalnum():
            right -= 1
        core = chunk[left:right]
        if left:
            words.append(Word(match.start(), chunk[:left], None))
        if core:
            elided = _APOSTROPHES & {chunk[left - 1 : left], chunk[right : right + 1]}
            acronym = len(core) > 1 and core.isupper() and not shouting
            correctable = (
                bool(_WORD_CORE.match(core)) and _is_latin(core) and not elided and not acronym
            )
            words.append(Word(match.start() + left, core, core.casefold() if correctable else None))
        if right < len(chunk):
            words.append(Word(match.start() + right, chunk[right:], None))
    return words


def is_word_key(text: str) -> bool:
    """Whether ``text`` is the key ``split_words`` gives it when typed alone (Latin letters,
    already case-folded): its test without its splitting, fast enough for a 300k-word list."""
    return (
        bool(_WORD_CORE.match(text))
        and text.casefold() == text
        and (text.isascii() or _is_latin(text))
    )


def _names(words: list[Word]) -> list[int]:
    """Positions of capitalized words the writer chose to capitalize: not the first word of
    a sentence, unless the query capitalizes most of its words (a title)."""
    correctable = [w for w in words if w.key is not None]
    if correctable and all(w.text.isupper() for w in correctable):
        return []  # all capitals: caps lock says nothing about names
    capitals = sum(w.text[0].isupper() for w in correctable)
    title_case = len(correctable) > 1 and capitals > 0.5 * len(correctable)
    positions, sentence_start = [], True
    for position, word in enumerate(words):
        if word.key is not None:
            if word.text[0].isupper() and (title_case or not sentence_start):
                positions.append(position)
            sentence_start = False
        elif word.text[-1] in ".!?":
            sentence_start = True
    return positions


def transfer_case(typed: str, word: str) -> str:
    """Give ``word`` the case pattern of what the user typed (``SPELING`` -> ``SPELLING``)."""
    letters = [char for char in typed if char.isalpha()]
    if len(letters) > 1 and all(char.isupper() for char in letters):
        return word.upper()
    if letters and letters[0].isupper():
        return " ".join(part[:1].upper() + part[1:] for part in word.split(" "))
    return word


def osa_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (adjacent transpositions count one), or
    ``limit + 1`` when it exceeds ``limit``. rapidfuzz's, in C++: candidate search
    measures thousands of words per batch, and a Python loop spent half its time here."""
    return OSA.distance(a, b, score_cutoff=limit)


def _deletes(word: str, distance: int) -> set[str]:
    found = {word}
    frontier = {word}
    for _ in range(distance):
        frontier = {w[:i] + w[i + 1 :] for w in frontier if len(w) > 1 for i in range(len(w))}
        found |= frontier
    return found


# ------------------------------------------------------------------ spelling model
class SpellingModel:
    """A character model of the lexicon's words: how likely a string is as a word.

    It prices what the lexicon does not know. A name such as ``ozuna`` reads like a
    word and costs little; ``callbvcks`` does not; and every letter costs, so a long
    unknown string is far less likely than a short one, as it should be. Order-``order``
    character contexts, each backing off to the shorter one with additive weight
    ``smoothing`` (the letters of unseen contexts share what remains).
    """

    def __init__(self, words: Iterable[str], order: int = 4, smoothing: float = 1.0) -> None:
        self.order = order
        self.smoothing = smoothing
        self.counts: dict[str, dict[str, int]] = {}
        alphabet: set[str] = set()
        for word in words:
            padded = "^" * (order - 1) + word + "$"
            alphabet.update(word)
            for end in range(order - 1, len(padded)):
                for length in range(order):
                    context = padded[end - length : end]
                    followers = self.counts.setdefault(context, {})
                    followers[padded[end]] = followers.get(padded[end], 0) + 1
        self.totals = {context: sum(f.values()) for context, f in self.counts.items()}
        self.uniform = 1.0 / (len(alphabet) + 2)
        self._cache: dict[str, float] = {}

    def _probability(self, context: str, char: str) -> float:
        base = self._probability(context[1:], char) if context else self.uniform
        followers = self.counts.get(context)
        if not followers:
            return base
        return (followers.get(char, 0) + self.smoothing * base) / (
            self.totals[context] + self.smoothing
        )

    def logprob(self, word: str) -> float:
        """log P(word) as a string of letters (with its end)."""
        cached = self._cache.get(word)
        if cached is None:
            padded = "^" * (self.order - 1) + word + "$"
            cached = sum(
                math.log(self._probability(padded[end - self.order + 1 : end], padded[end]))
                for end in range(self.order - 1, len(padded))
            )
            if len(self._cache) < CHANNEL_CACHE_SIZE:
                self._cache[word] = cached
        return cached


# --------------------------------------------------------------------------- lexicon
class Lexicon:
    """Word and word-pair counts: what exists, how often, and what follows what.

    Counts are floats, so lexicons from different sources (the built-in English
    dictionary, a corpus, a catalog) can be mixed at a chosen share of the mass
    (``mixed``). The deletion index for candidate search is built on first use.

    ``web`` holds words seen on the web that the counts lack (``mom``, ``adsense``,
    ``beyonce``), with their frequency in web text. They are never proposed as a
    correction, since such a list also holds people's commonest misspellings (``teh``,
    ``becuase``); they only make keeping a typed word as likely as its frequency says,
    so a name or a brand is not replaced by a dictionary word that looks like it.
    """

    def __init__(
        self,
        unigrams: dict[str, float],
        bigrams: dict[tuple[str, str], float],
        web: dict[str, float] | None = None,
    ) -> None:
        self.unigrams = {w: float(c) for w, c in unigrams.items() if c > 0}
        self.bigrams = {pair: float(c) for pair, c in bigrams.items() if c > 0}
        self.web = {
            w: math.log(f) for w, f in (web or {}).items() if f > 0 and w not in self.unigrams
        }
        self.total = sum(self.unigrams.values()) or 1.0
        self.log_total = math.log(self.total)
        self.followers_total: dict[str, float] = {}
        for (first, _), count in self.bigrams.items():
            self.followers_total[first] = self.followers_total.get(first, 0.0) + count
        self._index: dict[str, list[str]] | None = None
        self._index_distance = 0
        self._sound_index: dict[str, list[str]] | None = None
        self._spelling: SpellingModel | None = None

    @property
    def spelling(self) -> SpellingModel:
        """The character model of this lexicon's words (built on first use)."""
        if self._spelling is None:
            self._spelling = SpellingModel(self.unigrams)
        return self._spelling

    def __len__(self) -> int:
        return len(self.unigrams)

    def __contains__(self, word: str) -> bool:
        return word in self.unigrams

    # -- files
    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        """Read a ``lexicon.tsv``; a malformed line is an error naming the file and line."""
        path = Path(path)
        unigrams: dict[str, float] = {}
        bigrams: dict[tuple[str, str], float] = {}
        web: dict[str, float] = {}
        counted = unigrams
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.rstrip("\n") == WEB_SECTION:
                    counted = web
                if line.startswith("#") or not line.strip():
                    continue
                entry, _, count = line.rstrip("\n").rpartition("\t")
                try:
                    value = float(count)
                except ValueError:
                    raise ValueError(f"{path}:{number}: expected 'word<TAB>count'") from None
                parts = entry.split(" ")
                if len(parts) == 1 and parts[0]:
                    counted[parts[0]] = value
                elif len(parts) == 2 and all(parts):
                    bigrams[(parts[0], parts[1])] = value
                else:
                    raise ValueError(f"{path}:{number}: expected one word or two, got {entry!r}")
        return cls(unigrams, bigrams, web)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        lines = [LEXICON_HEADER]
        lines += [f"{w}\t{c:.6g}" for w, c in sorted(self.unigrams.items(), key=lambda e: -e[1])]
        lines += [
            f"{a} {b}\t{c:.6g}" for (a, b), c in sorted(self.bigrams.items(), key=lambda e: -e[1])
        ]
        if self.web:
            lines.append(WEB_SECTION)
            lines += [
                f"{w}\t{math.exp(lp):.6g}"
                for w, lp in sorted(self.web.items(), key=lambda e: -e[1])
            ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Lexicon:
        """Counts of the words and adjacent word pairs of clean queries.

        An acronym (``DJ Snake``) is counted in lower case too: typed in lower case
        (``dj snake``) it is a word to keep, not a typo of a shorter one.
        """
        unigrams: dict[str, float] = {}
        bigrams: dict[tuple[str, str], float] = {}
        for text in texts:
            previous = None
            for word in split_words(text):
                key = word.key
                if key is None and _WORD_CORE.match(word.text) and _is_latin(word.text):
                    key = word.text.casefold()
                if key is None:
                    previous = None
                    continue
                unigrams[key] = unigrams.get(key, 0.0) + 1.0
                if previous is not None:
                    bigrams[(previous, key)] = bigrams.get((previous, key), 0.0) + 1.0
                previous = key
        return cls(unigrams, bigrams)

    @staticmethod
    def mixed(parts: Sequence[tuple[Lexicon, float]]) -> Lexicon:
        """One lexicon giving each part the given share of the unigram (and pair) mass."""
        unigrams: dict[str, float] = {}
        bigrams: dict[tuple[str, str], float] = {}
        web: dict[str, float] = {}
        scale = 1e9  # counts stay in a familiar range, so files read naturally
        for lexicon, _ in parts:
            for word, logprob in lexicon.web.items():
                web[word] = max(web.get(word, 0.0), math.exp(logprob))
        for lexicon, share in parts:
            if share <= 0 or not lexicon.unigrams:
                continue
            factor = scale * share / lexicon.total
            for word, count in lexicon.unigrams.items():
                unigrams[word] = unigrams.get(word, 0.0) + count * factor
            pair_total = sum(lexicon.bigrams.values()) or 1.0
            pair_factor = scale * share / pair_total
            for pair, count in lexicon.bigrams.items():
                bigrams[pair] = bigrams.get(pair, 0.0) + count * pair_factor
        return Lexicon(unigrams, bigrams, web)

    # -- the language model
    def unigram_logprob(self, word: str, unknown: float) -> float:
        """log P(word); an unknown word costs ``unknown`` (log P(any unknown word)) plus its
        spelling's log-prob."""
        count = self.unigrams.get(word)
        if count:
            return math.log(count) - self.log_total
        return unknown + self.spelling.logprob(word)

    def pair_logprob(self, previous: str | None, word: str, unknown: float, share: float) -> float:
        """log P(word | previous): the pair estimate interpolated with the unigram one."""
        unigram = self.unigram_logprob(word, unknown)
        if previous is None:
            return unigram
        total = self.followers_total.get(previous)
        pair = self.bigrams.get((previous, word)) if total else None
        if not pair:
            return math.log(1.0 - share) + unigram
        return math.log(share * pair / total + (1.0 - share) * math.exp(unigram))

    # -- candidates
    def _build_index(self, distance: int) -> dict[str, list[str]]:
        if self._index is None or self._index_distance < distance:
            index: dict[str, list[str]] = {}
            for word in self.unigrams:
                for key in _deletes(word[:PREFIX_LENGTH], distance):
                    index.setdefault(key, []).append(word)
            self._index, self._index_distance = index, distance
        return self._index

    def nearest(self, typed: str, max_distance: int, limit: int) -> list[tuple[str, int]]:
        """Lexicon words within ``max_distance`` (OSA) of ``typed``, nearest and most
        frequent first, at most ``limit``; ``typed`` itself is among them when known."""
        index = self._build_index(max_distance)
        seen: set[str] = set()
        found = []
        prefix = typed[:PREFIX_LENGTH]
        for key in _deletes(prefix, max_distance):
            for word in index.get(key, ()):
                if word in seen:
                    continue
                seen.add(word)
                distance = osa_distance(typed, word, max_distance)
                if distance <= max_distance:
                    found.append((distance, -self.unigrams[word], word))
        found.sort()
        return [(word, distance) for distance, _, word in found[:limit]]

    def sounds_like(self, typed: str) -> list[str]:
        """Lexicon words with the Metaphone key of ``typed``, most frequent first.

        A fifth of the misspellings in the aspell list are three or more edits from the word
        meant, out of reach of edit-distance search, and many are spelled by ear
        (``hifin``, ``beauro``, ``disition``): the same key finds a quarter of those, among
        three words on average. The channel model still has to find the typo likely.
        """
        if not typed.isalpha():
            return []
        if self._sound_index is None:
            index: dict[str, list[str]] = {}
            for word in sorted(self.unigrams, key=lambda w: -self.unigrams[w]):
                if len(word) >= 3 and word.isalpha():
                    index.setdefault(jellyfish.metaphone(word), []).append(word)
            self._sound_index = index
        return self._sound_index.get(jellyfish.metaphone(typed), [])


# ------------------------------------------------------------------ the noisy channel
class Correction(NamedTuple):
    """One query's result; ``correction`` is what to search for."""

    query: str
    correction: str  # the query itself unless a change was confident enough
    confidence: float  # probability that ``correction`` is what the user meant
    suggestion: str | None  # a "did you mean" (below the apply threshold), or None


class Edge(NamedTuple):
    """Candidate words for the typed words ``start:end`` (indices into the query's words)."""

    start: int
    end: int
    words: tuple[str, ...]  # what replaces the typed words (lower case)
    channel: float  # log P(typed | words)
    changed: bool
    typed_known: bool = False  # every typed word is in the lexicon (a change is a real-word fix)


class Lattice(NamedTuple):
    """Everything about a query that does not depend on the decoding weights."""

    query: str
    words: list[Word]
    edges_from: list[list[Edge]]  # edges leaving each word position


class SearchResult(NamedTuple):
    """The best path and, for each change on it, its confidence."""

    path: list[Edge]
    confidences: list[float]  # one per edge of ``path`` (1.0 for unchanged words)


# (intended, typed) pairs -> log P(typed | intended), one float each.
ChannelScorer = Callable[[list[str], list[str]], np.ndarray]


class NoisyChannelDecoder:
    """Corrects queries with a channel model, a lexicon and the settings; see the module doc.

    ``scorer`` is the back end: it scores (intended, typed) string pairs with the model.
    ``hidden`` words are treated as absent from the lexicon but known to the web, at their
    own frequency (calibration uses it to simulate the names and slang real queries hold).
    """

    def __init__(
        self,
        lexicon: Lexicon,
        settings: DecodingSettings,
        scorer: ChannelScorer,
        catalog: Lexicon | None = None,
    ) -> None:
        self.settings = settings
        self.scorer = scorer
        if settings.constraint == "catalog":
            if catalog is None:
                raise ValueError("decoding.constraint=catalog needs a catalog (--catalog FILE)")
            lexicon = Lexicon.mixed(
                [(lexicon, 1.0 - settings.catalog_weight), (catalog, settings.catalog_weight)]
            )
        # A name the lexicon lacks is kept, unless it is a typo of one the catalog holds.
        self.catalog_words = frozenset(catalog.unigrams) if catalog is not None else frozenset()
        self.lexicon = lexicon
        self.hidden: frozenset[str] = frozenset()
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()

    def with_scorer(self, scorer: ChannelScorer) -> NoisyChannelDecoder:
        """The same lexicon and settings over another back end (no second index build)."""
        twin = copy.copy(self)
        twin.scorer = scorer
        twin._cache = OrderedDict()
        return twin

    # -- public
    def correct(self, texts: Sequence[str]) -> list[Correction]:
        lattices = self.lattices(texts)
        return [self.decide(lattice, self.search(lattice, self.settings)) for lattice in lattices]

    # -- building lattices (weight-independent, cached channel scores)
    def lattices(self, texts: Sequence[str]) -> list[Lattice]:
        drafts = [self._draft(text) for text in texts]
        wanted = {
            (" ".join(words), typed)
            for _, _, edges in drafts
            for edge_list in edges
            for (_, _, words, typed, _) in edge_list
        }
        self._score_missing(wanted)
        lattices = []
        for text, words, edges in drafts:
            scored = [
                [
                    Edge(
                        start,
                        end,
                        cand,
                        self._cache[(" ".join(cand), typed)],
                        changed,
                        all(self._known(part) for part in typed.split(" ")),
                    )
                    for start, end, cand, typed, changed in edge_list
                ]
                for edge_list in edges
            ]
            lattices.append(Lattice(text, words, scored))
        return lattices

    def _known(self, word: str) -> bool:
        return word in self.lexicon.unigrams and word not in self.hidden

    def _name_runs(self, words: list[Word]) -> set[int]:
        """Positions of web words next to another web word the lexicon lacks.

        Names come in runs: in a general lexicon both halves of `yo gotti`, `dua lipa` or
        `roddy ricch` are missing, and each alone looks like a misspelling of a nearby word
        (`you gotta`, `due lipa`, `roddy rich`). A typo seldom sits beside a web word the
        lexicon lacks; when two typos meet, one is mostly a string the web has never seen
        (`bohemain rapsody`), and both are still corrected.
        """
        spoken = [p for p, word in enumerate(words) if any(c.isalnum() for c in word.text)]
        web = {
            p
            for p in spoken
            if words[p].key is not None
            and len(words[p].key) >= self.settings.min_word_length
            and not self._known(words[p].key)
            and (words[p].key in self.hidden or words[p].key in self.lexicon.web)
        }
        runs = set()
        for index, position in enumerate(spoken):
            if position in web:
                neighbours = spoken[max(index - 1, 0) : index] + spoken[index + 1 : index + 2]
                if any(n in web for n in neighbours):
                    runs.add(position)
        return runs

    def _draft(self, text: str):
        settings = self.settings
        words = split_words(text)
        edges: list[list[tuple]] = [[] for _ in words]
        for position, word in enumerate(words):
            key = word.key
            if key is None:
                continue
            edges[position].append((position, position + 1, (key,), key, False))
            # Accents are typed on purpose (a dead key, a long press), and the channel model
            # learned English typos: `crème brûlée` stays, not `crime brill`.
            if len(key) < settings.min_word_length or not key.isascii():
                continue
            limit = (
                settings.short_word_max_edit_distance
                if len(key) <= 4
                else settings.max_edit_distance
            )
            proposed = {key}
            for candidate, _ in self.lexicon.nearest(key, limit, settings.max_candidates + 1):
                if candidate not in proposed and candidate not in self.hidden:
                    proposed.add(candidate)
                    edges[position].append((position, position + 1, (candidate,), key, True))
            if len(key) >= PHONETIC_MIN_LENGTH and not self._known(key):
                reach = min(
                    int(len(key) * PHONETIC_MAX_SHARE),
                    settings.max_edit_distance + PHONETIC_EXTRA_EDITS,
                )
                added = 0
                for candidate in self.lexicon.sounds_like(key):
                    if added == settings.phonetic_candidates:
                        break  # a short key can hold hundreds of words: stop at enough
                    if (
                        candidate not in proposed
                        and candidate not in self.hidden
                        and osa_distance(key, candidate, reach) <= reach
                    ):
                        added += 1
                        edges[position].append((position, position + 1, (candidate,), key, True))
            for cut in range(1, len(key) if not self._known(key) else 0):
                first, second = key[:cut], key[cut:]
                if (
                    min(len(first), len(second)) >= settings.min_word_length - 1
                    and self._known(first)
                    and self._known(second)
                    and (first, second) in self.lexicon.bigrams
                ):
                    edges[position].append((position, position + 1, (first, second), key, True))
            following = words[position + 1] if position + 1 < len(words) else None
            if (
                following is not None
                and following.key is not None
                and len(following.key) >= settings.min_word_length
                and following.start == word.start + len(word.text) + 1
                and text[word.start + len(word.text)] == " "
            ):
                joined = key + following.key
                if self._known(joined):  # a space typed inside a word: "be cause"
                    typed = f"{key} {following.key}"
                    edges[position].append((position, position + 2, (joined,), typed, True))
        # A name is kept before any candidate is scored: only catalog entries may replace it.
        kept = self._name_runs(words) if settings.keep_name_runs else set()
        if settings.keep_capitalized_unknown:
            kept |= {p for p in _names(words) if not self._known(words[p].key)}
        for position in kept:
            edges[position] = [
                edge
                for edge in edges[position]
                if not edge[4] or set(edge[2]) <= self.catalog_words
            ]
        return text, words, edges

    def _score_missing(self, pairs: set[tuple[str, str]]) -> None:
        missing = sorted(pair for pair in pairs if pair not in self._cache)
        if missing:
            scores = self.scorer([i for i, _ in missing], [t for _, t in missing])
            for pair, score in zip(missing, np.asarray(scores, dtype=np.float64), strict=True):
                self._cache[pair] = float(score)
        for pair in pairs:
            self._cache.move_to_end(pair)
        while len(self._cache) > CHANNEL_CACHE_SIZE:
            self._cache.popitem(last=False)

    # -- searching (depends on the weights)
    def _lm(self, previous: str | None, words: tuple[str, ...], settings: DecodingSettings):
        """LM log-prob of ``words`` after ``previous`` and the state it leaves."""
        total = 0.0
        for word in words:
            unknown = word in self.hidden or word not in self.lexicon.unigrams
            if unknown:
                total += self._unknown_logprob(word, settings)
                previous = None
                continue
            total += self.lexicon.pair_logprob(
                None if previous in self.hidden else previous,
                word,
                settings.unknown_word_logprob,
                settings.bigram_share,
            )
            previous = word
        return total, previous

    def _unknown_logprob(self, word: str, settings: DecodingSettings) -> float:
        """log P of a word the lexicon does not count: the price of an unknown word and of
        its letters, or, for a web word, its web frequency times the share of it that is
        meant as written, discounted by ``web_word_offset``.

        A web list counts misspellings too: ``comming`` is there, a thousandth as common
        as ``coming``. Such strings are rare, and rare web words are mostly them: below one
        in a million fall 94% of the web words among real misspellings, against 59% of
        those in correct song titles and 8% of those in everyday messages. So the share
        meant as written is a logistic function of log frequency that falls below
        ``web_word_midpoint``: ``aint`` and ``mom`` are kept, ``comming`` is corrected.
        """
        web = self.lexicon.web.get(word)
        if word in self.hidden:
            web = self._hidden_web_logprob(word)
        if web is None:
            return settings.unknown_word_logprob + settings.spelling_weight * (
                self.lexicon.spelling.logprob(word)
            )
        real = log_sigmoid(settings.web_word_steepness * (web - settings.web_word_midpoint))
        return web + real + settings.web_word_offset

    def _hidden_web_logprob(self, word: str) -> float | None:
        """A hidden word is priced as a web word of its own frequency (see ``hidden``)."""
        count = self.lexicon.unigrams.get(word)
        return math.log(count) - self.lexicon.log_total if count else None

    def _edge_score(self, edge: Edge, previous: str | None, settings: DecodingSettings):
        lm, state = self._lm(previous, edge.words, settings)
        score = edge.channel + settings.lm_weight * lm
        if edge.changed:
            score -= settings.change_penalty
            if edge.typed_known:
                score -= settings.known_word_penalty
        return score, state

    def search(self, lattice: Lattice, settings: DecodingSettings) -> SearchResult:
        """The best path (Viterbi over the last word, pruned to ``beam_width`` states)."""
        n = len(lattice.words)
        # position -> {state: (score, previous position, previous state, edge)}
        beams: list[dict] = [{} for _ in range(n + 1)]
        beams[0][None] = (0.0, -1, None, None)
        for position in range(n):
            beam = beams[position]
            if not beam:
                continue
            if len(beam) > settings.beam_width:
                kept = sorted(beam.items(), key=lambda item: -item[1][0])[: settings.beam_width]
                beam = dict(kept)
            edges = lattice.edges_from[position]
            if not edges:  # a fixed token: copied, and the language model starts afresh
                best_state = max(beam, key=lambda s: beam[s][0])
                score = beam[best_state][0]
                edge = Edge(position, position + 1, (), 0.0, False)
                _relax(beams[position + 1], None, score, position, best_state, edge)
                continue
            for state, (score, *_) in beam.items():
                for edge in edges:
                    gained, new_state = self._edge_score(edge, state, settings)
                    _relax(beams[edge.end], new_state, score + gained, position, state, edge)
        path: list[Edge] = []
        states: list[str | None] = []
        position, state = n, max(beams[n], key=lambda s: beams[n][s][0])
        while position > 0:
            _, previous_position, previous_state, edge = beams[position][state]
            path.append(edge)
            states.append(previous_state)
            position, state = previous_position, previous_state
        path.reverse()
        states.reverse()
        return SearchResult(path, self._confidences(lattice, path, states, settings))

    def _confidences(self, lattice, path, states, settings) -> list[float]:
        """Each change's probability against leaving its words as typed, neighbours fixed.

        Only the change and the copy compete: when several candidates share the mass
        ("thinkn": think, thinks, thinking) the query still needs changing, and the best
        of them is the change to make; what the threshold guards against is changing a
        query that was right.
        """
        confidences = []
        for index, edge in enumerate(path):
            if not edge.changed:
                confidences.append(1.0)
                continue
            copies = [
                e
                for position in range(edge.start, edge.end)
                for e in lattice.edges_from[position]
                if not e.changed and e.words
            ]
            following = path[index + 1] if index + 1 < len(path) else None
            change, copy = (
                self._local_score(option, states[index], following, settings)
                for option in ([edge], copies)
            )
            confidences.append(sigmoid(change - copy))
        return confidences

    def _local_score(self, edges, previous, following, settings) -> float:
        """Score of ``edges`` after ``previous``, with the next edge's language-model term."""
        state, total = previous, 0.0
        for edge in edges:
            gained, state = self._edge_score(edge, state, settings)
            total += gained
        if following is not None and following.words:
            total += self._edge_score(following, state, settings)[0]
        return total

    def decide(self, lattice: Lattice, result: SearchResult) -> Correction:
        """Apply confident changes; offer the less confident ones as a suggestion."""
        settings = self.settings
        applied = [
            (e, c) for e, c in zip(result.path, result.confidences, strict=True) if e.changed
        ]
        confident = [(e, c) for e, c in applied if c >= apply_threshold(lattice, settings)]
        offered = [(e, c) for e, c in applied if c >= settings.suggest_threshold]
        correction = self._rewrite(lattice, [e for e, _ in confident])
        if confident:
            confidence = min(c for _, c in confident)
        else:
            confidence = 1.0 - max((c for _, c in applied), default=0.0)
        suggestion = None
        if len(offered) > len(confident):
            suggestion = self._rewrite(lattice, [e for e, _ in offered])
        return Correction(lattice.query, correction, confidence, suggestion)

    @staticmethod
    def _rewrite(lattice: Lattice, edges: list[Edge]) -> str:
        text = lattice.query
        for edge in sorted(edges, key=lambda e: -e.start):
            first, last = lattice.words[edge.start], lattice.words[edge.end - 1]
            replacement = transfer_case(first.text, " ".join(edge.words))
            text = text[: first.start] + replacement + text[last.start + len(last.text) :]
        return text


def is_isolated_word(lattice: Lattice) -> bool:
    """A query of one correctable word: nothing around it to tell a typo from a name."""
    return sum(word.key is not None for word in lattice.words) == 1


def apply_threshold(lattice: Lattice, settings: DecodingSettings) -> float:
    """The confidence a change needs in this query (isolated words are calibrated apart)."""
    if is_isolated_word(lattice):
        return settings.isolated_word_apply_threshold
    return settings.apply_threshold


def _relax(beam: dict, state, score: float, position: int, previous_state, edge: Edge) -> None:
    current = beam.get(state)
    if current is None or score > current[0]:
        beam[state] = (score, position, previous_state, edge)


def log_sigmoid(value: float) -> float:
    return -math.log1p(math.exp(-value)) if value >= 0 else value - math.log1p(math.exp(value))


def sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


def generated_correction(
    query: str, output: str, output_score: float, copy_score: float, settings: DecodingSettings
) -> Correction:
    """The decision of ``generate`` mode: the model's output against leaving the query alone.

    The confidence is sigmoid(log P(output | query) - log P(query | query)) under the
    model itself, so a model that cannot copy what it does not know still says so.
    """
    if not output.strip() or output == query:
        return Correction(query, query, 1.0, None)
    confidence = sigmoid(output_score - copy_score)
    if confidence >= settings.apply_threshold:
        return Correction(query, output, confidence, None)
    suggestion = output if confidence >= settings.suggest_threshold else None
    return Correction(query, query, 1.0 - confidence, suggestion)


# ------------------------------------------------------------------- generate mode
class GenerativeDecoder:
    """``generate`` mode over a runner that has ``correct`` (generation) and ``score``."""

    def __init__(self, runner, settings: DecodingSettings) -> None:
        self.runner = runner
        self.settings = settings

    def with_scorer(self, runner) -> GenerativeDecoder:
        return GenerativeDecoder(runner, self.settings)

    def correct(self, texts: Sequence[str]) -> list[Correction]:
        texts = list(texts)
        outputs = self.runner.correct(texts)
        todo = [i for i, (t, o) in enumerate(zip(texts, outputs, strict=True)) if o != t and o]
        results = [Correction(t, t, 1.0, None) for t in texts]
        if todo:
            sources = [texts[i] for i in todo]
            output_scores = self.runner.score(sources, [outputs[i] for i in todo])
            copy_scores = self.runner.score(sources, sources)
            for k, i in enumerate(todo):
                results[i] = generated_correction(
                    texts[i],
                    outputs[i],
                    float(output_scores[k]),
                    float(copy_scores[k]),
                    self.settings,
                )
        return results


# ------------------------------------------------------------------------ loading
CATALOG_FILE = "catalog.tsv"


def load_decoder(
    directory: str | Path,
    runner,
    settings: DecodingSettings | None = None,
    catalog: Lexicon | None = None,
    warn: Callable[[str], None] | None = None,
) -> NoisyChannelDecoder | GenerativeDecoder:
    """The decoder a model or export directory asks for, around a runner of its model.

    ``runner`` has ``score(sources, targets)`` and ``correct(texts)`` (generation). A
    directory written before lexicons existed has no ``decoding.json``: it decodes by
    plain generation, and ``warn`` is told so in one line. ``catalog`` (or the
    directory's own ``catalog.tsv``) joins the lexicon.
    """
    directory = Path(directory)
    saved = load_settings(directory)
    if saved is None:
        saved = DecodingSettings(mode="generate", constraint="none")
        if warn is not None:
            warn(
                f"{directory} has no {DECODING_FILE} or {LEXICON_FILE} (written before "
                "lexicon decoding): correcting by plain generation; retrain for lexicon "
                "decoding and calibrated confidence"
            )
    settings = settings or saved
    if settings.mode == "generate":
        return GenerativeDecoder(runner, settings)
    lexicon_path = directory / LEXICON_FILE
    if not lexicon_path.is_file():
        raise FileNotFoundError(
            f"{lexicon_path}: missing; a channel model decodes with its lexicon (copy it from "
            "the training run's model directory)"
        )
    if catalog is None and (directory / CATALOG_FILE).is_file():
        catalog = Lexicon.load(directory / CATALOG_FILE)
    if catalog is not None and settings.constraint == "lexicon":
        settings = settings.updated(constraint="catalog")
    return NoisyChannelDecoder(Lexicon.load(lexicon_path), settings, runner.score, catalog)
