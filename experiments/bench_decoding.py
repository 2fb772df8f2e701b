"""What lexicon decoding costs: the noisy-channel decoder against plain greedy generation.

Same export, same ONNX Runtime sessions, same queries, batches of 32, runners alternated
batch by batch so machine noise hits all of them alike:

- ``channel``: what the trained corrector does (``spellfix.decoding``): candidates from
  the lexicon, the model's teacher-forced scores, the Viterbi search, confidences. Run
  twice: with an empty score cache each round (``cold``: every word of the round is new)
  and with the cache a serving process keeps (``warm``: words seen before cost nothing);
- ``greedy``: the KV-cache greedy loop over the very same graphs, the unconstrained
  decoding a plain seq2seq corrector does;
- ``symspell``: symspellpy's compound lookup, what a search team would otherwise run.

Queries are the noisy side of the model's own synthetic test split.

    .venv/bin/python -m experiments.bench_decoding outputs/latest/onnx
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from experiments.common import write_results
from spellfix.baselines import SymSpellSpeller
from spellfix.decoding import load_decoder
from spellfix.export.ort_runner import OrtSeq2Seq

BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--queries", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from datasets import load_from_disk

    dataset = (args.export_dir.parent / "dataset").resolve()
    test = load_from_disk(str(dataset))["test"]
    picked = random.Random(0).sample(range(len(test)), args.queries)
    queries = [test[i]["noisy"] for i in picked]
    batches = [queries[i : i + BATCH] for i in range(0, len(queries), BATCH)]

    runner = OrtSeq2Seq(args.export_dir, intra_op_threads=2, batch_size=BATCH)
    warm = load_decoder(args.export_dir, runner)
    warm.correct(queries[:BATCH])  # builds the lexicon's index once, outside the timing
    symspell = SymSpellSpeller()
    runners = {
        "channel (cold cache)": lambda batch: cold[0].correct(batch),
        "channel (warm cache)": warm.correct,
        "greedy generation": runner.correct,
        "symspell": symspell.correct,
    }
    seconds: dict[str, float] = dict.fromkeys(runners, 0.0)
    for _ in range(args.rounds):
        cold = [warm.with_scorer(runner.score)]  # an empty score cache every round
        for index, batch in enumerate(batches):
            names = list(runners)
            rotation = index % len(names)
            for name in names[rotation:] + names[:rotation]:
                started = time.perf_counter()
                runners[name](batch)
                seconds[name] += time.perf_counter() - started
    total = args.rounds * len(queries)
    rates = {name: total / spent for name, spent in seconds.items()}
    greedy = rates["greedy generation"]
    lines = [
        "| decoder | queries/s | time per query vs greedy |",
        "|---|---:|---:|",
        *(
            f"| {name} | {rate:,.0f} | {greedy / rate:.2f}x |"
            for name, rate in sorted(rates.items(), key=lambda item: -item[1])
        ),
    ]
    cold_ratio = greedy / rates["channel (cold cache)"]
    verdict = (
        f"Channel decoding with a cold cache takes {cold_ratio:.1f}x the time of greedy "
        f"generation per query ({'within' if cold_ratio <= 2 else '**over**'} the 2x budget)"
        f"; with the cache a serving process keeps, {greedy / rates['channel (warm cache)']:.1f}x."
    )
    body = "\n".join(
        [
            f"Export: `{args.export_dir}`; {args.queries} queries from `{dataset}` [test], "
            f"batches of {BATCH}, {args.rounds} rounds, ONNX Runtime with 2 threads.",
            "",
            *lines,
            "",
            verdict,
            "",
            f"Median query length: {np.median([len(q.split()) for q in queries]):.0f} words.",
            "",
            f"Reproduce: `.venv/bin/python -m experiments.bench_decoding {args.export_dir}`",
        ]
    )
    print(write_results("bench_decoding", "Decoding cost: lexicon channel vs greedy", body))


if __name__ == "__main__":
    main()
