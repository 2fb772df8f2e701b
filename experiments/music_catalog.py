"""A music search corrector with its catalog, against SymSpell given the same catalog.

The model is trained on the Billboard titles with their artists and decodes with the
whole chart file as its catalog (``decoding.catalog``): the search team knows what it
serves. SymSpell gets the same catalog's words and word pairs at the same share of its
counts (``SymSpellSpeller(catalog=...)``), so neither knows more than the other.

Scored on the model's held-out test titles with synthetic typos (titles it never trained
on), and on correct titles with artists, which must come back unchanged.

    spellfix-train paths.run_name=music \\
        data.corpus.path=../shared/data/music/billboard_hot100_1997_2021.tsv \\
        'data.corpus.columns=[title,artist]' data.corpus.join_columns=true \\
        decoding.catalog=../shared/data/music/billboard_hot100_1997_2021.tsv \\
        model.pretrained=<the default run>/model trainer.max_time=00:00:04:00
    .venv/bin/python -m experiments.music_catalog outputs/runs/music/model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.accuracy import (
    TABLE_HEADER,
    TestSet,
    describe_model,
    score,
    table_row,
    titles_with_artists,
)
from experiments.common import write_results
from spellfix.baselines import IdentitySpeller, SymSpellSpeller
from spellfix.correct import Corrector, read_catalog

CATALOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "music"
CATALOG_FILE = CATALOG / "billboard_hot100_1997_2021.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    args = parser.parse_args()
    from datasets import load_from_disk

    dataset = (args.model_dir.parent / "dataset").resolve()
    test = load_from_disk(str(dataset))["test"]
    test_sets = [
        TestSet("held-out titles with typos", list(test["noisy"]), list(test["clean"]), False),
        TestSet("correct: titles + artists", titles_with_artists(), titles_with_artists(), True),
    ]
    decoding = json.loads((args.model_dir / "decoding.json").read_text())
    catalog = read_catalog(CATALOG_FILE)
    systems = {
        "music model + catalog": Corrector.from_pretrained(args.model_dir),
        "symspell + catalog": SymSpellSpeller(
            catalog=catalog, catalog_weight=decoding["catalog_weight"]
        ),
        "identity": IdentitySpeller(),
    }
    lines = list(TABLE_HEADER)
    for test_set in test_sets:
        rows = {name: score(system, test_set) for name, system in systems.items()}
        for name, row in rows.items():
            symspell = rows["symspell + catalog"]
            loses = name == "music model + catalog" and (
                row["changed"] > 0.01
                if test_set.correct
                else row["accuracy"] < symspell["accuracy"]
            )
            lines.append(table_row(test_set, name, row, bold=loses))
    body = "\n".join(
        [
            "The model row is in **bold** where it loses to SymSpell with the catalog, or "
            "changes more than 1% of correct titles.",
            "",
            f"Model: {describe_model(args.model_dir)}; catalog `{CATALOG_FILE.name}` "
            f"({len(catalog)} distinct words), constraint `{decoding['constraint']}`.",
            "",
            *lines,
            "",
            f"Reproduce: see the commands in `{Path(__file__).name}`'s docstring.",
        ]
    )
    print(write_results("music_catalog", "Music search with a catalog", body))


if __name__ == "__main__":
    main()
