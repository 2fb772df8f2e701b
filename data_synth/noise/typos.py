"""The typo operations: where each may land in a query, and what it types there.

A typo is one small edit of one query (a key pressed instead of its neighbour, a letter left
out, two letters swapped, a space typed or missed, a sound-alike spelling); a noisy query
gets a drawn number of them, one per round. In a round every row draws an operation by the
profile's rates, each operation marks by vectorized masks where in its rows it fits, a
position is drawn among those (rarer at a word's first letter, where people seldom err), and
what it types there becomes one edit per row, applied to the whole batch in one splice. An
operation that finds nothing to change in a row is redrawn, a few times at most.
"""

from __future__ import annotations

import numpy as np

from data_synth.noise.batch import Around, Batch, Chars, Edit, draw, row_sums, sample
from data_synth.noise.chars import SPACE, SPACE_CODE, char_tables, key_table
from data_synth.noise.operations import TYPO_OPS
from data_synth.noise.phonetic import compile_confusions
from data_synth.noise.profile import Confusion

# Candidate positions carry integer weights, so that drawing one is exact: _WEIGHT for a
# plain candidate, less at a word's first letter (see ``Typos``).
_WEIGHT = 1 << 20
# Typos whose position avoids a word's first letter (the others never land there anyway,
# or, like undouble and merge_words, are about a double letter or a space).
_PROTECTED = frozenset(
    {
        "keyboard_substitute",
        "keyboard_insert",
        "substitute",
        "insert",
        "delete",
        "transpose",
        "double",
    }
)
_ASCII_LOWER = np.arange(ord("a"), ord("z") + 1)
_NOTHING = -1  # a drawn operation known not to fit its row


