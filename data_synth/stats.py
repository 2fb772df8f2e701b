"""How noisy a set of (noisy, clean) pairs is, measured the same way for generated and real data.

Real misspelling lists carry no operation labels, so generated noise cannot be checked
against them by its own op names. Instead both are aligned character by character
(optimal string alignment: insertions, deletions, substitutions and adjacent
transpositions) and every edit is classified by what it looks like: a substitution by
a neighbouring key or by another vowel, a doubled or undoubled letter, a space
inserted or removed, a case or diacritic change, dropped punctuation. The mix of those
classes and the edit-distance distribution are what ``experiments/noise_realism.py``
compares, and what the default noise profile is tuned against.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from rapidfuzz.distance import OSA

from data_synth.keyboards import Keyboard, get_keyboard

EDIT_CLASSES: tuple[str, ...] = (
    "substitution_adjacent",  # a neighbouring key on the layout
    "substitution_vowel",  # one vowel for another (spelling by ear)
    "substitution_other",
    "insertion_doubled",  # a letter typed twice
    "insertion_other",
    "deletion_undoubled",  # one letter of a double left out
    "deletion_other",
    "transposition",  # two neighbouring characters swapped
    "space_inserted",  # a word split
    "space_deleted",  # words merged
    "case",  # same letter, other case
    "diacritic",  # same letter without (or with other) diacritics
    "punctuation",  # a punctuation mark left out
)
_VOWELS = frozenset("aeiouy")
_DISTANCE_BUCKETS = ("0", "1", "2", "3", "4+")


def _base_letter(char: str) -> str:
    decomposed = unicodedata.normalize("NFD", char.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _alignment_table(source: str, target: str) -> list[list[int]]:
    """The whole optimal-string-alignment table of ``source`` against ``target``.

    ``osa_distance`` needs only its last cell and asks rapidfuzz; ``edit_classes`` walks
    the table back to name each edit, which no library does, so it is computed here.
    """
    rows, columns = len(source) + 1, len(target) + 1
    table = [[0] * columns for _ in range(rows)]
    for i in range(rows):
        table[i][0] = i
    for j in range(columns):
        table[0][j] = j
    for i in range(1, rows):
        for j in range(1, columns):
            cost = source[i - 1] != target[j - 1]
            best = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
            if (
                i > 1
                and j > 1
                and source[i - 1] == target[j - 2]
                and source[i - 2] == target[j - 1]
                and source[i - 1] != target[j - 1]
            ):
                best = min(best, table[i - 2][j - 2] + 1)
            table[i][j] = best
    return table


def osa_distance(first: str, second: str) -> int:
    """Optimal-string-alignment distance: a swap of two neighbours counts as one edit, as
    typists make it (Levenshtein would count two). Computed by rapidfuzz, in C."""
    return OSA.distance(first, second)


def edit_classes(noisy: str, clean: str, keyboard: Keyboard | None = None) -> list[str]:
    """The classified edits that turn ``clean`` into ``noisy``, left to right."""
    keyboard = keyboard or get_keyboard("qwerty_us")
    table = _alignment_table(clean, noisy)
    i, j = len(clean), len(noisy)
    edits: list[str] = []
    while i > 0 or j > 0:
        here = table[i][j]
        if i > 0 and j > 0 and clean[i - 1] == noisy[j - 1] and here == table[i - 1][j - 1]:
            i, j = i - 1, j - 1
        elif i > 0 and j > 0 and here == table[i - 1][j - 1] + 1:
            edits.append(_substitution_class(clean[i - 1], noisy[j - 1], keyboard))
            i, j = i - 1, j - 1
        elif (
            i > 1
            and j > 1
            and clean[i - 1] == noisy[j - 2]
            and clean[i - 2] == noisy[j - 1]
            and here == table[i - 2][j - 2] + 1
        ):
            edits.append("transposition")
            i, j = i - 2, j - 2
        elif i > 0 and here == table[i - 1][j] + 1:
            edits.append(_deletion_class(clean, i - 1))
            i -= 1
        else:
            edits.append(_insertion_class(noisy, j - 1))
            j -= 1
    edits.reverse()
    return edits


def _substitution_class(intended: str, typed: str, keyboard: Keyboard) -> str:
    if intended.lower() == typed.lower():
        return "case"
    if _base_letter(intended) == _base_letter(typed):
        return "diacritic"
    if keyboard.adjacent(intended, typed):
        return "substitution_adjacent"
    if intended.lower() in _VOWELS and typed.lower() in _VOWELS:
        return "substitution_vowel"
    return "substitution_other"


def _deletion_class(clean: str, index: int) -> str:
    char = clean[index]
    if char == " ":
        return "space_deleted"
    if not char.isalnum():
        return "punctuation"
    neighbours = clean[index - 1 : index] + clean[index + 1 : index + 2]
    return "deletion_undoubled" if char.lower() in neighbours.lower() else "deletion_other"


def _insertion_class(noisy: str, index: int) -> str:
    char = noisy[index]
    if char == " ":
        return "space_inserted"
    neighbours = noisy[index - 1 : index] + noisy[index + 1 : index + 2]
    return "insertion_doubled" if char.lower() in neighbours.lower() else "insertion_other"


@dataclass
class PairStats:
    """Edit-distance distribution and edit-class mix of a set of (noisy, clean) pairs."""

    pairs: int = 0
    changed: int = 0
    distances: Counter = field(default_factory=Counter)
    edits: Counter = field(default_factory=Counter)

    @property
    def changed_share(self) -> float:
        """Share of pairs whose noisy side differs from the clean one."""
        return self.changed / self.pairs if self.pairs else 0.0

    @property
    def mean_edit_distance(self) -> float:
        """Mean distance over the changed pairs (clean pairs would only dilute it)."""
        total = sum(distance * count for distance, count in self.distances.items())
        return total / self.changed if self.changed else 0.0

    def distance_shares(self) -> dict[str, float]:
        """Share of changed pairs at distance 1, 2, 3 and 4 or more."""
        buckets: Counter = Counter()
        for distance, count in self.distances.items():
            if distance:
                buckets[_DISTANCE_BUCKETS[min(distance, 4)]] += count
        return {bucket: buckets[bucket] / max(self.changed, 1) for bucket in _DISTANCE_BUCKETS[1:]}

    def edit_shares(self) -> dict[str, float]:
        """Share of all edits in each class of ``EDIT_CLASSES``."""
        total = sum(self.edits.values()) or 1
        return {name: self.edits[name] / total for name in EDIT_CLASSES}


def pair_stats(pairs: Iterable[tuple[str, str]], layout: str = "qwerty_us") -> PairStats:
    """Measure (noisy, clean) pairs; works alike for real misspellings and generated ones."""
    keyboard = get_keyboard(layout)
    stats = PairStats()
    for noisy, clean in pairs:
        stats.pairs += 1
        if noisy == clean:
            stats.distances[0] += 1
            continue
        edits = edit_classes(noisy, clean, keyboard)
        stats.changed += 1
        stats.distances[len(edits)] += 1
        stats.edits.update(edits)
    return stats


def op_histogram(ops_lists: Iterable[list[str]]) -> Counter:
    """How often each named noise operation was applied (generated data only)."""
    return Counter(op for ops in ops_lists for op in ops)


def comparison_table(columns: dict[str, PairStats]) -> str:
    """A markdown table of several PairStats side by side (one column per data set)."""
    names = list(columns)
    lines = [
        "| measure | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        "| pairs | " + " | ".join(str(columns[n].pairs) for n in names) + " |",
        "| changed | " + " | ".join(f"{columns[n].changed_share:.1%}" for n in names) + " |",
        "| mean edit distance (changed) | "
        + " | ".join(f"{columns[n].mean_edit_distance:.2f}" for n in names)
        + " |",
    ]
    for bucket in _DISTANCE_BUCKETS[1:]:
        shares = [columns[n].distance_shares()[bucket] for n in names]
        lines.append(f"| distance {bucket} | " + " | ".join(f"{s:.1%}" for s in shares) + " |")
    for name in EDIT_CLASSES:
        shares = [columns[n].edit_shares()[name] for n in names]
        lines.append(f"| edits: {name} | " + " | ".join(f"{s:.1%}" for s in shares) + " |")
    return "\n".join(lines)
