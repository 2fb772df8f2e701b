"""The columnar batch: many queries as one flat array of code points, edited in place.

Every operation works on all rows of a batch at once, so the batch keeps the queries back to
back in one array (no padding: short queries of mixed length would be mostly padding in a
matrix), records which operations each row received, and applies one edit per row in a
single splice. The helpers below it (sums per row, a weighted draw per row, what stands
next to each character) are the vectorized steps the operations are written in.
"""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import numpy as np

from data_synth.noise.chars import ALPHA, SPACE, char_tables
from data_synth.noise.operations import OPS

# Where rows become a padded matrix (the phonetic scan, the output strings), they form one
# matrix unless padding them to the longest would cost this many times the characters they
# hold; then they go in groups of similar length.
_PADDING_LIMIT = 4
_MIN_GROUP_WIDTH = 64


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``range(start, start + length)`` for every pair, back to back, without a Python loop."""
    offsets = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) + np.repeat(starts - offsets, lengths)


def row_sums(values: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Per row (``lens`` consecutive entries of ``values`` each): their sum, e.g. how many
    of a row's characters satisfy a mask. Differences of one running sum: cheaper than
    ``np.bincount`` or ``np.add.reduceat``, and right for rows of length 0."""
    running = np.concatenate(([0], np.cumsum(values)))
    ends = np.cumsum(lens)
    return running[ends] - running[ends - lens]


class Chars:
    """The characters of some rows of a batch, back to back, and where each one stands.

    Where each character stands (its row, its column, ...) is worked out on first use:
    most steps need only a little of it, and every array costs a pass over the characters.
    """

    def __init__(
        self, codes: np.ndarray, flags: np.ndarray, lens: np.ndarray, starts: np.ndarray
    ) -> None:
        self.codes = codes  # uint32 code points
        self.flags = flags  # uint16 CharTables.flags of each
        self.lens = lens  # per row: its length
        self.starts = starts  # per row: where it starts in the batch's ``codes``

    @cached_property
    def offsets(self) -> np.ndarray:
        """Per row: where its characters start here."""
        return np.cumsum(self.lens) - self.lens

    @cached_property
    def row(self) -> np.ndarray:
        """Per character: which of the rows holds it (0, 1, ... in the rows' order)."""
        return np.repeat(np.arange(len(self.lens)), self.lens)

    @cached_property
    def column(self) -> np.ndarray:
        """Per character: its position in its row."""
        return np.arange(len(self.codes)) - self.offsets[self.row]

    @cached_property
    def first(self) -> np.ndarray:
        """Per character: whether it starts its row."""
        return self._mark(self.offsets)

    @cached_property
    def last(self) -> np.ndarray:
        """Per character: whether it ends its row."""
        return self._mark(self.offsets + self.lens - 1)

    def _mark(self, positions: np.ndarray) -> np.ndarray:
        marked = np.zeros(len(self.codes), dtype=bool)
        marked[positions[self.lens > 0]] = True
        return marked

    def in_batch(self, position: np.ndarray) -> np.ndarray:
        """Where characters at ``position`` (one per row, in row order) are in the batch."""
        return self.starts + (position - self.offsets)

    def only(self, keep: np.ndarray) -> Chars:
        """The characters of the rows where ``keep`` (a mask over rows) is true."""
        mine = keep[self.row]
        return Chars(self.codes[mine], self.flags[mine], self.lens[keep], self.starts[keep])

    def part(self, rows: slice, chars: slice) -> Chars:
        """A contiguous run of rows (``rows``), whose characters are ``chars``: all views."""
        return Chars(self.codes[chars], self.flags[chars], self.lens[rows], self.starts[rows])

    def has(self, bits: np.ndarray | int) -> np.ndarray:
        """Per character: whether its flags have any of ``bits``."""
        return (self.flags & bits) != 0


class Edit(NamedTuple):
    """Per row: replace ``codes[start : start + removed]`` by ``replacement[:added]``."""

    start: np.ndarray  # a position in the batch's ``codes``
    removed: np.ndarray
    replacement: np.ndarray  # (rows, width) uint32
    added: np.ndarray


