"""Noisy queries per second: data_synth's NoiseModel vs nlpaug's KeyboardAug and RandomCharAug.

nlpaug is what a user would otherwise reach for to make typos. All three runners corrupt the
same 20,000 short phrases on one core, in alternating order over several rounds, in one run;
the table gives each runner's median throughput, NoiseModel's speed as a ratio over it, and
how realistic the output is (share of phrases changed, mean edit distance of the changed
ones, share that gained a digit or symbol, and examples).

    taskset -c 0 .venv/bin/python -m experiments.bench_noise   # about a minute
    .venv/bin/python -m experiments.bench_noise --phrases 500 --rounds 1   # smoke test
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

import nlpaug.augmenter.char as nac

from data_synth.corpus import read_corpus
from data_synth.noise import NoiseModel
from data_synth.paths import CONF_DIR
from data_synth.stats import edit_distance
from experiments.common import write_results

Runner = Callable[[list[str]], list[str]]
TABLE_HEADER = (
    "| runner | phrases/s | NoiseModel speed-up | phrases changed "
    "| mean edit distance (changed) | gained a digit/symbol |\n|---|---:|---:|---:|---:|---:|"
)


def noise_model_runner(profile: str) -> Runner:
    model = NoiseModel.from_profile(profile, seed=0)
    return lambda phrases: [c.noisy for c in model.corrupt_batch(phrases)]


def nlpaug_runner(augmenter) -> Runner:
    def run(phrases: list[str]) -> list[str]:
        # augment() returns a list of variants (one by default) per input text
        return [augmenter.augment(phrase)[0] for phrase in phrases]

    return run


def short_phrases(count: int, seed: int) -> list[str]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "corpus" / "builtin.yaml"))
    cfg.update(builtin_words=count, builtin_bigrams=count)
    texts = read_corpus(cfg).texts
    return random.Random(seed).sample(texts, min(count, len(texts)))


def realism(clean: list[str], noisy: list[str]) -> dict[str, float]:
    changed = [(n, c) for n, c in zip(noisy, clean, strict=True) if n != c]
    gained_symbols = sum(
        any(not (ch.isalpha() or ch.isspace()) and ch not in c for ch in n) for n, c in changed
    )
    distances = [edit_distance(n, c) for n, c in changed]
    return {
        "changed": len(changed) / len(clean),
        "mean_distance": statistics.fmean(distances) if distances else 0.0,
        "gained_symbols": gained_symbols / len(clean),
    }


def pin_to_one_core() -> str:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) > 1:
        os.sched_setaffinity(0, {allowed[0]})
    return f"pinned to CPU {sorted(os.sched_getaffinity(0))[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="default", help="NoiseModel profile to time")
    parser.add_argument("--note", default="", help="a line about the machine's load")
    args = parser.parse_args()
    pinned = pin_to_one_core()
    random.seed(0)  # nlpaug draws from the global random module
    phrases = short_phrases(args.phrases, seed=0)
    runners: dict[str, Runner] = {
        f"data_synth NoiseModel ({args.profile})": noise_model_runner(args.profile),
        "nlpaug KeyboardAug (defaults)": nlpaug_runner(nac.KeyboardAug()),
        "nlpaug RandomCharAug (defaults)": nlpaug_runner(nac.RandomCharAug()),
    }
    timings: dict[str, list[float]] = {name: [] for name in runners}
    outputs: dict[str, list[str]] = {}
    order = list(runners)
    for round_index in range(args.rounds):
        for name in order if round_index % 2 == 0 else reversed(order):
            start = time.perf_counter()
            outputs[name] = runners[name](phrases)
            timings[name].append(time.perf_counter() - start)

    ours = order[0]
    speed = {name: len(phrases) / statistics.median(times) for name, times in timings.items()}
    rows = []
    for name in order:
        quality = realism(phrases, outputs[name])
        rows.append(
            f"| {name} | {speed[name]:,.0f} | {speed[ours] / speed[name]:.1f}x "
            f"| {quality['changed']:.1%} | {quality['mean_distance']:.2f} "
            f"| {quality['gained_symbols']:.1%} |"
        )
    examples = [
        "| " + " | ".join([phrases[i], *(outputs[name][i] for name in order)]) + " |"
        for i in range(0, len(phrases), max(1, len(phrases) // 8))
    ][:8]
    body = f"""\
{len(phrases):,} short phrases (the built-in corpus: frequent English words and word pairs),
one core ({pinned}), {args.rounds} rounds in alternating order; median throughput per runner.
{args.note}

{TABLE_HEADER}
{chr(10).join(rows)}

NoiseModel leaves its profile's `clean_share` of phrases unchanged on purpose (the
corrector must learn to leave correct input alone); nlpaug changes nearly every phrase and,
with its defaults, writes capitals, digits and symbols into words. nlpaug's defaults also
skip words under four characters (`min_char=4`), so on these short phrases it does little
work per phrase; the speed-up grows with phrase length.

| clean | {" | ".join(order)} |
|---|{"---|" * len(order)}
{chr(10).join(examples)}
"""
    path = write_results("bench_noise", "Noise throughput: NoiseModel vs nlpaug", body)
    print(body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
