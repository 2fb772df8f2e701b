"""Corrector metrics against cases worked out by hand (the arithmetic is in each test)."""

import math
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spellfix.metrics import METRIC_KEYS, compute_metrics, levenshtein_distance, word_edits


@pytest.mark.parametrize(
    ("source", "target", "distance"),
    [
        ("kitten", "sitting", 3),  # k->s, e->i, +g
        ("flaw", "lawn", 2),  # -f, +n
        ("", "abc", 3),
        ("abc", "", 3),
        ("speling", "spelling", 1),
        ("same", "same", 0),
        (["quen", "bohemian", "rapsody"], ["queen", "bohemian", "rhapsody"], 2),
        (["the", "the", "beatles"], ["the", "beatles"], 1),
    ],
)
def test_levenshtein_distance_known_pairs(source, target, distance):
    assert levenshtein_distance(source, target) == distance


def _textbook_levenshtein(source: Sequence[str], target: Sequence[str]) -> int:
    """The full-table dynamic programme, independent of the library under test."""
    table = [
        [i + j if i * j == 0 else 0 for j in range(len(target) + 1)] for i in range(len(source) + 1)
    ]
    for i in range(1, len(source) + 1):
        for j in range(1, len(target) + 1):
            table[i][j] = min(
                table[i - 1][j] + 1,
                table[i][j - 1] + 1,
                table[i - 1][j - 1] + (source[i - 1] != target[j - 1]),
            )
    return table[-1][-1]


@given(st.text(alphabet="abc ", max_size=12), st.text(alphabet="abc ", max_size=12))
def test_levenshtein_distance_matches_the_textbook_table(source, target):
    assert levenshtein_distance(source, target) == _textbook_levenshtein(source, target)
    source_words, target_words = source.split(), target.split()  # WER: words as items
    assert levenshtein_distance(source_words, target_words) == _textbook_levenshtein(
        source_words, target_words
    )


def test_word_edits_name_the_changed_source_positions():
    assert word_edits(["quen", "bohemian", "rapsody"], ["queen", "bohemian", "rhapsody"]) == {
        (0, 1, ("queen",)): 1,
        (2, 3, ("rhapsody",)): 1,
    }
    assert word_edits(["the", "the", "beatles"], ["the", "beatles"]) == {(0, 1, ()): 1}
    assert word_edits(["abba"], ["abba", "gold"]) == {(1, 1, ("gold",)): 1}
    assert word_edits(["abba"], ["abba"]) == {}


def test_compute_metrics_hand_computed_mix():
    sources = ["quen bohemian rapsody", "news podcasts", "speling"]
    predictions = ["queen bohemian rapsody", "new podcasts", "spelling"]
    references = ["queen bohemian rhapsody", "news podcasts", "Spelling"]
    metrics = compute_metrics(sources, predictions, references)

    assert list(metrics) == list(METRIC_KEYS)
    assert metrics["n"] == 3
    # Only "spelling" == "Spelling" ignoring case; nothing matches with case.
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["exact_match_cased"] == 0.0
    # Char distances 1 (missing h) + 1 (missing s) + 0 over 23 + 13 + 8 reference chars.
    assert metrics["cer"] == pytest.approx(2 / 44)
    # Word distances 1 + 1 + 0 over 3 + 2 + 1 reference words.
    assert metrics["wer"] == pytest.approx(2 / 6)
    # Gold edits: quen->queen, rapsody->rhapsody, speling->spelling = 3.
    # System edits: quen->queen (gold), news->new (breaks a correct word),
    # speling->spelling (gold) = 3, of which 2 are gold.
    assert metrics["correction_precision"] == pytest.approx(2 / 3)
    assert metrics["correction_recall"] == pytest.approx(2 / 3)
    # One clean input ("news podcasts"), and the system changed it.
    assert metrics["overcorrection_rate"] == 1.0


def test_identity_system_fixes_nothing_and_breaks_nothing():
    sources = ["speling errror", "abba"]
    references = ["spelling error", "abba"]
    metrics = compute_metrics(sources, sources, references)
    # No changes: recall 0/2 gold edits, precision undefined (0 system edits).
    assert metrics["correction_recall"] == 0.0
    assert math.isnan(metrics["correction_precision"])
    assert metrics["overcorrection_rate"] == 0.0  # 0 of 1 clean input changed
    assert metrics["exact_match"] == 0.5
    # Char distances 1 + 1 + 0 over 14 + 4 reference chars.
    assert metrics["cer"] == pytest.approx(2 / 18)


def test_perfect_system_scores_one_even_with_split_and_merged_words():
    sources = ["newyork state", "the the beatles", "qeen"]
    references = ["new york state", "the beatles", "queen"]
    metrics = compute_metrics(sources, references, references)
    assert metrics["exact_match"] == 1.0
    assert metrics["cer"] == 0.0
    assert metrics["wer"] == 0.0
    assert metrics["correction_precision"] == 1.0
    assert metrics["correction_recall"] == 1.0
    assert math.isnan(metrics["overcorrection_rate"])  # no clean inputs at all


def test_case_and_whitespace_do_not_count_as_errors_except_in_cased_match():
    metrics = compute_metrics(["presbyterian"], ["  presbyterian "], ["Presbyterian"])
    # Casefolded, the source already equals the reference: a clean input left alone.
    assert metrics["exact_match"] == 1.0
    assert metrics["exact_match_cased"] == 0.0
    assert metrics["cer"] == 0.0
    assert metrics["overcorrection_rate"] == 0.0


def test_wrong_fix_counts_against_precision_and_recall():
    # "teh" should become "the"; the system writes "tea": one system edit, not gold.
    metrics = compute_metrics(["teh beatles"], ["tea beatles"], ["the beatles"])
    assert metrics["correction_precision"] == 0.0
    assert metrics["correction_recall"] == 0.0
    assert metrics["cer"] == pytest.approx(2 / 11)  # "tea" vs "the": 2 substitutions


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="parallel"):
        compute_metrics(["a", "b"], ["a"], ["a", "b"])
