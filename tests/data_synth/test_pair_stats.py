"""data_synth.stats classifies edits the same way for real and generated pairs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_synth.noise.model import NoiseModel
from data_synth.stats import comparison_table, edit_classes, osa_distance, pair_stats


@pytest.mark.parametrize(
    ("noisy", "clean", "expected"),
    [
        ("beatels", "beatles", ["transposition"]),
        ("bwatles", "beatles", ["substitution_adjacent"]),  # w touches e
        ("seperate", "separate", ["substitution_vowel"]),
        ("acomodate", "accommodate", ["deletion_undoubled", "deletion_undoubled"]),
        ("untill", "until", ["insertion_doubled"]),
        ("beat les", "beatles", ["space_inserted"]),
        ("thebeatles", "the beatles", ["space_deleted"]),
        ("dont", "don't", ["punctuation"]),
        ("Beyonce", "Beyoncé", ["diacritic"]),
        ("nevada", "Nevada", ["case"]),
        ("halo", "halo", []),
    ],
)
def test_each_edit_is_classified_by_what_it_looks_like(noisy, clean, expected):
    assert edit_classes(noisy, clean) == expected
    assert osa_distance(noisy, clean) == len(expected)


@given(st.text(alphabet="abAé -", max_size=10), st.text(alphabet="abAé -", max_size=10))
def test_osa_distance_counts_the_edits_the_alignment_table_classifies(noisy, clean):
    # rapidfuzz's distance and the hand-written table edit_classes walks must agree, or a
    # pair's distance bucket and its edit mix would describe two different alignments.
    assert osa_distance(noisy, clean) == len(edit_classes(noisy, clean))


def test_pair_stats_counts_distances_and_shares():
    stats = pair_stats([("beatels", "beatles"), ("acomodate", "accommodate"), ("a", "a")])
    assert (stats.pairs, stats.changed) == (3, 2)
    assert stats.mean_edit_distance == 1.5
    assert stats.distance_shares() == {"1": 0.5, "2": 0.5, "3": 0.0, "4+": 0.0}
    assert stats.edit_shares()["deletion_undoubled"] == pytest.approx(2 / 3)
    table = comparison_table({"real": stats})
    assert "| distance 2 | 50.0% |" in table


def test_generated_noise_measures_like_the_ops_it_reports():
    model = NoiseModel.from_config(
        {
            **NoiseModel.from_profile("keyboard").config,
            "typo_weights": {"transpose": 1.0},
            "error_count_weights": [1.0],
            "clean_share": 0.0,
        }
    )
    pairs = [(c.noisy, c.clean) for c in model.corrupt_batch(["interacting", "beatles"] * 50)]
    assert pair_stats(pairs).edits.keys() == {"transposition"}
