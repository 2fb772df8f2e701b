"""Which recipe buys the most accuracy per CPU-minute? Channel models side by side.

Each model is decoded the same way (the lexicon it was saved with, which for the built-in
corpus is the same for every recipe, and weights and thresholds calibrated on its own
validation split with today's defaults of ``conf/decoding``), so the rows differ only in
what training made of the channel: tokenizer, size, minutes.

    python -m experiments.recipes "char, 5 min=outputs/runs/A/model@5" ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from data_synth.build import load_dataset_dir
from data_synth.paths import CONF_DIR
from experiments.accuracy import SHARED, TestSet, read_pairs, score, titles_with_artists
from experiments.common import write_results
from spellfix.calibrate import calibrate
from spellfix.correct import TorchRunner
from spellfix.decoding import LEXICON_FILE, DecodingSettings, Lexicon, NoisyChannelDecoder

SETS = ("aspell.tsv", "wikipedia_birkbeck.tsv", "norvig_testset1.tsv", "twitter_200.tsv")


class _Decoded:
    """A calibrated decoder with the ``correct(texts) -> list[str]`` of the baselines."""

    def __init__(self, decoder: NoisyChannelDecoder) -> None:
        self.decoder = decoder

    def correct(self, texts: list[str]) -> list[str]:
        return [c.correction for c in self.decoder.correct(texts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="'name=model_dir@minutes' entries")
    args = parser.parse_args()
    conf = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "decoding" / "default.yaml"))
    settings = DecodingSettings.from_dict(
        {k: v for k, v in conf.items() if k in DecodingSettings.__dataclass_fields__}
    )
    titles = titles_with_artists()
    test_sets = [TestSet(name, *read_pairs(SHARED / "misspellings" / name), False) for name in SETS]
    test_sets.append(TestSet("titles changed", titles, titles, True))
    header = ["recipe", "minutes", *[t.name.removesuffix(".tsv") for t in test_sets]]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(test_sets)]
    for entry in args.models:
        name, rest = entry.split("=", 1)
        path, minutes = rest.rsplit("@", 1)
        model_dir = Path(path)
        runner = TorchRunner.from_path(model_dir)
        lexicon = Lexicon.load(model_dir / LEXICON_FILE)
        decoder = NoisyChannelDecoder(lexicon, settings, runner.score)
        validation = load_dataset_dir(model_dir.parent / "dataset")["validation"]
        report = calibrate(
            decoder,
            list(validation["noisy"]),
            list(validation["clean"]),
            target_overcorrection=conf["target_overcorrection"],
            target_oversuggestion=conf["target_oversuggestion"],
            hidden_word_share=conf["hidden_word_share"],
            max_queries=conf["calibration_queries"],
        )
        decoder.settings = report.settings
        cells = []
        for test_set in test_sets:
            row = score(_Decoded(decoder), test_set)
            cells.append(f"{row['changed' if test_set.correct else 'accuracy']:.1%}")
        lines.append(f"| {name} | {minutes} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    body = "\n".join(
        [
            "Accuracy on the real misspelling lists, and the share of correct song titles "
            "with artists changed, for channel models trained by different recipes on the "
            "built-in corpus. Minutes are training minutes on this machine's two cores.",
            "",
            *lines,
            "",
            'Reproduce: `.venv/bin/python -m experiments.recipes "<name>=<model dir>@<minutes>"'
            " ...`",
        ]
    )
    print(write_results("recipes", "Recipes: accuracy per CPU-minute", body))


if __name__ == "__main__":
    main()
