"""PyTorch ``generate`` against the ONNX Runtime corrector, same model, same queries, one run.

What a user would otherwise do is call transformers ``generate`` on the trained model; the
claim is that the exported encoder + KV-cache decoder under ONNX Runtime answers a single
query at least 3x faster (p50 at batch 1). All runners are full ``Corrector`` calls
(tokenize, generate, decode) with the same generation budget, timed alternately query by
query so machine noise hits all equally.

Models: the default ``conf/model/bart_tiny.yaml`` shape and the ``bart_base`` shape
(vocabulary 50265 like facebook/bart-base), randomly initialized from a BartConfig with a
tokenizer trained on the fly; nothing is downloaded. A random model tends to answer EOS at
once, which would time one decoder step where a real corrector writes about as many tokens
as it reads; so the random models get a large negative output bias on EOS and every query
decodes its whole budget on every runner (the same number of steps). Runners: PyTorch
``generate``, the ORT corrector on the fp32 export (full graph optimization, ORT's default,
and basic only, to show what the former buys) and on the ``precision=int8`` export. What
int8 costs in corrections cannot be read from random weights: when ``make train`` has left
a model in ``outputs/latest``, a last table compares its fp32 and int8 exports on its test
split.

    .venv/bin/python -m experiments.bench_inference            # full run, writes results
    .venv/bin/python -m experiments.bench_inference --quick    # tiny smoke run, no results file
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from data_synth.paths import CONF_DIR
from experiments.common import write_results
from spellfix.correct import Corrector
from spellfix.export.onnx import export_onnx
from spellfix.export.ort_runner import OrtSeq2Seq
from spellfix.export.validation import builtin_validation_queries
from spellfix.tokenizer import train_tokenizer

SHAPES = ("bart_tiny", "bart_base")
INT8 = "ONNX Runtime int8"


def build_model(shape: str, out: Path, corpus: list[str]) -> Path:
    """Random-init a BART of ``conf/model/<shape>.yaml``'s shape and save it HF-style."""
    from spellfix.model import build_bart

    model_cfg = OmegaConf.load(CONF_DIR / "model" / f"{shape}.yaml")
    tokenizer = train_tokenizer(corpus, vocab_size=model_cfg.tokenizer.vocab_size, min_frequency=1)
    torch.manual_seed(0)
    # The vocabulary is sized as configured (50265 for bart_base), not as far as the small
    # corpus got, so the output projection costs what it costs in the real model.
    shape_cfg = OmegaConf.to_container(model_cfg.config)
    model = build_bart(shape_cfg, None, tokenizer, vocab_size=model_cfg.tokenizer.vocab_size)
    model.eval()
    with torch.no_grad():  # never EOS: each query decodes its whole budget (see above)
        model.final_logits_bias[:, model.config.eos_token_id] = -1e4
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def time_alternating(
    runners: dict[str, Callable[[list[str]], list[str]]], batches: list[list[str]]
) -> dict[str, list[float]]:
    """Seconds per batch for each runner; the runner order rotates every batch."""
    names = list(runners)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for index, batch in enumerate(batches):
        rotation = index % len(names)
        for name in names[rotation:] + names[:rotation]:
            started = time.perf_counter()
            runners[name](batch)
            seconds[name].append(time.perf_counter() - started)
    return seconds


def bench_shape(shape: str, device: str, args: argparse.Namespace, workdir: Path) -> list[dict]:
    queries = builtin_validation_queries(40)  # the real-looking part of the built-in list
    corpus = builtin_validation_queries(2000, seed=1)
    model_dir = build_model(shape, workdir / shape, corpus)
    export_dir = workdir / f"{shape}_onnx"
    manifest = export_onnx(
        model_dir, export_dir, validation_queries=builtin_validation_queries(args.validation)
    )
    manifests = {"ONNX Runtime": manifest, "ONNX Runtime (basic graph opt)": manifest}

    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print(f"{shape}: onnxruntime has no CUDA provider; skipping the GPU comparison")
            return []
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    threads = args.threads
    torch_corrector = Corrector.from_pretrained(model_dir, backend="torch", device=device)
    ort_runner = OrtSeq2Seq(export_dir, providers=providers, intra_op_threads=threads)
    ort_basic = OrtSeq2Seq(
        export_dir, providers=providers, intra_op_threads=threads, graph_optimization_level="basic"
    )
    runners = {
        "PyTorch generate": torch_corrector.correct,
        "ONNX Runtime": ort_runner.correct,
        "ONNX Runtime (basic graph opt)": ort_basic.correct,
    }
    if device == "cpu":  # MatMulNBits int8 kernels are ONNX Runtime's CPU ones
        int8_dir = workdir / f"{shape}_onnx_int8"
        manifests[INT8] = export_onnx(
            model_dir,
            int8_dir,
            precision="int8",
            validation_queries=builtin_validation_queries(args.validation),
        )
        runners[INT8] = OrtSeq2Seq(int8_dir, providers=providers, intra_op_threads=threads).correct
    time_alternating(runners, [[q] for q in queries[:3]])  # warm-up: allocators, kernels
    single = [[queries[i % len(queries)]] for i in range(args.single)]
    batched = [
        [queries[(b * 32 + i) % len(queries)] for i in range(32)] for b in range(args.batches)
    ]
    latency = time_alternating(runners, single)
    throughput = time_alternating(runners, batched)
    expected = torch_corrector.correct(queries)
    rows = []
    for name in runners:
        outputs = runners[name](queries)
        rows.append(
            {
                "shape": shape,
                "device": device,
                "runner": name,
                "p50_ms": 1000 * float(np.percentile(latency[name], 50)),
                "p95_ms": 1000 * float(np.percentile(latency[name], 95)),
                "qps": 32 * len(batched) / sum(throughput[name]),
                "greedy": manifests.get(name, manifest)["validation"]["greedy"],
                "same_output": sum(a == b for a, b in zip(outputs, expected, strict=True)),
                "queries": len(queries),
            }
        )
    return rows


