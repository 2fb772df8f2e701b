"""Keyboard layouts and the key adjacency that fat-finger typos follow.

A typo made by hitting the wrong key lands on a key next to the intended one, so a
realistic substitution needs to know which keys touch. Rather than hand-writing
neighbour lists (which drift and miss diagonals), each layout is given as its rows of
unshifted keys plus the horizontal stagger of each row, and adjacency is computed from
the key centres: two keys are neighbours when their centres are at most
``ADJACENCY_RADIUS`` key widths apart. On a standard staggered keyboard that yields
the left/right neighbours plus the two touching keys in the rows above and below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

# Distance between key centres, in key widths, under which two keys touch. Same-row
# neighbours sit 1.0 apart; the touching keys of the next row sit about 1.03-1.25
# apart; the next key over in the next row sits at least 1.6 away.
ADJACENCY_RADIUS = 1.3

# Each layout: rows of unshifted keys from the number row down, and the x offset of
# each row's first key (in key widths) as on a physical ISO/ANSI board.
_ROW_OFFSETS = (0.0, 0.5, 0.75, 1.25)
_LAYOUT_ROWS: dict[str, tuple[str, str, str, str]] = {
    "qwerty_us": ("1234567890-=", "qwertyuiop[]", "asdfghjkl;'", "zxcvbnm,./"),
    "qwertz": ("1234567890ß", "qwertzuiopü+", "asdfghjklöä#", "yxcvbnm,.-"),
    "azerty": ("1234567890)=", "azertyuiop^$", "qsdfghjklmù*", "wxcvbn,;:!"),
}

LAYOUTS: tuple[str, ...] = tuple(_LAYOUT_ROWS)


@dataclass(frozen=True)
class Keyboard:
    """A layout's key adjacency, restricted so that a letter's typo is a letter.

    ``neighbors`` maps each lower-case key to the string of adjacent keys of the same
    kind (letters to letters, digits to digits): a user who mistypes ``interacting``
    produces ``intreacting`` or ``ibteracting``, not ``iMGe$xcting``.
    """

    name: str
    neighbors: dict[str, str] = field(repr=False)

    def adjacent(self, first: str, second: str) -> bool:
        """Whether two characters sit on touching keys (case-insensitive)."""
        return second.lower() in self.neighbors.get(first.lower(), "")


def _key_centres(rows: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    return {
        key: (column + _ROW_OFFSETS[row_index], float(row_index))
        for row_index, row in enumerate(rows)
        for column, key in enumerate(row)
    }


def _same_kind(first: str, second: str) -> bool:
    return (first.isalpha() and second.isalpha()) or (first.isdigit() and second.isdigit())


@cache
def get_keyboard(name: str) -> Keyboard:
    """The named layout (one of ``LAYOUTS``); cached because adjacency never changes."""
    if name not in _LAYOUT_ROWS:
        raise ValueError(f"unknown keyboard layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    centres = _key_centres(_LAYOUT_ROWS[name])
    neighbors: dict[str, str] = {}
    for key, (x, y) in centres.items():
        close = [
            other
            for other, (other_x, other_y) in centres.items()
            if other != key
            and _same_kind(key, other)
            and math.hypot(x - other_x, y - other_y) <= ADJACENCY_RADIUS
        ]
        neighbors[key] = "".join(sorted(close))
    return Keyboard(name=name, neighbors=neighbors)
