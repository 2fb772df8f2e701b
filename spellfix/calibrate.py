"""Choose the decoding weights and the confidence thresholds on the validation split.

A corrector must first do no harm, so the thresholds are set by what they cost on
correct queries: ``apply_threshold`` is the lowest confidence at which at most
``target_overcorrection`` (1% by default) of correct validation queries would be
changed, ``suggest_threshold`` the same for "did you mean" at
``target_oversuggestion``. Among a small grid of weights (change penalty, log-prob
of an unknown word), the one that corrects the most noisy
validation queries under those thresholds wins.

Correct queries with names the lexicon does not know are where a dictionary speller
does its harm, and a lexicon built from the training corpus knows every word of the
validation split. So a share of the validation vocabulary is hidden from the lexicon
while calibrating (``hidden_word_share``, 10%): those words stand for the names and
slang of real queries, and a change to them counts as harm. They are priced as what such
words mostly are, words only a web word list knows (95% of the words of correct song
titles that the lexicon lacks are web words), each at its own frequency. Priced instead
as strings nobody has seen, every hidden word near a common one became a near-certain
change; the 1% budget could then only be held by thresholds so close to 1 that which
words a seed happened to hide decided the model's accuracy on real typos (42% or 62.5%
on Twitter for two draws on one model).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from spellfix.decoding import (
    DecodingSettings,
    Lattice,
    NoisyChannelDecoder,
    SearchResult,
    is_isolated_word,
    split_words,
)

# The weights tried; each is a log-odds scale, so a coarse grid brackets the useful range.
CHANGE_PENALTIES = (0.0, 2.0, 4.0)
UNKNOWN_WORD_OFFSETS = (4.0, 0.0, -4.0, -8.0)
# A change is never applied when it is less likely than leaving the word alone, and never
# offered when it is this unlikely.
MIN_APPLY_THRESHOLD = 0.5
MIN_SUGGEST_THRESHOLD = 0.25


@dataclass
class CalibrationReport:
    """What calibration chose and measured (saved in ``spellfix.json``)."""

    settings: DecodingSettings
    noisy_queries: int
    clean_queries: int
    hidden_words: int
    accuracy: float  # noisy validation queries corrected exactly, at the chosen thresholds
    overcorrection: float  # correct validation queries changed
    oversuggestion: float  # correct validation queries given a suggestion
    grid: list[dict]
    seconds: float

    def summary(self) -> str:
        s = self.settings
        return (
            f"calibrated on {self.noisy_queries} noisy and {self.clean_queries} correct "
            f"validation queries ({self.hidden_words} words hidden, priced as web words): "
            f"lm_weight={s.lm_weight}, change_penalty={s.change_penalty}, "
            f"known_word_penalty={s.known_word_penalty}, "
            f"unknown_word_logprob={s.unknown_word_logprob}, "
            # Six digits: a threshold of 0.99986 is not one of 1.000.
            f"apply_threshold={s.apply_threshold:.6g} "
            f"(isolated words {s.isolated_word_apply_threshold:.6g}), "
            f"suggest_threshold={s.suggest_threshold:.6g}"
            f" -> accuracy {self.accuracy:.1%}, correct queries changed {self.overcorrection:.1%}"
        )

    def to_dict(self) -> dict:
        return {
            "settings": self.settings.to_dict(),
            "noisy_queries": self.noisy_queries,
            "clean_queries": self.clean_queries,
            "hidden_words": self.hidden_words,
            "accuracy": self.accuracy,
            "overcorrection": self.overcorrection,
            "oversuggestion": self.oversuggestion,
            "grid": self.grid,
            "seconds": self.seconds,
        }


def calibrate(
    decoder: NoisyChannelDecoder,
    noisy: Sequence[str],
    clean: Sequence[str],
    *,
    target_overcorrection: float = 0.01,
    target_oversuggestion: float = 0.05,
    hidden_word_share: float = 0.1,
    max_queries: int = 1500,
    seed: int = 0,
) -> CalibrationReport:
    """Pick weights and thresholds for ``decoder`` from validation (noisy, clean) pairs."""
    started = time.perf_counter()
    rng = random.Random(seed)
    vocabulary = sorted({w.key for text in clean for w in split_words(text) if w.key})
    hidden = set(rng.sample(vocabulary, round(hidden_word_share * len(vocabulary))))

    def has_hidden(text: str) -> bool:
        return any(w.key in hidden for w in split_words(text))

    typo_pairs = [(n, c) for n, c in zip(noisy, clean, strict=True) if n != c and not has_hidden(c)]
    typo_pairs = _stratified(typo_pairs, max_queries, rng, key=lambda pair: pair[1])
    correct = _stratified(sorted(set(clean)), max_queries, rng, key=lambda text: text)
    if not typo_pairs or not correct:
        raise ValueError("calibration needs noisy and correct validation queries; got none")

    decoder.hidden = frozenset(hidden)
    try:
        typo_lattices = decoder.lattices([n for n, _ in typo_pairs])
        correct_lattices = decoder.lattices(correct)
        targets = [target for _, target in typo_pairs]
        base = decoder.settings
        axes = {
            "change_penalty": CHANGE_PENALTIES,
            "unknown_word_logprob": tuple(
                base.unknown_word_logprob + offset for offset in UNKNOWN_WORD_OFFSETS
            ),
        }
        tried: dict[tuple, dict] = {}

        def measure(settings: DecodingSettings) -> dict:
            key = tuple(getattr(settings, name) for name in axes)
            if key not in tried:
                tried[key] = _measure(
                    decoder,
                    settings,
                    typo_lattices,
                    targets,
                    correct_lattices,
                    target_overcorrection,
                    target_oversuggestion,
                )
                tried[key].update(zip(axes, key, strict=True))
            return tried[key]

        # Every combination: the objective is flat and noisy near its top, so a greedy
        # walk over one weight at a time ends in different places for similar data.
        current, best = base, measure(base)
        for values in itertools.product(*axes.values()):
            candidate = base.updated(**dict(zip(axes, values, strict=True)))
            row = measure(candidate)
            if (row["accuracy"], -row["overcorrection"]) > (
                best["accuracy"],
                -best["overcorrection"],
            ):
                current, best = candidate, row
    finally:
        decoder.hidden = frozenset()
    chosen = current.updated(
        apply_threshold=best["apply_threshold"],
        isolated_word_apply_threshold=best["isolated_word_apply_threshold"],
        suggest_threshold=best["suggest_threshold"],
    )
    grid = list(tried.values())
    return CalibrationReport(
        settings=chosen,
        noisy_queries=len(typo_pairs),
        clean_queries=len(correct),
        hidden_words=len(hidden),
        accuracy=best["accuracy"],
        overcorrection=best["overcorrection"],
        oversuggestion=best["oversuggestion"],
        grid=grid,
        seconds=time.perf_counter() - started,
    )


def _measure(
    decoder: NoisyChannelDecoder,
    settings: DecodingSettings,
    typo_lattices: list[Lattice],
    targets: list[str],
    correct_lattices: list[Lattice],
    target_overcorrection: float,
    target_oversuggestion: float,
) -> dict:
    """Thresholds that hold the targets on correct queries, and the accuracy they leave.

    Queries of one word and longer ones get thresholds of their own: context makes the
    confidences of the second kind sharper, so one threshold would serve neither.
    """
    risks = [
        (is_isolated_word(lat), _risk(decoder.search(lat, settings))) for lat in correct_lattices
    ]
    thresholds = {}
    for isolated in (True, False):
        stratum = [risk for kind, risk in risks if kind == isolated]
        thresholds[isolated] = _threshold(stratum, target_overcorrection, MIN_APPLY_THRESHOLD)
    all_risks = [risk for _, risk in risks]
    suggest = min(
        *thresholds.values(),
        _threshold(all_risks, target_oversuggestion, MIN_SUGGEST_THRESHOLD),
    )
    right = sum(
        _applied(lat, decoder.search(lat, settings), thresholds[is_isolated_word(lat)]).casefold()
        == target.casefold()
        for lat, target in zip(typo_lattices, targets, strict=True)
    )
    changed = sum(risk >= thresholds[kind] and risk > 0 for kind, risk in risks)
    return {
        "apply_threshold": thresholds[False],
        "isolated_word_apply_threshold": thresholds[True],
        "suggest_threshold": suggest,
        "accuracy": right / len(targets),
        "overcorrection": changed / len(risks),
        "oversuggestion": _share_at_least(all_risks, suggest),
    }


def _stratified(items: list, count: int, rng: random.Random, key) -> list:
    """Up to ``count`` items, half of them multi-word queries where there are enough.

    Corpora such as the built-in one are mostly single words, but context decides most
    corrections of longer queries; an even mix keeps the weights from serving one kind.
    """
    single = [item for item in items if " " not in key(item).strip()]
    multi = [item for item in items if " " in key(item).strip()]
    take_multi = min(len(multi), count // 2)
    take_single = min(len(single), count - take_multi)
    take_multi = min(len(multi), count - take_single)
    return rng.sample(single, take_single) + rng.sample(multi, take_multi)


def _risk(result: SearchResult) -> float:
    """The confidence of the surest change the decoder would make (0 when none)."""
    return max(
        (c for e, c in zip(result.path, result.confidences, strict=True) if e.changed),
        default=0.0,
    )


def _threshold(risks: list[float], target: float, floor: float) -> float:
    """The lowest threshold at which at most ``target`` of the correct queries change."""
    allowed = int(target * len(risks))
    ranked = sorted(risks, reverse=True)
    if allowed >= len(ranked):
        return floor
    # Above the (allowed+1)-th largest risk, only the `allowed` largest reach the threshold.
    boundary = ranked[allowed]
    return min(1.0, max(floor, _just_above(boundary)))


def _just_above(value: float) -> float:
    return value + 1e-9 if value > 0 else 0.0


def _share_at_least(risks: list[float], threshold: float) -> float:
    return sum(risk >= threshold and risk > 0 for risk in risks) / len(risks)


def _applied(lattice: Lattice, result: SearchResult, threshold: float) -> str:
    edges = [
        e
        for e, c in zip(result.path, result.confidences, strict=True)
        if e.changed and c >= threshold
    ]
    return NoisyChannelDecoder._rewrite(lattice, edges)