def int8_accuracy(model_dir: Path, dataset_dir: Path, workdir: Path, count: int) -> str:
    """What int8 costs in corrections on a trained model: random weights cannot tell.

    Exports the model in fp32 and int8, corrects the first ``count`` noisy queries of the
    dataset's test split with both, and compares each with the clean side and each other.
    """
    from data_synth.build import load_dataset_dir

    test = load_dataset_dir(dataset_dir)["test"].select(range(count))
    noisy, clean = list(test["noisy"]), list(test["clean"])
    corrections = {}
    for precision in ("fp32", "int8"):
        export_dir = workdir / f"trained_{precision}"
        export_onnx(model_dir, export_dir, precision=precision, validation_queries=noisy[:200])
        corrections[precision] = OrtSeq2Seq(export_dir).correct(noisy)

    def exact(predictions: list[str]) -> float:
        hits = sum(p.lower() == c.lower() for p, c in zip(predictions, clean, strict=True))
        return hits / count

    same = sum(a == b for a, b in zip(*corrections.values(), strict=True))
    return "\n".join(
        [
            f"Accuracy cost of int8 on the model trained by `make train` ({model_dir}), on the "
            f"first {count} queries of its synthetic test split:",
            "",
            "| precision | exact match | same correction as fp32 |",
            "|---|---:|---:|",
            f"| fp32 | {exact(corrections['fp32']):.1%} | {count}/{count} |",
            f"| int8 | {exact(corrections['int8']):.1%} | {same}/{count} |",
        ]
    )


def render(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Batch 1: p50/p95 over {args.single} single-query calls; batch 32: queries/s over "
        f"{args.batches} batches of 32. Runners alternate call by call. "
        f"Threads: {args.threads} (torch and ORT intra-op). Each call is a full `Corrector` "
        "call: tokenize, generate greedily (budget ceil(1.5 x input tokens), at least 8), "
        "decode. Models are randomly initialized (see the script docstring).",
        "",
        "| model | device | runner | batch-1 p50 ms | batch-1 p95 ms | batch-32 queries/s "
        "| p50 vs PyTorch | queries/s vs PyTorch |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for row in rows:
        base = next(
            r
            for r in rows
            if r["runner"] == "PyTorch generate"
            and (r["shape"], r["device"]) == (row["shape"], row["device"])
        )
        p50_ratio = row["p50_ms"] / base["p50_ms"]
        lines.append(
            f"| {row['shape']} | {row['device']} | {row['runner']} | {row['p50_ms']:.1f} "
            f"| {row['p95_ms']:.1f} | {row['qps']:.1f} | {p50_ratio:.2f}x "
            f"| {row['qps'] / base['qps']:.2f}x |"
        )
        if row["runner"] in ("ONNX Runtime", INT8):
            met = "met" if p50_ratio <= 1 / 3 else "NOT met"
            greedy = row["greedy"]
            verdicts.append(
                f"- {row['shape']} on {row['device']}, {row['runner']}: p50 is "
                f"{p50_ratio:.2f}x PyTorch's (target <= 0.33x: {met}); greedy identical to "
                f"PyTorch on {greedy['identical']}/{greedy['queries']} validation queries and "
                f"on {row['same_output']}/{row['queries']} benchmark queries."
            )
    return "\n".join([*lines, "", *verdicts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--single", type=int, default=100, help="batch-1 calls per runner")
    parser.add_argument("--batches", type=int, default=10, help="batch-32 calls per runner")
    parser.add_argument("--validation", type=int, default=200, help="greedy check queries")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--trained-model",
        type=Path,
        default=Path("outputs/latest/model"),
        help="a trained model for the int8 accuracy table (skipped when absent)",
    )
    parser.add_argument("--accuracy-queries", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="smoke run; writes no results")
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.single, args.batches, args.validation = ["bart_tiny"], 5, 1, 8
    torch.set_num_threads(args.threads)
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as workdir:
        for shape in args.shapes:
            for device in devices:
                rows += bench_shape(shape, device, args, Path(workdir) / device)
        body = render(rows, args)
        dataset = args.trained_model.parent / "dataset"
        if not args.quick and args.trained_model.is_dir() and dataset.is_dir():
            accuracy = int8_accuracy(
                args.trained_model, dataset, Path(workdir), args.accuracy_queries
            )
            body += "\n\n" + accuracy
    print(body)
    if not args.quick:
        path = write_results(
            "bench_inference", "Inference: PyTorch generate vs ONNX Runtime corrector", body
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
