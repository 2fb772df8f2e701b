"""Each noise operation does exactly what its name says."""

import pytest

from data_synth.keyboards import LAYOUTS, get_keyboard
from data_synth.noise.model import NoiseModel

REPEATS = 200


def make_model(layout="qwerty_us", first_letter_factor=1.0, confusions=None, seed=0):
    config = {
        "layout": layout,
        "clean_share": 0.0,
        "error_count_weights": [1.0],
        "max_errors_per_char": 1.0,
        "first_letter_factor": first_letter_factor,
        "typo_weights": {"delete": 1.0},
        "query_ops": {},
        "confusions": confusions,
    }
    return NoiseModel.from_config(config, seed=seed)


def outputs(model, op, text, repeats=REPEATS):
    return [model.apply_op(op, text) for _ in range(repeats)]


def differing_positions(first, second):
    return [i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_keyboard_substitute_replaces_one_letter_by_an_adjacent_key(layout):
    model, keyboard = make_model(layout), get_keyboard(layout)
    clean = "Interacting Queries"
    for noisy in outputs(model, "keyboard_substitute", clean):
        [position] = differing_positions(noisy, clean)
        assert keyboard.adjacent(clean[position], noisy[position])
        assert noisy[position].isupper() == clean[position].isupper()


def test_keyboard_insert_adds_a_key_adjacent_to_its_neighbor():
    model, keyboard = make_model(), get_keyboard("qwerty_us")
    clean = "interacting"
    for noisy in outputs(model, "keyboard_insert", clean):
        assert len(noisy) == len(clean) + 1
        candidates = [i for i in range(len(noisy)) if noisy[:i] + noisy[i + 1 :] == clean]
        assert any(
            (i > 0 and keyboard.adjacent(noisy[i - 1], noisy[i]))
            or (i + 1 < len(noisy) and keyboard.adjacent(noisy[i + 1], noisy[i]))
            for i in candidates
        ), noisy


def test_substitute_puts_any_other_letter_in_one_place_keeping_its_case():
    model = make_model()
    clean = "Nice Day"
    typed = {}
    for noisy in outputs(model, "substitute", clean, repeats=400):
        [position] = differing_positions(noisy, clean)
        assert noisy[position].isascii() and noisy[position].isalpha()
        assert noisy[position].isupper() == clean[position].isupper()
        typed.setdefault(position, set()).add(noisy[position].lower())
    assert set(typed) == {0, 1, 2, 3, 5, 6, 7}, "every letter, never the space"
    keyboard = get_keyboard("qwerty_us")
    assert any(not keyboard.adjacent("c", letter) for letter in typed[2]), "not only neighbours"
    assert model.apply_op("substitute", "123 ß") is None, "only the letters a-z are replaced"


def test_insert_adds_any_one_letter_next_to_a_letter():
    model = make_model()
    clean = "making"
    inserted = set()
    for noisy in outputs(model, "insert", clean, repeats=400):
        assert len(noisy) == len(clean) + 1 and noisy.isalpha() and noisy.islower()
        spots = [i for i in range(len(noisy)) if noisy[:i] + noisy[i + 1 :] == clean]
        assert spots, noisy
        inserted.add(noisy[spots[0]])
    assert "smaking" in set(outputs(model, "insert", clean, repeats=2000))
    assert len(inserted) > 15, "any letter of the alphabet, not only the keyboard's neighbours"


def test_delete_removes_exactly_one_letter():
    model = make_model()
    clean = "hit me off!"
    for noisy in outputs(model, "delete", clean):
        removed = [i for i in range(len(clean)) if clean[:i] + clean[i + 1 :] == noisy]
        assert removed and all(clean[i].isalpha() for i in removed)


def test_transpose_swaps_two_different_neighbouring_letters():
    model = make_model()
    clean = "beatles"
    for noisy in outputs(model, "transpose", clean):
        first, second = differing_positions(noisy, clean)
        assert second == first + 1
        assert noisy[first] == clean[second] and noisy[second] == clean[first]


def test_double_types_one_letter_twice_and_undouble_drops_one_of_a_pair():
    model = make_model()
    for noisy in outputs(model, "double", "beatles"):
        assert len(noisy) == 8
        doubled = [i for i in range(7) if noisy[i] == noisy[i + 1]]
        assert any(noisy[:i] + noisy[i + 1 :] == "beatles" for i in doubled)
    assert set(outputs(model, "undouble", "accommodate")) == {"acommodate", "accomodate"}
    assert model.apply_op("undouble", "abc") is None


def test_phonetic_uses_the_bundled_english_confusions():
    model = make_model()
    assert "fone" in outputs(model, "phonetic", "phone", repeats=400)
    assert "recieve" in outputs(model, "phonetic", "receive", repeats=400)
    assert "nation" in set(outputs(model, "phonetic", "nasion", repeats=400))


def test_phonetic_table_is_replaceable_and_honours_word_anchors(tmp_path):
    table = tmp_path / "confusions.tsv"
    table.write_text("# a user's own table\n^kn\tn\t1\tsilent k\nable$\tible\t1\tsuffix\n")
    model = make_model(confusions=str(table))
    assert model.apply_op("phonetic", "knife") == "nife"
    assert model.apply_op("phonetic", "Knife") == "Nife"
    assert model.apply_op("phonetic", "unknown") is None  # kn not at a word start
    assert model.apply_op("phonetic", "capable man") == "capible man"
    assert model.apply_op("phonetic", "tablet") is None  # able not at a word end


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("the knife", {"the nife"}),  # a later word of a query starts a word
        ("pen-knife", {"pen-nife"}),  # so does a letter after punctuation
        ("2knives", {"2nives"}),  # or after a digit
        ("Beyoncé knife", {"Beyoncé nife"}),  # a query with accents finds the same words
        ("KNIFE capable", {"NIFE capable", "KNIFE capible"}),  # capitals are kept
        ("unknown tablet", {None}),  # anchors still refuse mid-word letters
    ],
)
def test_phonetic_anchors_hold_in_every_word_of_a_query(tmp_path, query, expected):
    table = tmp_path / "confusions.tsv"
    table.write_text("^kn\tn\t1\tsilent k\nable$\tible\t1\tsuffix\n")
    model = make_model(confusions=str(table))
    assert set(outputs(model, "phonetic", query, repeats=50)) == expected


