"""How good a spell corrector is, measured the way a search team needs to know it.

Every metric compares three strings per example: the ``source`` the user typed, the
system's ``prediction`` and the ``reference`` (what the user meant). Looking at the source
too is what separates a corrector that fixes typos from one that merely echoes its input
(high exact match on mostly-clean data) or one that "fixes" words that were already right.

Conventions, shared by every metric below:

* Text is compared after collapsing runs of whitespace and stripping the ends, because
  a search backend tokenizes on whitespace and never sees the difference.
* Everything except ``exact_match_cased`` is case-insensitive (``str.casefold``): search
  matching ignores case, and real misspelling lists contain rows that differ only in case
  (``presbyterian -> Presbyterian``), which a search user would not call a typo.
* CER and WER are corpus-level: total edit distance over total reference length, so long
  queries weigh more than short ones, as in ``jiwer`` and most ASR/OCR papers.
* Ratios whose denominator is empty (no clean inputs, no changes made) are ``nan``:
  "undefined" is more honest than a 0 or 1 that looks like a measurement.

Word-level correction precision and recall follow the edit-based scoring of grammatical
error correction (M2/ERRANT, simplified to single-word edits). Aligning source to reference
words with a minimal Levenshtein alignment gives the *gold edits*: each substituted,
deleted or inserted word, keyed by its source position and the replacement word. Aligning
source to prediction gives the *system edits*. Then

* ``correction_recall``    = gold edits the system made / gold edits      (typo words fixed)
* ``correction_precision`` = system edits that are gold / system edits     (1 - share of the
  system's changes that broke a correct word or replaced a typo with the wrong word)

A prediction equal to its reference makes exactly the gold edits, so it scores 1 on both.
"""

from collections import Counter
from collections.abc import Hashable, Sequence

from rapidfuzz.distance import Levenshtein

#: The keys ``compute_metrics`` returns, in display order; loggers and reports rely on them.
METRIC_KEYS = (
    "exact_match",
    "exact_match_cased",
    "cer",
    "wer",
    "correction_precision",
    "correction_recall",
    "overcorrection_rate",
    "n",
)

# One word-level edit: (source start, source end, replacement words). A substitution spans
# one source word, a deletion one source word with no replacement, an insertion none.
WordEdit = tuple[int, int, tuple[str, ...]]


def normalize(text: str, *, cased: bool = False) -> str:
    """Bring text to the form the metrics compare: collapsed whitespace, casefolded
    unless ``cased`` (see the module docstring for why)."""
    collapsed = " ".join(text.split())
    return collapsed if cased else collapsed.casefold()


def levenshtein_distance(source: Sequence[Hashable], target: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit-cost insert, delete, substitute) between two sequences.

    Works on strings (characters) and on lists of words alike, so CER and WER share one
    definition. rapidfuzz computes it in C: metrics run over every validation example.
    """
    return Levenshtein.distance(source, target)


def word_edits(source: Sequence[str], target: Sequence[str]) -> Counter[WordEdit]:
    """The single-word edits of one minimal alignment turning ``source`` into ``target``.

    The alignment is deterministic (ties prefer keep/substitute, then delete, then insert),
    so the same pair always yields the same edits and a system that outputs the reference
    reproduces the gold edits exactly. A multiset, because two identical insertions at one
    position are two edits.
    """
    rows, cols = len(source), len(target)
    cost = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows + 1):
        cost[i][0] = i
    for j in range(cols + 1):
        cost[0][j] = j
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            cost[i][j] = min(
                cost[i - 1][j - 1] + (source[i - 1] != target[j - 1]),
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
            )

    edits: Counter[WordEdit] = Counter()
    i, j = rows, cols
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (source[i - 1] != target[j - 1]):
            if source[i - 1] != target[j - 1]:
                edits[(i - 1, i, (target[j - 1],))] += 1
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            edits[(i - 1, i, ())] += 1
            i -= 1
        else:
            edits[(i, i, (target[j - 1],))] += 1
            j -= 1
    return edits


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


#: The counts every metric above is a ratio of. Counts add up across batches and DDP
#: ranks; ratios do not (a mean of per-rank CERs is not the corpus CER), so distributed
#: evaluation sums these and divides once (``spellfix.model.CorrectionMetrics``).
COUNT_KEYS = (
    "examples",
    "exact",
    "exact_cased",
    "char_errors",
    "reference_chars",
    "word_errors",
    "reference_words",
    "gold_edits",
    "system_edits",
    "correct_edits",
    "clean_inputs",
    "overcorrected",
)


def metric_counts(
    sources: Sequence[str], predictions: Sequence[str], references: Sequence[str]
) -> dict[str, int]:
    """The ``COUNT_KEYS`` of parallel lists of inputs, outputs and targets."""
    if not len(sources) == len(predictions) == len(references):
        raise ValueError(
            f"sources, predictions and references must be parallel, got lengths "
            f"{len(sources)}, {len(predictions)}, {len(references)}"
        )
    counts = dict.fromkeys(COUNT_KEYS, 0)
    counts["examples"] = len(references)
    for source_text, prediction_text, reference_text in zip(
        sources, predictions, references, strict=True
    ):
        source, prediction, reference = (
            normalize(source_text),
            normalize(prediction_text),
            normalize(reference_text),
        )
        counts["exact"] += prediction == reference
        counts["exact_cased"] += normalize(prediction_text, cased=True) == normalize(
            reference_text, cased=True
        )
        counts["char_errors"] += levenshtein_distance(prediction, reference)
        counts["reference_chars"] += len(reference)

        source_words, prediction_words, reference_words = (
            source.split(),
            prediction.split(),
            reference.split(),
        )
        counts["word_errors"] += levenshtein_distance(prediction_words, reference_words)
        counts["reference_words"] += len(reference_words)

        gold = word_edits(source_words, reference_words)
        system = word_edits(source_words, prediction_words)
        counts["gold_edits"] += sum(gold.values())
        counts["system_edits"] += sum(system.values())
        counts["correct_edits"] += sum((gold & system).values())

        if source == reference:
            counts["clean_inputs"] += 1
            counts["overcorrected"] += prediction != reference
    return counts


def metrics_from_counts(counts: dict[str, float]) -> dict[str, float]:
    """The ``METRIC_KEYS`` from summed ``COUNT_KEYS`` (of one process or of all)."""
    return {
        "exact_match": _ratio(counts["exact"], counts["examples"]),
        "exact_match_cased": _ratio(counts["exact_cased"], counts["examples"]),
        "cer": _ratio(counts["char_errors"], counts["reference_chars"]),
        "wer": _ratio(counts["word_errors"], counts["reference_words"]),
        "correction_precision": _ratio(counts["correct_edits"], counts["system_edits"]),
        "correction_recall": _ratio(counts["correct_edits"], counts["gold_edits"]),
        "overcorrection_rate": _ratio(counts["overcorrected"], counts["clean_inputs"]),
        "n": float(counts["examples"]),
    }


def compute_metrics(
    sources: Sequence[str], predictions: Sequence[str], references: Sequence[str]
) -> dict[str, float]:
    """All corrector metrics over parallel lists of inputs, outputs and targets.

    Returns the keys of ``METRIC_KEYS``: exact match (case-insensitive, and cased), CER,
    WER, word-level correction precision/recall, the over-correction rate (share of
    already-correct inputs the system changed) and ``n``, the number of examples.
    """
    return metrics_from_counts(metric_counts(sources, predictions, references))
