"""Noisy queries per second: data_synth's NoiseModel vs nlpaug's KeyboardAug and RandomCharAug.

nlpaug is what a user would otherwise reach for to make typos. All runners corrupt the same
20,000 short phrases on one core, in alternating order over several rounds, in one run, each
through its batch call (``corrupt_batch``, ``augment(list)``) and after a full garbage
collection, so that no runner pays for another's garbage. NoiseModel is timed twice: on its
first pass over the phrases (a fresh model, nothing cached) and on a repeat pass (what every
epoch after the first costs when training re-noises the corpus). The table gives each
runner's median throughput, NoiseModel's speed as a ratio over it, how realistic the output is
(share of phrases changed, mean edit distance of the changed ones, share that gained a digit
or symbol) and examples. A last line times the least any implementation of NoiseModel's API
can do per phrase (build its result, draw its random numbers), to show the ceiling.

    taskset -c 0 .venv/bin/python -m experiments.bench_noise   # about a minute
    .venv/bin/python -m experiments.bench_noise --phrases 500 --rounds 1   # smoke test
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from collections.abc import Callable

import nlpaug.augmenter.char as nac

from data_synth.corpus import read_corpus
from data_synth.noise import Corruption, NoiseModel
from data_synth.paths import CONF_DIR
from data_synth.stats import edit_distance
from experiments.common import write_results

Runner = Callable[[list[str]], list[str]]
# Each round calls a runner factory untimed, then times the runner it returns.
RunnerFactory = Callable[[], Runner]
TABLE_HEADER = (
    "| runner | phrases/s | NoiseModel repeat-pass speed-up | phrases changed "
    "| mean edit distance (changed) | gained a digit/symbol |\n|---|---:|---:|---:|---:|---:|"
)
DRAWS_PER_NOISY_QUERY = 6  # clean share, three query habits, typo count, one typo operation


def noise_model_first_pass(profile: str) -> RunnerFactory:
    """A fresh model every round: nothing of the phrases is cached yet."""

    def fresh() -> Runner:
        model = NoiseModel.from_profile(profile, seed=0)
        return lambda phrases: [c.noisy for c in model.corrupt_batch(phrases)]

    return fresh


def noise_model_repeat_pass(profile: str, phrases: list[str]) -> RunnerFactory:
    """One model for all rounds, which has seen the phrases once before the first round."""
    model = NoiseModel.from_profile(profile, seed=0)
    model.corrupt_batch(phrases)

    def run(batch: list[str]) -> list[str]:
        return [c.noisy for c in model.corrupt_batch(batch)]

    return lambda: run


def nlpaug_runner(augmenter) -> RunnerFactory:
    # augment() on a list returns one augmented string per input: nlpaug's batch call, which
    # skips the per-call checks of augment(str) and is its fastest single-core path.
    return lambda: augmenter.augment


def least_possible_runner(clean_share: float) -> Runner:
    """Only what NoiseModel's API forces per phrase: its draws and a Corruption with ops.

    No typo is computed (the `noisy` text is a fixed slice), so this is a ceiling for any
    pure-Python NoiseModel with this interface and these operations, not a runner.
    """
    draw = random.Random(0).random

    def run(phrases: list[str]) -> list[str]:
        results = []
        for phrase in phrases:
            if draw() < clean_share:
                results.append(Corruption(phrase, phrase, []))
                continue
            for _ in range(DRAWS_PER_NOISY_QUERY - 1):
                draw()
            results.append(Corruption(phrase[1:], phrase, ["delete"]))
        return [c.noisy for c in results]

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


def micros(phrases_per_second: float) -> float:
    return 1e6 / phrases_per_second


def timed(runner: Runner, phrases: list[str]) -> tuple[float, list[str]]:
    gc.collect()  # each runner starts from an empty heap of garbage, and pays for its own
    start = time.perf_counter()
    outputs = runner(phrases)
    return time.perf_counter() - start, outputs


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
    ours = f"data_synth NoiseModel ({args.profile}), repeat pass"
    first = f"data_synth NoiseModel ({args.profile}), first pass"
    factories: dict[str, RunnerFactory] = {
        ours: noise_model_repeat_pass(args.profile, phrases),
        first: noise_model_first_pass(args.profile),
        "nlpaug KeyboardAug (defaults)": nlpaug_runner(nac.KeyboardAug()),
        "nlpaug RandomCharAug (defaults)": nlpaug_runner(nac.RandomCharAug()),
    }
    least = least_possible_runner(NoiseModel.from_profile(args.profile).config["clean_share"])
    timings: dict[str, list[float]] = {name: [] for name in [*factories, "least"]}
    outputs: dict[str, list[str]] = {}
    order = list(factories)
    for round_index in range(args.rounds):
        for name in order if round_index % 2 == 0 else reversed(order):
            seconds, outputs[name] = timed(factories[name](), phrases)
            timings[name].append(seconds)
        timings["least"].append(timed(least, phrases)[0])

    speed = {name: len(phrases) / statistics.median(times) for name, times in timings.items()}
    keyboard = speed["nlpaug KeyboardAug (defaults)"]
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
one core ({pinned}), {args.rounds} rounds in alternating order, batch calls, a full garbage
collection before each timing; median throughput per runner. {args.note}

{TABLE_HEADER}
{chr(10).join(rows)}

NoiseModel leaves its profile's `clean_share` of phrases unchanged on purpose (the
corrector must learn to leave correct input alone); nlpaug changes nearly every phrase and,
with its defaults, writes capitals, digits and symbols into words. nlpaug's defaults also
skip words under four characters (`min_char=4`), so on these short phrases it does little
work per phrase; the speed-up grows with phrase length.

**Against the 10x target** (issue 2: at least 10x KeyboardAug): NoiseModel runs at
{speed[ours] / keyboard:.1f}x on a repeat pass and {speed[first] / keyboard:.1f}x on a first pass.
10x would leave {micros(keyboard) / 10:.1f} us per phrase; NoiseModel spends
{micros(speed[ours]):.1f} us.
Doing only what NoiseModel's interface requires per phrase, with no typo computed at all
(draw the clean share, the three query habits, the typo count and one operation; return a
`Corruption` with its ops list), already takes {micros(speed["least"]):.1f} us
({speed["least"] / keyboard:.1f}x KeyboardAug). The rest is the typos: one to three per noisy
phrase, each an operation drawn, a position found by rejection sampling (retried, like the
operation, where it does not fit) and the string rebuilt, all in Python, while KeyboardAug
does little per phrase here (it skips words under four letters).

| clean | {" | ".join(order)} |
|---|{"---|" * len(order)}
{chr(10).join(examples)}
"""
    path = write_results("bench_noise", "Noise throughput: NoiseModel vs nlpaug", body)
    print(body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
