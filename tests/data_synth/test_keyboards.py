"""Key adjacency comes from key geometry; typos must stay on touching keys."""

import pytest

from data_synth.keyboards import LAYOUTS, get_keyboard


@pytest.mark.parametrize("layout", LAYOUTS)
def test_adjacency_is_symmetric_and_never_self(layout):
    keyboard = get_keyboard(layout)
    for key, neighbors in keyboard.neighbors.items():
        assert key not in neighbors
        for other in neighbors:
            assert key in keyboard.neighbors[other], (layout, key, other)


@pytest.mark.parametrize(
    ("layout", "key", "expected"),
    [
        ("qwerty_us", "s", "adewxz"),  # left, right, two above, two below
        ("qwerty_us", "q", "aw"),  # corner key: digits above are not letters
        ("qwertz", "z", "ghtu"),  # z sits where qwerty has y
        ("qwertz", "y", "asx"),
        ("azerty", "a", "qz"),
        ("azerty", "m", "lpù"),
    ],
)
def test_neighbors_match_the_physical_layout(layout, key, expected):
    assert get_keyboard(layout).neighbors[key] == expected


def test_letters_only_neighbor_letters_so_typos_stay_readable():
    keyboard = get_keyboard("qwerty_us")
    assert all(n.isalpha() for n in keyboard.neighbors["p"])  # not `[`, `;`, `0`
    assert keyboard.neighbors["5"] == "46"
    assert keyboard.adjacent("G", "h") and not keyboard.adjacent("g", "p")


def test_unknown_layout_names_the_choices():
    with pytest.raises(ValueError, match="qwerty_us, qwertz, azerty"):
        get_keyboard("dvorak")
