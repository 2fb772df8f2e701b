"""How good are trained correctors on misspellings real people made?

Scores each given model directory beside the dictionary speller a user would
otherwise reach for (``symspell``, symspellpy with its bundled English dictionaries)
and the do-nothing ``identity`` baseline, with ``spellfix.evaluate``, on:

- the three real misspelling lists in ``../shared/data/misspellings/`` (single
  words, Aspell / Wikipedia / Norvig: out of the query domain the models trained on);
- the synthetic test split of each model's own training data (queries never seen in
  training, with the typos of the noise profile).

    python -m experiments.accuracy default=outputs/runs/A/model cpu_long=outputs/runs/B/model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from data_synth.paths import CONF_DIR
from experiments.common import write_results
from spellfix.evaluate import evaluate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "misspellings"
REAL_FILES = ("aspell.tsv", "wikipedia_birkbeck.tsv", "norvig_testset1.tsv")


def score(pairs: Path, systems: list[str], output_dir: Path) -> dict:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                f"pairs={pairs}",
                f"systems=[{','.join(systems)}]",
                f"output_dir={output_dir}",
                "show_errors=0",
            ],
        )
    return evaluate(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="name=model_dir pairs")
    parser.add_argument("--out", type=Path, default=Path("outputs/accuracy"))
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.models)
    systems = [*models.values(), "symspell", "identity"]
    names = {path: name for name, path in models.items()}
    names.update(symspell="symspell", identity="identity")

    test_sets = [(f, SHARED / f) for f in REAL_FILES if (SHARED / f).is_file()]
    for name, path in models.items():
        dataset = (Path(path).parent / "dataset").resolve()
        # Cached datasets are named by their fingerprint: the same name is the same data.
        if dataset.is_dir() and dataset.name not in {p.name for _, p in test_sets}:
            test_sets.append((f"synthetic test split ({name}'s data)", dataset))

    header = [
        "| test set | pairs | system | accuracy | CER | correction P | correction R "
        "| over-correction | queries/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows, best = [], []
    raw = {}
    for label, pairs in test_sets:
        result = score(pairs, systems, args.out / label.split(" ")[0])
        raw[label] = result
        top = max(zip(systems, result["systems"], strict=True), key=lambda s: s[1]["exact_match"])
        best.append(f"- {label}: best is `{names[top[0]]}` ({top[1]['exact_match']:.1%})")
        for system, row in zip(systems, result["systems"], strict=True):
            rows.append(
                f"| {label} | {int(row['n'])} | {names[system]} | {row['exact_match']:.1%} | "
                f"{row['cer']:.3f} | {_pct(row['correction_precision'])} | "
                f"{_pct(row['correction_recall'])} | {_pct(row['overcorrection_rate'])} | "
                f"{row['queries_per_s']:,.0f} |"
            )
    leaks = [
        f"- `{name}` was trained on {share:.1%} of the clean queries of the {label}: its row "
        "there is not a held-out score."
        for label, pairs in test_sets
        if pairs.is_dir()
        for name, path in models.items()
        if (share := seen_in_training(Path(path), pairs))
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(raw, indent=2, default=str))
    recipes = "\n".join(
        f"- `{name}`: {describe_model(Path(path))}" for name, path in models.items()
    )
    body = "\n".join(
        [
            "Accuracy is case-insensitive exact match of the whole query; CER is character "
            "error rate against the reference; correction precision/recall count word "
            "edits (see `spellfix.metrics`); over-correction is the share of already-correct "
            "inputs a system changed (empty when a set has none).",
            "",
            "Models:",
            recipes,
            "",
            *header,
            *rows,
            "",
            "Best accuracy per test set:",
            *best,
            "",
            "Held out? (clean queries of each synthetic test split found in a model's own "
            "training split):",
            *(leaks or ["- every synthetic test split is held out from every model"]),
            "",
            "Reproduce: `.venv/bin/python -m experiments.accuracy "
            + " ".join(f"{n}=<model dir>" for n in models)
            + "`",
        ]
    )
    print(
        write_results("accuracy", "Accuracy on real and synthetic misspellings", body).read_text()
    )


def seen_in_training(model_dir: Path, dataset_dir: Path) -> float:
    """Share of ``dataset_dir``'s test clean queries that are in the model's training split.

    Splits are made by clean query, so a model's own split is held out by construction;
    another recipe's split (a different corpus or seed) may not be.
    """
    from datasets import load_from_disk

    own = model_dir.parent / "dataset"
    if not own.is_dir():
        return 0.0
    trained_on = set(load_from_disk(str(own))["train"]["clean"])
    tested = set(load_from_disk(str(dataset_dir))["test"]["clean"])
    return len(tested & trained_on) / len(tested)


def describe_model(model_dir: Path) -> str:
    """The recipe a model came from, read from the ``spellfix.json`` training wrote."""
    meta = json.loads((model_dir / "spellfix.json").read_text())
    config = meta["config"]
    shape = config["model"]["config"]
    trainer = config["trainer"]
    return (
        f"{shape['d_model']}-d, {shape['encoder_layers']}+{shape['decoder_layers']} layers, "
        f"{trainer['max_steps']} steps planned (max_time {trainer['max_time']}), "
        f"noise {config['data']['noise_mode']}, {config['data']['corpus']['source']} corpus "
        f"({model_dir})"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1%}"


if __name__ == "__main__":
    main()