class Batch:
    """Queries as one flat array of code points (all rows back to back), their lengths,
    and the operations applied to each.

    Flat rather than a padded matrix: short queries of mixed length would otherwise be
    mostly padding, and every vectorized step costs per cell.
    """

    def __init__(self, texts: list[str], op_slots: int) -> None:
        # One C call each: join the strings, encode as UTF-32, read the code points.
        joined = "".join(texts).encode("utf-32-le", "surrogatepass")
        self.codes = np.frombuffer(joined, dtype=np.uint32)
        self.lens = np.array(list(map(len, texts)), dtype=np.int64)
        self.original = self.codes, self.lens.copy()
        # Per row, every flag any of its characters has (and perhaps a few of characters a
        # typo has since removed): tells which rows a query habit need look at.
        self.row_flags = self._row_flags(self.codes, self.lens)
        self.ops = np.full((len(texts), op_slots), -1, dtype=np.int8)
        self.op_count = np.zeros(len(texts), dtype=np.int64)

    def starts(self) -> np.ndarray:
        """Per row: where it starts in ``codes`` (rows change length, so asked anew)."""
        return np.cumsum(self.lens) - self.lens

    @staticmethod
    def _row_flags(codes: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """The bitwise or of the flags of each row's characters (rows back to back)."""
        row_flags = np.zeros(len(lens), dtype=np.uint16)
        filled = np.flatnonzero(lens > 0)  # reduceat needs rows that have characters
        if len(filled):
            starts = (np.cumsum(lens) - lens)[filled]
            row_flags[filled] = np.bitwise_or.reduceat(char_tables().flags[codes], starts)
        return row_flags

    def chars(self, rows: np.ndarray) -> Chars:
        """The characters of ``rows``, in the order given."""
        starts, lens = self.starts()[rows], self.lens[rows]
        codes = self.codes[_ranges(starts, lens)]
        return Chars(codes, char_tables().flags[codes], lens, starts)

    def text(self, row: int) -> str:
        """One row as a string, for the rare query Python's own functions must handle."""
        start = int(self.starts()[row])
        codes = self.codes[start : start + self.lens[row]]
        return codes.tobytes().decode("utf-32-le", "surrogatepass")

    def record(self, rows: np.ndarray, op: np.ndarray | int) -> None:
        """Note that ``rows`` received operation ``op`` (a code: an index into ``OPS``)."""
        self.ops[rows, self.op_count[rows]] = op
        self.op_count[rows] += 1

    def splice(self, rows: np.ndarray, edit: Edit) -> None:
        """Apply one edit to each of ``rows`` (ascending), all in a few passes over ``codes``:
        the removed spans are masked out, and the typed characters and the kept ones are
        each written to their places in a new array."""
        keep = np.ones(len(self.codes), dtype=bool)
        keep[_ranges(edit.start, edit.removed)] = False
        kept = np.compress(keep, self.codes)
        # Where each typed character lands: its edit's start, less what earlier edits
        # removed, plus what they (and this edit, before it) typed.
        typed_before = np.cumsum(edit.added) - edit.added
        landing = edit.start - (np.cumsum(edit.removed) - edit.removed) + typed_before
        typed_at = _ranges(landing, edit.added)
        width = edit.replacement.shape[1]
        typed = edit.replacement.ravel()[_ranges(np.arange(len(rows)) * width, edit.added)]
        codes = np.empty(len(kept) + len(typed_at), dtype=np.uint32)
        is_kept = np.ones(len(codes), dtype=bool)
        is_kept[typed_at] = False
        codes[typed_at] = typed
        codes[np.flatnonzero(is_kept)] = kept
        self.codes = codes
        self.lens[rows] += edit.added - edit.removed
        self.row_flags[rows] |= self._row_flags(codes[typed_at], edit.added)

    def rewrite(
        self, rows: np.ndarray, old: Chars, codes: np.ndarray, lens: np.ndarray, op: int
    ) -> None:
        """Give ``rows`` new contents (``codes``: theirs back to back, ``lens`` long) where
        that changes them and leaves a visible character, and record ``op`` for those.

        For the query habits, which rewrite whole queries.
        """
        count = len(rows)
        if not count:  # a splice costs a pass over the whole batch
            return
        row = np.repeat(np.arange(count), lens)
        width = max(1, int(lens.max(initial=0)), int(old.lens.max(initial=0)))
        new, before = np.zeros((2, count, width), dtype=np.uint32)
        new[row, np.arange(len(codes)) - (np.cumsum(lens) - lens)[row]] = codes
        before[old.row, old.column] = old.codes
        shown = (char_tables().flags[codes] & SPACE) == 0
        keep = ((lens != old.lens) | (new != before).any(axis=1)) & (row_sums(shown, lens) > 0)
        start = self.starts()[rows]
        self.splice(rows[keep], Edit(start[keep], old.lens[keep], new[keep], lens[keep]))
        self.record(rows[keep], op)

    def strings(self) -> list[str]:
        """The rows as strings: scattered into a zero-padded matrix that numpy reads as
        fixed-width UTF-32 strings, one C call for all rows (it drops the padding)."""
        starts = self.starts()
        groups = length_groups(self.lens)
        strings: list[str] = [""] * len(self.lens) if len(groups) > 1 else []
        for group in groups:
            lens = self.lens[group]
            width = max(1, int(lens.max(initial=0)))
            matrix = np.zeros((len(group), width), dtype=np.uint32)
            codes = self.codes if len(groups) == 1 else self.codes[_ranges(starts[group], lens)]
            matrix.ravel()[_ranges(np.arange(len(group)) * width, lens)] = codes
            found = matrix.view(f"<U{width}").ravel().tolist()
            if len(groups) == 1:
                strings = found
            else:  # rare (a very long query): put each group's rows in place
                for row_number, string in zip(group.tolist(), found, strict=True):
                    strings[row_number] = string
        # The padding is zeros, so a text ending in a NUL character lost it: rebuild those.
        filled = np.flatnonzero(self.lens > 0)
        ends_in_nul = self.codes[starts[filled] + self.lens[filled] - 1] == 0
        for row_number in filled[ends_in_nul].tolist():
            strings[row_number] = self.text(row_number)
        return strings

    def unchanged(self) -> np.ndarray:
        """Per row: whether it reads as it did at the start (its typos may undo each other)."""
        codes, lens = self.original
        same = self.op_count == 0
        check = np.flatnonzero(~same & (self.lens == lens))
        now = self.codes[_ranges(self.starts()[check], lens[check])]
        then = codes[_ranges((np.cumsum(lens) - lens)[check], lens[check])]
        same[check] = row_sums(now != then, lens[check]) == 0
        return same

    def op_tuples(self) -> list[tuple[str, ...]]:
        """Each row's ops as a tuple of names, one shared tuple per distinct sequence (a
        batch holds a few dozen), which is a third of a result's cost saved per query."""
        base = len(OPS) + 1
        if base ** self.ops.shape[1] < 2**62:  # each sequence as one int64 (base-13 digits)
            keys = (self.ops.astype(np.int64) + 1) @ (base ** np.arange(self.ops.shape[1]))
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            sequences = self.ops[first]
        else:  # a profile allowing over a dozen typos: compare whole rows (slower)
            sequences, inverse = np.unique(self.ops, axis=0, return_inverse=True)
        shared = [tuple(OPS[code] for code in row if code >= 0) for row in sequences.tolist()]
        return list(map(shared.__getitem__, inverse.ravel().tolist()))


def sample(
    weight: np.ndarray, lens: np.ndarray, uniform: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row (``lens`` consecutive entries of ``weight`` each, rows back to back): an entry
    drawn with probability proportional to its integer weight, and whether the row had any
    weight (where it had none, the entry is meaningless).

    Inverse-transform sampling on one running sum over all rows: a row's entries occupy
    ``[running[i], running[i + 1])`` on the number line, a uniform draw scaled into the row's
    stretch falls into exactly one of them (never into a zero-weight entry's empty one), and
    one binary search per row finds it.
    """
    running = np.concatenate(([0], np.cumsum(weight)))
    ends = np.cumsum(lens)
    before = running[ends - lens]
    total = running[ends] - before
    offset = np.minimum((uniform * total).astype(np.int64), np.maximum(total - 1, 0))
    entry = np.searchsorted(running, before + offset, side="right") - 1
    return np.clip(entry, ends - lens, ends - 1), total > 0


def draw(cumulative: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Indices drawn by the running sums of their weights (``bisect`` on each, vectorized)."""
    total = cumulative[-1]
    target = np.minimum(uniform * total, np.nextafter(total, 0))
    return np.searchsorted(cumulative, target, side="right")


def length_groups(lens: np.ndarray) -> list[np.ndarray]:
    """Rows grouped so that padding each group to its longest row costs little.

    One group unless a long row would make the padded matrix mostly padding; then groups
    of widths 64, 128, 256, ... (no row pads to more than twice its length, or to 64).
    """
    longest = int(lens.max(initial=0))
    if longest <= _MIN_GROUP_WIDTH or longest * len(lens) <= _PADDING_LIMIT * max(lens.sum(), 1):
        return [np.arange(len(lens))]
    group = np.ceil(np.log2(np.maximum(lens, _MIN_GROUP_WIDTH))).astype(np.int64)
    order = np.argsort(group, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(group[order])) + 1)


class Around:
    """What stands next to each character of a ``Chars`` within its own row."""

    def __init__(self, chars: Chars) -> None:
        self.chars = chars
        self.first, self.last = chars.first, chars.last
        self.letter = chars.has(ALPHA)

    @cached_property
    def lower(self) -> np.ndarray:
        """Each character's lower case (one code point), to compare letters in any case."""
        return char_tables().lower[self.chars.codes]

    @cached_property
    def word_start(self) -> np.ndarray:
        """Per character: whether it begins a word (typos there are made rarer)."""
        return self.first | ~self.before(self.letter)

    def before(self, values: np.ndarray) -> np.ndarray:
        """Each character's predecessor's value (zero at the start of a row)."""
        return np.concatenate((np.zeros(1, values.dtype), values[:-1])) * ~self.first

    def after(self, values: np.ndarray) -> np.ndarray:
        """Each character's successor's value (zero at the end of a row)."""
        return np.concatenate((values[1:], np.zeros(1, values.dtype))) * ~self.last