def test_merge_and_split_words():
    model = make_model()
    assert model.apply_op("merge_words", "the beatles") == "thebeatles"
    assert model.apply_op("merge_words", "beatles") is None
    for noisy in outputs(model, "split_word", "beatles"):
        left, right = noisy.split(" ")
        assert left and right and left + right == "beatles"


def test_query_habits():
    model = make_model()
    assert model.apply_op("strip_diacritics", "Beyoncé") == "Beyonce"
    assert model.apply_op("strip_diacritics", "Beyonce") is None
    assert model.apply_op("drop_punctuation", "Don't Stop") == "Dont Stop"
    assert model.apply_op("drop_punctuation", "AC/DC") == "AC DC"
    assert model.apply_op("drop_punctuation", "Rock & Roll") == "Rock Roll"
    assert set(outputs(model, "case_change", "Hey Jude")) == {"hey jude", "HEY JUDE"}
    assert model.apply_op("case_change", "123") is None


def test_first_letters_are_protected_by_the_first_letter_factor():
    clean = "hit me off now"
    word_starts = {0, 4, 7, 11}
    protected = make_model(first_letter_factor=0.0)
    for noisy in outputs(protected, "keyboard_substitute", clean):
        assert not set(differing_positions(noisy, clean)) & word_starts
    unprotected = make_model(first_letter_factor=1.0)
    hits = [
        set(differing_positions(noisy, clean)) & word_starts
        for noisy in outputs(unprotected, "keyboard_substitute", clean)
    ]
    assert any(hits)
