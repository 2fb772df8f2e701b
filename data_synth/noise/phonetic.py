"""The ``phonetic`` typo: sound-alike spellings from a confusion table (``ph`` -> ``f``).

People spell by ear, so one typo replaces a run of letters by another spelling of the same
sound, as listed in a confusion table (``phonetic.tsv``, or the profile's own). Finding
where a pattern matches is what a regex alternation does one query at a time; here the
table is compiled once into a trie over its letters and per-place weights, and the trie is
walked from every character of a batch at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from typing import NamedTuple

import numpy as np

from data_synth.noise.batch import Chars, length_groups
from data_synth.noise.chars import ALPHA, UNICODE_SIZE, UPPER, char_tables
from data_synth.noise.profile import Confusion


class Matches(NamedTuple):
    """Per character: the confusions that would start there (see ``ConfusionTable.matches``)."""

    weight: np.ndarray  # integer weight of drawing this position (0: no match kept here)
    slot: np.ndarray
    length: np.ndarray


@dataclass(frozen=True)
class ConfusionTable:
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

    def matches(self, chars: Chars) -> Matches:
        """Per character: the weight of drawing the confusions that start there (0 where none
        does), their slot and the number of letters they replace."""
        letter = self.letter[chars.codes].astype(np.intp)
        left = chars.lens[chars.row] - chars.column  # characters from here to the row's end
        # 1. The longest pattern starting at every character: walk the trie from all of them
        #    at once, one letter deeper per step (state 0 is a dead end).
        step = self.step.ravel()  # step[state * letters + letter]: the next state
        letters = self.step.shape[1]
        state = step[letters + letter]  # one letter down from the root (state 1)
        longest, pattern = np.zeros((2, len(letter)), dtype=np.int64)
        following = np.zeros_like(letter)
        for depth in range(1, self.depth + 1):
            completed = self.completes[state]
            found = completed >= 0
            longest = np.maximum(longest, depth * found)  # a deeper match is a longer one
            pattern += found * (completed - pattern)
            if depth == self.depth or not state.any():
                break
            following[:-depth] = letter[depth:]  # the letter `depth` places on, in the same row
            state = step[state * letters + following * (left > depth)]
        # 2. Where each match stands in its word picks the rules that fit it (its slot).
        alpha = chars.has(ALPHA)
        word_start = chars.first | ~np.concatenate(([False], alpha[:-1]))
        after = np.minimum(np.arange(len(letter)) + longest, len(letter) - 1)
        word_end = (longest >= left) | ~alpha[after]
        slot = pattern * 4 + word_start * 2 + word_end
        kept = _leftmost_matches(longest, chars)
        return Matches(self.slot_weight_int[slot] * kept, slot, longest)

    def typed(
        self, chars: Chars, matches: Matches, offset: int, at: np.ndarray, uniform: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For matches drawn at ``at``: a rule of their slot by weight, its replacement in
        the case of the letters it replaces (`Phone` -> `Fone`, `PHONE` -> `FONE`), the
        number of letters replaced and typed. ``matches`` begin at character ``offset``."""
        slot, length = matches.slot[at - offset], matches.length[at - offset]
        cumulative, total = self.rule_cumulative[slot], self.slot_weight[slot]
        target = np.minimum(uniform[:, 1] * total, np.nextafter(total, 0))
        rule = np.minimum((cumulative <= target[:, None]).sum(axis=1), cumulative.shape[1] - 1)
        offsets = np.arange(self.depth)
        span = np.minimum(at[:, None] + offsets, len(chars.codes) - 1)
        upper = chars.has(UPPER)[span] | (offsets >= length[:, None])
        capitals = np.where(upper.all(axis=1) & (length > 1), 1, 2)
        variant = np.where(chars.has(UPPER)[at], capitals, 0)
        typed = self.replacement[slot, rule, variant]
        return typed, length, self.replacement_length[slot, rule, variant]


@lru_cache(maxsize=16)
def compile_confusions(
    confusions: tuple[Confusion, ...], first_letter_factor: float
) -> ConfusionTable:
    """Cached: the dataset builder makes a model per chunk of queries, all with one table."""
    tables = char_tables()
    rules_of: dict[str, list[Confusion]] = {}
    for rule in confusions:
        rules_of.setdefault(rule.letters, []).append(rule)
    patterns = list(rules_of)
    alphabet = sorted({char for letters in patterns for char in letters})
    column = {char: index for index, char in enumerate(alphabet, start=1)}

    # A letter of the text is looked up by its lower case, and only letters match (a word
    # is a run of letters, so no match crosses a space or punctuation).
    letter = np.zeros(UNICODE_SIZE, dtype=np.uint16 if len(alphabet) > 254 else np.uint8)
    for char, index in column.items():
        if len(char) == 1:
            letter[ord(char)] = index
    sources = tables.lowered[np.isin(tables.lower[tables.lowered], [ord(c) for c in alphabet])]
    letter[sources] = [column[chr(tables.lower[code])] for code in sources.tolist()]
    letter[(tables.flags & ALPHA) == 0] = 0

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
    return ConfusionTable(
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


def _leftmost_matches(longest: np.ndarray, chars: Chars) -> np.ndarray:
    """The matches a left-to-right scan of each row keeps, as a regex finds them: a kept
    match (``longest`` letters from its start, 0 where none starts) hides the starts it covers.

    The scan is sequential along a row, so it runs one column at a time over all rows at
    once, on a matrix (column by column in memory) of rows grouped by similar length.
    """
    kept = np.zeros(len(longest), dtype=bool)
    groups = length_groups(chars.lens)
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
