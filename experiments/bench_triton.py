"""Triton serving against the in-process ONNX Runtime corrector: latency and queries/s.

A user who does not deploy Triton calls ``Corrector.from_pretrained(export, backend="onnx")``
in their own process; that is the baseline. Triton must pay for itself in throughput under
concurrent load (dynamic batching merges single-query requests into one decoder loop)
without costing much latency for a lone request. Five runners, one run, same queries:

- ``in-process ORT``: one shared ``Corrector`` called from every client thread;
- ``triton inprocess`` and ``triton bls`` layouts, each with dynamic batching on and off
  (off: every request is decoded alone, the unbatched baseline).

Every request carries one query; each client thread has its own Triton client. For each
concurrency (1, 8, 32) the runners take turns, in rotated order over several rounds, so
machine noise hits all of them; latencies are pooled over the rounds, queries/s is the
median round. Targets (issue 6, on CPU): batched >= 3x the queries/s of unbatched at
concurrency 32; Triton's p50 within 2 ms of the in-process corrector at concurrency 1.

The model is the default ``bart_tiny`` shape, taught to copy real-looking queries for a few
hundred steps so that decoding stops at EOS after about as many tokens as the query has,
as a trained corrector does (pass ``--model`` to use a model from ``make train`` instead).

    .venv/bin/python -m experiments.bench_triton          # full run: results/bench_triton.md
    .venv/bin/python -m experiments.bench_triton --quick  # tiny smoke run, no results file
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from data_synth.corpus import read_corpus
from data_synth.paths import CONF_DIR
from experiments.common import write_results
from spellfix.correct import Corrector
from spellfix.export.onnx import export_onnx
from spellfix.export.triton import RepositorySettings, write_repository
from spellfix.export.validation import builtin_validation_queries
from spellfix.serve import TritonServer, on_free_ports
from spellfix.tokenizer import train_tokenizer

IN_PROCESS = "in-process ORT"
# A callable made once per client thread (clients are not shared across threads), then
# called with one query per request.
ClientFactory = Callable[[], Callable[[str], str]]


def build_model(out: Path, steps: int) -> Path:
    """A ``conf/model/bart_tiny.yaml``-shaped BART taught to copy queries, saved HF-style."""
    from spellfix.model import build_bart

    model_cfg = OmegaConf.load(CONF_DIR / "model" / "bart_tiny.yaml")
    corpus_cfg = OmegaConf.load(CONF_DIR / "corpus" / "builtin.yaml")
    corpus = read_corpus(corpus_cfg).texts[:5000]
    queries = builtin_validation_queries(40)
    tokenizer = train_tokenizer(
        corpus + queries, vocab_size=model_cfg.tokenizer.vocab_size, min_frequency=1
    )
    torch.manual_seed(0)
    model = build_bart(OmegaConf.to_container(model_cfg.config), None, tokenizer)
    # Taught on the benchmark's own queries (the whole set each step), as the test suite's
    # tiny model is: a few hundred steps make it copy them and stop at EOS.
    batch = tokenizer(queries, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_repositories(export_dir: Path, workdir: Path, threads: int) -> dict[str, Path]:
    """The four served variants: {inprocess, bls} x dynamic batching {on, off}."""
    defaults = OmegaConf.load(CONF_DIR / "export.yaml").triton
    base = RepositorySettings.from_config(defaults)
    repositories = {}
    for layout in ("inprocess", "bls"):
        for batching in (True, False):
            name = f"triton {layout}, {'batched' if batching else 'unbatched'}"
            settings = dataclasses.replace(
                base, layout=layout, dynamic_batching=batching, intra_op_threads=threads
            )
            repository = workdir / f"{layout}-{'batched' if batching else 'unbatched'}" / "triton"
            write_repository(export_dir, repository, settings)
            repositories[name] = repository
    return repositories


def triton_client(url: str, protocol: str) -> ClientFactory:
    def make() -> Callable[[str], str]:
        corrector = Corrector.from_triton(url, protocol=protocol)
        return lambda query: corrector.correct([query])[0]

    return make


def measure(
    factory: ClientFactory, queries: list[str], concurrency: int, requests: int
) -> tuple[list[float], float]:
    """``requests`` single-query requests from ``concurrency`` threads: latencies (s), queries/s."""
    per_thread = max(1, requests // concurrency)
    clients = [factory() for _ in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)

    def run(index: int) -> None:
        client = clients[index]
        start.wait()
        for n in range(per_thread):
            query = queries[(index * per_thread + n) % len(queries)]
            began = time.perf_counter()
            client(query)
            latencies[index].append(time.perf_counter() - began)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return [x for row in latencies for x in row], per_thread * concurrency / wall


def hop_breakdown(server: TritonServer, factory: ClientFactory, queries: list[str]) -> dict:
    """Where a lone request's time goes: calls to and milliseconds in each model, per query.

    Read from Triton's statistics extension, so it counts what the server did rather than
    what the client saw: for the bls layout, every generated token is one BLS call to
    ``decoder``, and the public model's time minus its callees' is the BLS side of each
    round trip plus the tokenizer and greedy loop.
    """
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    client = factory()

    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            m["name"]: (m["inference_count"], m["inference_stats"]["success"]["ns"])
            for m in stats.get_inference_statistics()["model_stats"]
        }

    before = snapshot()
    for query in queries:
        client(query)
    after = snapshot()
    stats.close()
    return {
        name: {
            "calls": (after[name][0] - before[name][0]) / len(queries),
            "ms": (after[name][1] - before[name][1]) / len(queries) / 1e6,
        }
        for name in after
    }


def bench(
    runners: dict[str, ClientFactory], queries: list[str], args: argparse.Namespace
) -> list[dict]:
    names = list(runners)
    for name in names:  # warm-up: sessions, connections, the first batches
        measure(runners[name], queries, 4, 16)
    rows = []
    for concurrency in args.concurrency:
        latencies: dict[str, list[float]] = {name: [] for name in names}
        rates: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                lat, rate = measure(runners[name], queries, concurrency, args.requests)
                latencies[name] += lat
                rates[name].append(rate)
        for name in names:
            ms = np.array(latencies[name]) * 1000
            rows.append(
                {
                    "runner": name,
                    "concurrency": concurrency,
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p99_ms": float(np.percentile(ms, 99)),
                    "qps": statistics.median(rates[name]),
                }
            )
        print(f"concurrency {concurrency} done", flush=True)
    return rows


def render(
    rows: list[dict],
    args: argparse.Namespace,
    model: str,
    queries: list[str],
    hops: dict[str, dict],
) -> str:
    lookup = {(r["runner"], r["concurrency"]): r for r in rows}
    lines = [
        f"Model: {model}. {len(set(queries))} distinct queries, one per request; "
        f"{args.requests} requests per runner per round, {args.rounds} rounds, runners in "
        f"rotated order. Triton: tritonserver 2.51 (nvidia-pytriton wheel), Python backend, "
        f"one instance per model, {args.protocol.upper()} clients, ONNX Runtime "
        f"intra-op threads {args.threads} on both sides.",
        "",
        "| runner | concurrency | p50 ms | p99 ms | queries/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['runner']} | {r['concurrency']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['qps']:.0f} |"
        )
    lines += ["", "Targets:", ""]
    top, low = max(args.concurrency), min(args.concurrency)
    for layout in ("inprocess", "bls"):
        batched = lookup[(f"triton {layout}, batched", top)]["qps"]
        unbatched = lookup[(f"triton {layout}, unbatched", top)]["qps"]
        ratio = batched / unbatched
        verdict = "met" if ratio >= 3 else "NOT met"
        lines.append(
            f"- {layout}: dynamic batching gives {ratio:.1f}x the queries/s of unbatched at "
            f"concurrency {top} (target >= 3x: {verdict})"
        )
    baseline = lookup[(IN_PROCESS, low)]["p50_ms"]
    for name in (n for n in dict.fromkeys(r["runner"] for r in rows) if n != IN_PROCESS):
        gap = lookup[(name, low)]["p50_ms"] - baseline
        verdict = "met" if gap <= 2 else "NOT met"
        lines.append(
            f"- {name}: p50 at concurrency {low} is {gap:+.2f} ms from the in-process "
            f"corrector's {baseline:.2f} ms (target within 2 ms: {verdict})"
        )
    lines += [
        "",
        "Where a lone request's time goes (concurrency 1, from Triton's statistics, per query):",
        "",
        "| runner | model | calls | ms inside |",
        "|---|---|---:|---:|",
    ]
    for runner, models in hops.items():
        for name, hop in models.items():
            lines.append(f"| {runner} | {name} | {hop['calls']:.1f} | {hop['ms']:.2f} |")
        if {"encoder", "decoder"} <= models.keys():
            calls = models["encoder"]["calls"] + models["decoder"]["calls"]
            graphs = models["encoder"]["ms"] + models["decoder"]["ms"]
            own = models["spellfix"]["ms"] - graphs
            lines += [
                "",
                f"{runner}: {calls:.1f} BLS calls per query (one encoder call, then one decoder "
                f"call per generated token). The callee models spend {graphs:.2f} ms, the "
                f"in-process corrector {baseline:.2f} ms for the whole query; the public model "
                f"spends {own:.2f} ms around them ({own / calls:.2f} ms per call: building the "
                f"request, the hop through the server, reading the outputs, plus tokenizing "
                f"and the greedy loop). Each callee is itself a Python-backend stub here; on "
                f"the onnxruntime or tensorrt_plan backends of a production server the graphs "
                f"run inside the server process, and that side of each hop goes away.",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a trained model dir; default: build one")
    parser.add_argument("--requests", type=int, default=640, help="per runner, round, level")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, no results file")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds, args.concurrency, args.train_steps = 32, 1, [1, 8], 20
    torch.set_num_threads(max(1, args.threads))

    with (
        tempfile.TemporaryDirectory(prefix="bench_triton-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        model_dir = args.model or build_model(workdir / "model", args.train_steps)
        model = str(args.model) if args.model else f"bart_tiny shape, {args.train_steps} copy steps"
        export_dir = workdir / "export"
        export_onnx(model_dir, export_dir, validation_queries=builtin_validation_queries(40))
        corrector = Corrector.from_pretrained(
            export_dir, backend="onnx", intra_op_threads=args.threads
        )
        queries = builtin_validation_queries(40)  # real-looking misspelled titles
        servers: dict[str, TritonServer] = {}
        runners: dict[str, ClientFactory] = {
            IN_PROCESS: lambda: lambda query: corrector.correct([query])[0]
        }
        for name, repository in write_repositories(export_dir, workdir, args.threads).items():
            server = on_free_ports(
                lambda ports, repository=repository: TritonServer(
                    repository, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2]
                ).start()
            )
            stack.callback(server.stop)
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            runners[name] = triton_client(url, args.protocol)
            servers[name] = server
        expected = corrector.correct(queries)
        for name, factory in runners.items():  # every runner must answer the same
            client = factory()
            answers = [client(q) for q in queries]
            if answers != expected:
                raise SystemExit(f"{name} answers differently from the in-process corrector")
        rows = bench(runners, queries, args)
        hops = {
            name: hop_breakdown(servers[name], runners[name], queries * args.rounds)
            for name in servers
            if name.endswith(", batched")
        }
    body = render(rows, args, model, queries, hops)
    print(body)
    if not args.quick:
        path = write_results("bench_triton", "Triton serving vs the in-process corrector", body)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