class Typos:
    """The typo operations of one profile: its keyboard layout, its confusion table and how
    much rarer a typo is at a word's first letter. Random draws come from the generator each
    call is given, so that the model's one seeded generator decides everything in order."""

    def __init__(
        self, layout: str, confusions: tuple[Confusion, ...], first_letter_factor: float
    ) -> None:
        self._keys = key_table(layout)
        self._first_letter_weight = round(first_letter_factor * _WEIGHT)
        self._confusions = compile_confusions(confusions, first_letter_factor)

    def one_round(
        self,
        batch: Batch,
        rows: np.ndarray,
        typo_cumulative: np.ndarray,
        op_tries: int,
        rng: np.random.Generator,
    ) -> None:
        """Give each of ``rows`` one typo: the first of up to ``op_tries`` drawn operations
        that finds something to change; then apply all rows' edits in one splice."""
        count = len(rows)
        op = draw(typo_cumulative, rng.random(count))
        tries = np.ones(count, dtype=np.int64)
        self._skip_hopeless(batch, rows, op, tries, typo_cumulative, op_tries, rng)
        done = np.zeros(count, dtype=bool)
        start, removed, added = np.zeros((3, count), dtype=np.int64)
        replacement = np.zeros((count, max(2, self._confusions.replacement.shape[-1])), np.uint32)
        pending = np.flatnonzero(op != _NOTHING)
        while len(pending):
            applies, edit = self._attempt(batch, rows[pending], op[pending], rng)
            ok = np.flatnonzero(applies)
            hit = pending[ok]
            done[hit] = True
            start[hit], removed[hit], added[hit] = edit.start[ok], edit.removed[ok], edit.added[ok]
            replacement[hit, : edit.replacement.shape[1]] = edit.replacement[ok]
            pending = pending[np.flatnonzero(~applies)]
            pending = pending[tries[pending] < op_tries]  # the others give up this typo
            op[pending] = draw(typo_cumulative, rng.random(len(pending)))
            tries[pending] += 1
        done = np.flatnonzero(done)
        batch.splice(rows[done], Edit(start[done], removed[done], replacement[done], added[done]))
        batch.record(rows[done], op[done])

    def _skip_hopeless(
        self,
        batch: Batch,
        rows: np.ndarray,
        op: np.ndarray,
        tries: np.ndarray,
        typo_cumulative: np.ndarray,
        op_tries: int,
        rng: np.random.Generator,
    ) -> None:
        """Redraw, without trying them, the drawn ``undouble`` and ``merge_words`` that find
        nothing: most words have no double letter and many queries are one word, so these
        would otherwise fail often. Rows that run out of draws get _NOTHING."""
        hopeful = {TYPO_OPS.index(name): name for name in ("undouble", "merge_words")}
        chosen = np.flatnonzero(np.logical_or.reduce([op == code for code in hopeful]))
        if not len(chosen):
            return
        around = Around(batch.chars(rows[chosen]))
        fits = {  # per chosen row: whether the operation finds anything in it
            code: row_sums(self._fits(name, around), around.chars.lens) > 0
            for code, name in hopeful.items()
        }
        hopeless = np.ones(len(chosen), dtype=bool)
        while True:
            hopeless[:] = False
            for code, found in fits.items():
                hopeless |= (op[chosen] == code) & ~found
            spent = hopeless & (tries[chosen] >= op_tries)
            op[chosen[spent]] = _NOTHING
            redraw = chosen[hopeless & ~spent]
            if not len(redraw):
                return
            op[redraw] = draw(typo_cumulative, rng.random(len(redraw)))
            tries[redraw] += 1

    def _attempt(
        self, batch: Batch, rows: np.ndarray, op: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, Edit]:
        """Each row's operation once: where it lands (a position drawn among the places it
        fits, by weight), and what it types there; and per row whether it found anything to
        change. The edits come in the order of ``rows``."""
        count = len(op)
        uniform = rng.random((count, 3))
        # Rows sorted by operation: each operation then works on one contiguous slice of
        # the characters, and never on a mask over all of them.
        order = np.argsort(op.astype(np.int8), kind="stable")  # a radix sort, for small ints
        chars = batch.chars(rows[order])
        row_bounds = np.searchsorted(op[order], np.arange(len(TYPO_OPS) + 1))
        char_bounds = np.concatenate(([0], np.cumsum(chars.lens)))[row_bounds]
        parts = {
            code: (slice(*row_bounds[code : code + 2]), slice(*char_bounds[code : code + 2]))
            for code in np.flatnonzero(np.diff(row_bounds))
        }
        uniform = uniform[order]

        weight = np.empty(len(chars.codes), dtype=np.int64)
        matches = None
        for code, (row_part, char_part) in parts.items():
            name, part = TYPO_OPS[code], chars.part(row_part, char_part)
            if name == "phonetic":
                matches = self._confusions.matches(part)
                weight[char_part] = matches.weight
            else:
                around = Around(part)
                fits = self._fits(name, around)
                if name in _PROTECTED:
                    protect = _WEIGHT - self._first_letter_weight  # taken off at a word start
                    fits = fits * (_WEIGHT - protect * around.word_start)
                else:
                    fits = fits * _WEIGHT
                weight[char_part] = fits
        position, applies = sample(weight, chars.lens, uniform[:, 0])

        start = chars.in_batch(position)  # the drawn character's place in the batch
        removed, added = np.zeros((2, count), dtype=np.int64)
        replacement = np.zeros((count, max(2, self._confusions.replacement.shape[-1])), np.uint32)
        for code, (mine, char_part) in parts.items():
            at, drawn = position[mine], uniform[mine]
            match TYPO_OPS[code]:
                case "keyboard_substitute":
                    removed[mine], added[mine] = 1, 1
                    replacement[mine, 0] = self._neighbour(chars.codes[at], drawn[:, 1])
                case "substitute":
                    removed[mine], added[mine] = 1, 1
                    replacement[mine, 0] = self._other_letter(chars.codes[at], drawn[:, 1])
                case "keyboard_insert":  # the stray key lands after the intended one, or before
                    start[mine] += drawn[:, 2] < 0.5
                    added[mine] = 1
                    replacement[mine, 0] = self._neighbour(chars.codes[at], drawn[:, 1])
                case "insert":  # after the letter or before it; never the letter itself
                    start[mine] += drawn[:, 2] < 0.5
                    added[mine] = 1
                    replacement[mine, 0] = self._other_letter(chars.codes[at], drawn[:, 1])
                case "delete" | "undouble" | "merge_words":
                    removed[mine] = 1
                case "transpose":
                    removed[mine], added[mine] = 2, 2
                    following = np.minimum(at + 1, len(chars.codes) - 1)
                    replacement[mine, 0] = chars.codes[following]
                    replacement[mine, 1] = chars.codes[at]
                case "double":
                    added[mine] = 1
                    replacement[mine, 0] = chars.codes[at]
                case "split_word":
                    added[mine] = 1
                    replacement[mine, 0] = SPACE_CODE
                case "phonetic":
                    typed, length, typed_length = self._confusions.typed(
                        chars, matches, char_part.start, at, drawn
                    )
                    removed[mine], added[mine] = length, typed_length
                    replacement[mine, : typed.shape[1]] = typed
        edit = Edit(start, removed, replacement, added)
        applies &= _changes_visibly(chars, position, edit)
        restore = np.empty_like(order)  # the inverse of the sort by operation
        restore[order] = np.arange(count)
        return applies[restore], Edit(*(field[restore] for field in edit))

    def _fits(self, name: str, around: Around) -> np.ndarray:
        """Where in each row (a mask over characters) an operation other than phonetic fits."""
        chars, letter, lower = around.chars, around.letter, around.lower
        match name:
            case "keyboard_substitute" | "keyboard_insert":
                return self._keys.row[chars.codes] > 0  # a key with neighbours
            case "delete":
                return letter
            case "substitute" | "insert":  # a letter of the English alphabet, in either case
                return np.isin(lower, _ASCII_LOWER)
            case "transpose":  # two letters side by side that differ (`ee` would not change)
                return letter & around.after(letter) & (lower != around.after(lower))
            case "double":  # a letter not already doubled
                codes = chars.codes
                return letter & (around.before(codes) != codes) & (around.after(codes) != codes)
            case "undouble":  # a letter followed by the same letter, in either case
                return letter & (lower == around.after(lower))
            case "merge_words":  # a space between two characters
                return (chars.codes == SPACE_CODE) & ~around.first & ~around.last
            case "split_word":  # a letter after a letter
                return letter & around.before(letter)
        raise AssertionError(name)

    def _neighbour(self, codes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A random neighbouring key of each character, in its case."""
        key_row = self._keys.row[codes]
        choice = (uniform * self._keys.count[key_row]).astype(np.int64)
        return self._keys.keys[key_row, np.minimum(choice, self._keys.keys.shape[1] - 1)]

    def _other_letter(self, codes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A random other letter of a-z for each (a-z, either case) letter, in its case."""
        lower = char_tables().lower[codes].astype(np.int64)
        index = lower - ord("a")
        drawn = np.minimum((uniform * 25).astype(np.int64), 24)
        letter = ord("a") + drawn + (drawn >= index)  # skips the letter itself
        return np.where(lower != codes, letter - 32, letter).astype(np.uint32)


def _changes_visibly(chars: Chars, position: np.ndarray, edit: Edit) -> np.ndarray:
    """Where an edit changes its row and leaves more than whitespace in it (an edit that
    does not counts as an operation that could not apply, and is redrawn).

    Each check looks only at the rows that could fail it: an edit that types as many
    characters as it removes, and a row with no more visible characters than it removes.
    """
    ok = np.ones(len(position), dtype=bool)
    spaces = row_sums(chars.has(SPACE), chars.lens)
    same_size = (edit.removed == edit.added) & (edit.removed > 0)
    at_risk = chars.lens - spaces <= edit.removed
    rows = np.flatnonzero(same_size | at_risk)
    offsets = np.arange(max(int(edit.removed.max(initial=0)), edit.replacement.shape[1], 1))
    span = np.minimum(position[rows, None] + offsets, len(chars.codes) - 1)
    old = chars.codes[span]
    new = np.zeros_like(old)
    new[:, : edit.replacement.shape[1]] = edit.replacement[rows]
    in_old = offsets < edit.removed[rows, None]
    in_new = offsets < edit.added[rows, None]
    same = same_size[rows] & ((old == new) | ~in_old).all(axis=1)
    flags = char_tables().flags
    old_visible = (in_old & ((flags[old] & SPACE) == 0)).sum(axis=1)
    new_visible = (in_new & ((flags[new] & SPACE) == 0)).sum(axis=1)
    visible = (chars.lens - spaces)[rows] - old_visible + new_visible
    ok[rows] = ~same & (visible > 0)
    return ok
