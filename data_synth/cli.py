"""``spellfix-synth``: build a (noisy, clean, ops) dataset from a corpus and a noise profile.

    spellfix-synth corpus.path=songs.csv corpus.columns=[title,artist] output_dir=data/songs

``synthesize(cfg)`` does the work and is what ``make train`` and the tests call with a
composed config; ``main`` is the Hydra shim that turns bad input into one line on
stderr and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import random
from pathlib import Path

from omegaconf import DictConfig

from data_synth.app import Interrupted, hydra_app
from data_synth.build import build_dataset, load_dataset_dir, read_manifest
from data_synth.corpus import CorpusError
from data_synth.noise.profile import NoiseConfigError

_BAR_WIDTH = 30


def synthesize(cfg: DictConfig) -> Path:
    """Build the dataset described by a composed ``synth`` config and print a summary."""
    path = build_dataset(cfg.corpus, cfg.noise, cfg.build, cfg.output_dir)
    print(summary(path, cfg.show_examples))
    return path


def summary(path: Path, show_examples: int) -> str:
    """What was written where: corpus counts, rows per split, op histogram, examples."""
    manifest = read_manifest(path)
    lines = [f"wrote {path} (fingerprint {manifest['fingerprint']})"]
    report = manifest["corpus_report"]
    lines.append(f"corpus {report['location']}: read {report['read']}, kept {report['kept']}")
    dropped = ("undecodable", "malformed", "empty", "too_short", "too_long", "duplicates")
    counts = ", ".join(f"{report[key]} {key.replace('_', ' ')}" for key in dropped if report[key])
    if counts:
        lines.append(f"  dropped: {counts}")
    for split, rows in manifest["counts"].items():
        queries = manifest["clean_queries"][split]
        lines.append(f"{split:>10}: {rows} rows from {queries} clean queries")
    train_stats = manifest["op_stats"]["train"]
    lines.append(f"operations in train ({train_stats['unchanged']} rows left clean):")
    most = max(train_stats["ops"].values(), default=1)
    for op, count in train_stats["ops"].items():
        bar = "#" * max(1, round(_BAR_WIDTH * count / most))
        lines.append(f"  {op:<20} {count:>8}  {bar}")
    train = load_dataset_dir(path)["train"]
    picks = random.Random(0).sample(range(len(train)), min(show_examples, len(train)))
    if picks:
        lines.append("examples (noisy -> clean  [ops]):")
    for row in train.select(sorted(picks)):
        lines.append(f"  {row['noisy']!r} -> {row['clean']!r}  [{', '.join(row['ops'])}]")
    return "\n".join(lines)


@hydra_app("synth", "spellfix-synth", user_errors=(CorpusError, NoiseConfigError, OSError))
def main(cfg: DictConfig) -> None:
    """``spellfix-synth``: bad input ends in one line on stderr and exit status 2."""
    try:
        synthesize(cfg)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {cfg.output_dir} was not written") from None


if __name__ == "__main__":
    main()
