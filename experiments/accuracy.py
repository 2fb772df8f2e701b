"""Does a trained corrector make search better? Measured beside SymSpell and identity.

Each model directory is scored beside the dictionary speller a team would otherwise ship
(``symspell``: symspellpy's compound lookup, and ``symspell-word``: its word lookup,
SymSpell's best on isolated words) and ``identity`` (change nothing), on text nobody here
wrote:

- real misspellings: the word lists in ``../shared/data/misspellings/`` and
  ``twitter_200.tsv`` (real typos in three-word context);
- correct text that must come back unchanged: song titles with their artists from
  ``../shared/data/music/`` (as written, and lower-cased as users type them), the correct
  side of the Twitter windows (everyday text), and those windows joined four at a time
  (twelve-word inputs);
- correct web search queries written by hand (``experiments/data/web_queries.txt``: not a
  real log, so a probe rather than evidence; it holds what a real log is full of and the
  sets above lack: lower-cased abbreviations and brands such as ``irs``, ``mac os x``,
  ``mlk day``); and the same queries with one real misspelling each, taken from the word
  lists above where they misspell a word of the query (a query search in miniature);
- the synthetic test split of each model's own data, and its clean queries.

A model row is in bold where it loses: on misspellings, accuracy below the better SymSpell
or CER above identity's; on correct text, more inputs changed than the harm budget allows
(1% of everyday text, 5% of song titles for a model that never saw a catalog) or than
SymSpell changes. Identity's CER on correct text is 0, so any change at all would lose to
it; the budget is the bar there.

    python -m experiments.accuracy default=outputs/runs/A/model cpu_long=outputs/runs/B/model
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from data_synth import corpus
from experiments.common import write_results
from spellfix.baselines import load_system
from spellfix.decoding import DecodingSettings
from spellfix.metrics import compute_metrics, normalize

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MISSPELLINGS = ("aspell.tsv", "wikipedia_birkbeck.tsv", "norvig_testset1.tsv", "twitter_200.tsv")
BASELINES = ("symspell", "symspell-word", "identity")
TITLES = 2000  # song titles sampled (seeded) from the Billboard file
WEB_QUERIES = Path(__file__).resolve().parent / "data" / "web_queries.txt"


@dataclass
class TestSet:
    name: str
    sources: list[str]
    targets: list[str]
    correct: bool  # every source is already right: what matters is that it stays so
    change_budget: float = 0.01  # for correct text: the share of inputs allowed to change


# How a shared data file without the expected columns is fixed (reported on error).
SHARED_COLUMNS = "the ../shared/data files name them so"


def read_pairs(path: Path) -> tuple[list[str], list[str]]:
    """(misspelled, correct) columns, read as ``spellfix-eval`` and training read them."""
    typed, correct, _ = corpus.read_pairs(path, ("misspelled", "correct"), fix=SHARED_COLUMNS)
    return typed, correct


def titles_with_artists(count: int = TITLES) -> list[str]:
    titles, artists, _ = corpus.read_pairs(
        SHARED / "music" / "billboard_hot100_1997_2021.tsv", ("title", "artist"), fix=SHARED_COLUMNS
    )
    rows = list(zip(titles, artists, strict=True))
    picked = random.Random(0).sample(rows, min(count, len(rows)))
    return [f"{title} {artist}" for title, artist in picked]


def shared_test_sets() -> list[TestSet]:
    sets = []
    for name in MISSPELLINGS:
        path = SHARED / "misspellings" / name
        if path.is_file():
            sources, targets = read_pairs(path)
            sets.append(TestSet(name, sources, targets, correct=False))
    if (SHARED / "music").is_dir():
        titles = titles_with_artists()
        sets.append(TestSet("correct: song title + artist", titles, titles, True, 0.05))
        lowered = [title.lower() for title in titles]
        sets.append(TestSet("correct: same, lower case", lowered, lowered, True, 0.05))
    twitter = SHARED / "misspellings" / "twitter_200.tsv"
    if twitter.is_file():
        _, windows = read_pairs(twitter)
        sets.append(TestSet("correct: twitter windows", windows, windows, correct=True))
        joined = [" ".join(windows[i : i + 4]) for i in range(0, len(windows) - 3, 4)]
        sets.append(TestSet("correct: 4 windows joined", joined, joined, correct=True))
    return sets


def web_query_set() -> TestSet:
    """Correct web queries, which must come back as typed (the team's hand-written probe)."""
    lines = WEB_QUERIES.read_text(encoding="utf-8").splitlines()
    queries = [line for line in lines if line.strip() and not line.startswith("#")]
    return TestSet("correct: web queries (hand-written)", queries, queries, correct=True)


def web_queries_with_real_typos() -> TestSet | None:
    """The hand-written web queries with one word replaced by a real misspelling of it
    from the word lists (seeded; queries none of whose words the lists misspell are left
    out). None when the lists are absent."""
    misspelled: dict[str, list[str]] = {}
    for name in MISSPELLINGS[:3]:
        path = SHARED / "misspellings" / name
        if not path.is_file():
            return None
        for typo, word in zip(*read_pairs(path), strict=True):
            if " " not in typo + word and typo.casefold() != word.casefold():
                misspelled.setdefault(word.casefold(), []).append(typo.casefold())
    rng = random.Random(0)
    sources, targets = [], []
    for query in web_query_set().sources:
        words = query.split()
        spots = [i for i, word in enumerate(words) if word in misspelled]
        if spots:
            spot = rng.choice(spots)
            typo = rng.choice(misspelled[words[spot]])
            sources.append(" ".join([*words[:spot], typo, *words[spot + 1 :]]))
            targets.append(query)
    return TestSet("web queries (hand-written), one real misspelling", sources, targets, False)


def synthetic_test_sets(dataset: Path, label: str, limit: int = 3000) -> list[TestSet]:
    from datasets import load_from_disk

    test = load_from_disk(str(dataset))["test"]
    picked = random.Random(0).sample(range(len(test)), min(limit, len(test)))
    noisy, clean = [test[i]["noisy"] for i in picked], [test[i]["clean"] for i in picked]
    phrases = sorted({text for text in test["clean"] if " " in text})[:limit]
    return [
        TestSet(f"synthetic test split ({label})", noisy, clean, correct=False),
        TestSet(f"correct: synthetic test phrases ({label})", phrases, phrases, correct=True),
    ]


def score(system, test_set: TestSet) -> dict:
    started = time.perf_counter()
    outputs = system.correct(test_set.sources)
    seconds = time.perf_counter() - started
    metrics = compute_metrics(test_set.sources, outputs, test_set.targets)
    changed = sum(
        normalize(o, cased=True) != normalize(s, cased=True)
        for o, s in zip(outputs, test_set.sources, strict=True)
    )
    return {
        "accuracy": metrics["exact_match"],
        "cer": metrics["cer"],
        "changed": changed / len(outputs),
        "queries_per_s": len(outputs) / max(seconds, 1e-9),
    }


def table(test_sets: list[TestSet], results: dict, models: list[str]) -> list[str]:
    lines = list(TABLE_HEADER)
    for test_set in test_sets:
        rows = results[test_set.name]
        for system, row in rows.items():
            loses = system in models and loses_to_baselines(test_set, row, rows)
            lines.append(table_row(test_set, system, row, bold=loses))
    return lines


TABLE_HEADER = (
    "| test set | n | system | accuracy | CER | changed | queries/s |",
    "|---|---:|---|---:|---:|---:|---:|",
)


def table_row(test_set: TestSet, system: str, row: dict, bold: bool) -> str:
    """One system on one test set; a row in bold is a model that loses."""
    cells = [
        test_set.name,
        str(len(test_set.sources)),
        system,
        f"{row['accuracy']:.1%}",
        f"{row['cer']:.3f}",
        f"{row['changed']:.1%}",
        f"{row['queries_per_s']:,.0f}",
    ]
    return "| " + " | ".join(f"**{cell}**" if bold else cell for cell in cells) + " |"


def loses_to_baselines(test_set: TestSet, row: dict, rows: dict) -> bool:
    """The bold rule: worse than the better SymSpell, or than identity, or over budget."""
    symspells = [rows[name] for name in ("symspell", "symspell-word") if name in rows]
    if test_set.correct:
        least_changed = min((r["changed"] for r in symspells), default=1.0)
        return row["changed"] > test_set.change_budget or row["changed"] > least_changed
    best = max((r["accuracy"] for r in symspells), default=0.0)
    identity_cer = rows["identity"]["cer"] if "identity" in rows else float("inf")
    return row["accuracy"] < best or row["cer"] > identity_cer + 1e-12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="name=model_dir pairs")
    parser.add_argument("--out", type=Path, default=Path("outputs/accuracy"))
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.models)
    test_sets = [*shared_test_sets(), web_query_set()]
    with_typos = web_queries_with_real_typos()
    if with_typos is not None:
        test_sets.append(with_typos)
    datasets = {}  # models trained on the same data share its test sets
    for name, path in models.items():
        dataset = (Path(path).parent / "dataset").resolve()
        if dataset.is_dir():
            datasets.setdefault(dataset, []).append(name)
    for dataset, names in datasets.items():
        test_sets += synthetic_test_sets(dataset, ", ".join(names))
    systems = {name: load_system(path) for name, path in models.items()}
    systems |= {name: load_system(name) for name in BASELINES}
    results = {
        test_set.name: {name: score(system, test_set) for name, system in systems.items()}
        for test_set in test_sets
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(results, indent=2))
    recipes = "\n".join(f"- `{name}`: {describe_model(Path(p))}" for name, p in models.items())
    body = "\n".join(
        [
            "Accuracy is case-insensitive exact match of the whole input; CER is the character "
            "error rate against the reference; *changed* is the share of inputs a system "
            "altered (for correct text, the harm it does). Rows in **bold**: a model that loses: "
            "on misspellings, accuracy below the better of the two SymSpell lookups or CER "
            "above identity's; on correct text, more inputs changed than the budget (1% of "
            "everyday text, 5% of song titles, which these models never saw) or than SymSpell.",
            "",
            "Models:",
            recipes,
            "",
            *table(test_sets, results, list(models)),
            "",
            "Reproduce: `.venv/bin/python -m experiments.accuracy "
            + " ".join(f"{n}=<model dir>" for n in models)
            + "`",
        ]
    )
    print(write_results("accuracy", "Accuracy on real misspellings and correct text", body))


