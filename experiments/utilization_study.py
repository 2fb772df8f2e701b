"""The utilization study: the reference team's starting point against spellfix's tuning.

The reference team found a bart-base spell corrector's GPUs 35% busy at batch 32 in
fp32 and raised that to 89% by hand (batch 256 plus mixed precision). This study runs
both recipes on whatever device is present, for the same wall time each:

- ``experiment=baseline_bs32_fp32``: 32 queries a batch, fp32;
- ``experiment=tuned``: the token budget with the best measured throughput
  (``tuner.batch_size=auto``) and mixed precision (bf16 where the device has it).

From each run directory it reads the utilization monitor (mean SM utilization on a
GPU, CPU use on a CPU), the throughput monitor (real tokens/s, MFU) and the validation
curve, and writes a table (with the time each run took to reach a validation loss that
both reached) and a comparison plot to ``experiments/results/``.

    python -m experiments.utilization_study --minutes 5      # CPU here
    python -m experiments.utilization_study --minutes 4 --model bart_base --name utilization_gpu
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from experiments.common import RESULTS_DIR, write_results

RECIPES = ("baseline_bs32_fp32", "tuned")


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run_recipe(recipe: str, minutes: float, model: str, workdir: Path, extra: list[str]) -> Path:
    on_gpu = torch.cuda.is_available()
    overrides = [
        f"experiment={recipe}",
        f"model={model}",
        f"trainer={'gpu' if on_gpu else 'cpu'}",
        f"trainer.max_time=00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}",
        "trainer.max_steps=-1",
        "trainer.max_epochs=1000",
        "trainer.val_check_interval=100",
        "trainer.limit_val_batches=10",
        "model.val_generation_samples=64",
        "run_test=false",
        f"paths.output_dir={workdir}",
        f"paths.run_name={recipe}",
    ]
    if recipe == "tuned" and not on_gpu:
        # bf16 autocast only pays on CPUs with bf16 instructions.
        overrides.append(f"trainer.precision={'bf16-mixed' if cpu_has_bf16() else '32-true'}")
    if recipe == "baseline_bs32_fp32" and on_gpu:
        overrides.append("trainer.precision=32-true")
    subprocess.run(
        [sys.executable, "-m", "spellfix.train", *overrides, *extra],
        check=True,
        cwd=workdir,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return workdir / "runs" / recipe


def validation_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(elapsed seconds, validation loss) at each validation."""
    rows = list(csv.DictReader((run_dir / "logs" / "metrics.csv").open()))
    curve = []
    for row in rows:
        if row.get("val/loss") and row.get("time/elapsed_s"):
            curve.append((float(row["time/elapsed_s"]), float(row["val/loss"])))
    return curve


def summarize(run_dir: Path) -> dict:
    utilization = json.loads((run_dir / "utilization.json").read_text())
    throughput = json.loads((run_dir / "throughput.json").read_text())
    metrics = utilization["metrics"]
    busy_key = "sm_util" if utilization["backend"] == "nvml" else "cpu_percent"
    job = throughput["job"]
    return {
        "backend": utilization["backend"],
        "busy_metric": busy_key,
        "busy_mean": metrics[busy_key]["mean"],
        "busy_p10": metrics[busy_key]["p10"],
        "real_tokens_per_s": job["real_tokens_per_s"],
        "padding_fraction": job["padding_fraction"],
        "samples_per_s": job["samples_per_s"],
        "mfu": job.get("mfu"),
        "steps": job["steps"],
        "curve": validation_curve(run_dir),
        "precision": throughput.get("precision"),
        "device": throughput.get("device"),
        "advice": utilization.get("diagnosis", []),
    }


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((seconds for seconds, loss in curve if loss <= target), None)


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve_ax, bar_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for recipe, summary in results.items():
        if summary["curve"]:
            xs, ys = zip(*summary["curve"], strict=True)
            curve_ax.plot([x / 60 for x in xs], ys, "o-", label=recipe)
    curve_ax.set_xlabel("minutes")
    curve_ax.set_ylabel("validation loss")
    curve_ax.legend()
    curve_ax.set_title("validation loss over time")
    names = list(results)
    bar_ax.bar(names, [results[n]["real_tokens_per_s"] for n in names], color=["gray", "green"])
    bar_ax.set_ylabel("real tokens/s")
    bar_ax.set_title("training throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time per recipe")
    parser.add_argument("--model", default="bart_tiny", help="model preset (conf/model/)")
    parser.add_argument("--name", default="utilization_study", help="results file stem")
    parser.add_argument("overrides", nargs="*", help="extra spellfix-train overrides for both")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results = {
            recipe: summarize(run_recipe(recipe, args.minutes, args.model, workdir, args.overrides))
            for recipe in RECIPES
        }
    reached = [min(loss for _, loss in r["curve"]) for r in results.values() if r["curve"]]
    target = max(reached) if reached else None
    base, tuned = results["baseline_bs32_fp32"], results["tuned"]
    on_gpu = base["backend"] == "nvml"
    busy_label = "mean SM utilization (%)" if on_gpu else "mean CPU use (% of a core)"
    reach_label = f"time to val loss {target:.3f}" if target else "time to target"
    rows = [
        f"| recipe | precision | {busy_label} | p10 | real tokens/s | padding | MFU | "
        f"steps | {reach_label} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for recipe, r in results.items():
        reach = time_to(r["curve"], target) if target else None
        mfu = f"{r['mfu']:.2%}" if r["mfu"] is not None else "n/a"
        rows.append(
            f"| {recipe} | {r['precision']} | {r['busy_mean']:.1f} | {r['busy_p10']:.1f} | "
            f"{r['real_tokens_per_s']:,.0f} | {r['padding_fraction']:.1%} | {mfu} | {r['steps']} | "
            f"{f'{reach / 60:.1f} min' if reach is not None else 'not reached'} |"
        )
    plot_path = RESULTS_DIR / f"{args.name}.png"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot(results, plot_path)
    speedup = tuned["real_tokens_per_s"] / base["real_tokens_per_s"]
    body = "\n".join(
        [
            f"Model preset `{args.model}`, {args.minutes:g} minutes of training per recipe on "
            f"{base['device']}, one after the other in one run.",
            "",
            *rows,
            "",
            f"Tuned / baseline real tokens/s: **{speedup:.2f}x**.",
            "",
            f"![comparison]({plot_path.name})",
            "",
            "Advice the utilization monitor gave the baseline:",
            *[f"- {line}" for line in base["advice"]],
            "",
            "Reproduce: `.venv/bin/python -m experiments.utilization_study "
            f"--minutes {args.minutes:g} --model {args.model} --name {args.name}`",
        ]
    )
    print(write_results(args.name, "Utilization study: baseline vs tuned", body).read_text())


if __name__ == "__main__":
    main()
