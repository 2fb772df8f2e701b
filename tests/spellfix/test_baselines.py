"""The baseline correctors and the system factory the evaluation and CLI rely on."""

from pathlib import Path

import pytest

from spellfix.baselines import IdentitySpeller, Speller, SymSpellSpeller, load_system


@pytest.fixture(scope="module")
def symspell() -> SymSpellSpeller:
    return SymSpellSpeller()


def test_identity_returns_its_input_unchanged():
    queries = ["speling", "  two  spaces ", ""]
    assert IdentitySpeller().correct(queries) == queries


def test_symspell_fixes_known_misspellings(symspell):
    assert symspell.correct(["speling", "quen bohemian rapsody", "recieve"]) == [
        "spelling",
        "queen bohemian rhapsody",
        "receive",
    ]


def test_symspell_repairs_word_boundaries(symspell):
    assert symspell.correct(["newyork", "rhap sody"]) == ["new york", "rhapsody"]


def test_symspell_keeps_the_input_case_pattern(symspell):
    assert symspell.correct(["Speling", "SPELING", "WHERA TO"]) == [
        "Spelling",
        "SPELLING",
        "WHERE TO",
    ]


def test_symspell_leaves_words_with_digits_alone(symspell):
    assert symspell.correct(["50 cent candy shopp", "blink 182 smal things", "2pac changes"]) == [
        "50 cent candy shop",
        "blink 182 small things",
        "2pac changes",
    ]


def test_symspell_leaves_correct_and_blank_queries_alone(symspell):
    assert symspell.correct(["let it be", "", "   "]) == ["let it be", "", "   "]


def test_symspell_refuses_a_distance_its_index_was_not_built_for():
    with pytest.raises(ValueError, match="max_edit_distance"):
        SymSpellSpeller(max_edit_distance=3)


def test_load_system_names_the_baselines():
    identity = load_system("identity")
    assert isinstance(identity, IdentitySpeller)
    assert isinstance(identity, Speller)
    symspell = load_system("symspell")
    assert isinstance(symspell, SymSpellSpeller)
    assert symspell.name == "symspell"


def test_load_system_rejects_an_unknown_name_with_the_choices(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="neither 'identity', 'symspell' nor a model"):
        load_system(tmp_path / "no_such_model")