def describe_model(model_dir: Path) -> str:
    """The recipe and decoding a model came with, from ``spellfix.json``/``decoding.json``."""
    meta = json.loads((model_dir / "spellfix.json").read_text())
    config = meta["config"]
    shape, trainer = config["model"]["config"], config["trainer"]
    decoding = json.loads((model_dir / "decoding.json").read_text())
    return (
        f"{shape['d_model']}-d, {shape['encoder_layers']}+{shape['decoder_layers']} layers, "
        f"{config['data'].get('direction', 'forward')} model, max_time {trainer['max_time']}"
        f"{trained_steps(meta)}, "
        f"noise {config['data']['noise_mode']}; decoding {decoding['mode']}, calibrated "
        f"apply_threshold {decoding['apply_threshold']:.6g}, change_penalty "
        f"{decoding['change_penalty']}, unknown_word_logprob {decoding['unknown_word_logprob']}, "
        f"lm_weight {decoding['lm_weight']}, max_candidates {decoding['max_candidates']} "
        f"(+{DecodingSettings.from_dict(decoding).phonetic_candidates} sound-alikes), "
        f"web words {web_word_count(model_dir):,} (web_word_offset "
        f"{decoding.get('web_word_offset', 'none')}, web_word_midpoint "
        f"{decoding.get('web_word_midpoint', 'none')}, web_count_discount "
        f"{config.get('decoding', {}).get('web_count_discount', 'none')}) ({model_dir})"
    )


def trained_steps(meta: dict) -> str:
    """`` (N steps)`` from the best checkpoint's name; empty when it does not say."""
    found = re.search(r"step=(\d+)", str(meta.get("best_checkpoint") or ""))
    return f" ({int(found.group(1)):,} steps)" if found else ""


def web_word_count(model_dir: Path) -> int:
    """How many web words the model's lexicon holds (0 for one built before they existed)."""
    from spellfix.decoding import LEXICON_FILE, Lexicon

    return len(Lexicon.load(model_dir / LEXICON_FILE).web)


if __name__ == "__main__":
    main()
