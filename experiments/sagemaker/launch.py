"""Launch spellfix training as a SageMaker job, or print the job definition (``--dry-run``).

    python experiments/sagemaker/launch.py --dry-run \\
        --instance-type ml.p3.16xlarge --instance-count 2 \\
        --train s3://bucket/songs/ --checkpoints s3://bucket/spellfix/ckpt/ \\
        -- model=bart_base tuner.batch_size=auto trainer.precision=16-mixed

Everything after ``--`` is a ``spellfix-train`` override; it travels as a hyperparameter
and ``spellfix.sagemaker`` turns it back into the same override inside the job. The
``metric_definitions`` regexes come from ``spellfix.callbacks.samples.metric_regex``,
the same module that prints the ``spellfix-metric`` lines they match, so SageMaker
charts loss, accuracy, throughput and utilization. ``--dry-run`` needs neither AWS
credentials nor the ``sagemaker`` package.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spellfix.callbacks.samples import metric_regex

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENTRY_POINT = "entry_point.py"
# Copied next to the entry point in /opt/ml/code: the packages and their configs.
DEPENDENCIES = ("spellfix", "data_synth", "conf")
# Metrics SageMaker charts (name in the console -> key spellfix logs).
CHARTED_METRICS = {
    "train:loss": "train/loss",
    "validation:loss": "val/loss",
    "validation:exact_match": "val/exact_match",
    "validation:cer": "val/cer",
    "throughput:real_tokens_per_s": "perf/real_tokens_per_s",
    "throughput:padding_fraction": "perf/padding_fraction",
    "throughput:mfu": "perf/mfu",
    "utilization:gpu_sm_percent": "util/sm_util_mean",
    "utilization:gpu_memory_gb": "util/mem_used_gb_mean",
    "utilization:cpu_percent": "util/cpu_percent_mean",
    "utilization:data_wait_fraction": "util/data_wait_fraction",
}


def metric_definitions() -> list[dict[str, str]]:
    return [{"Name": name, "Regex": metric_regex(key)} for name, key in CHARTED_METRICS.items()]


def hyperparameters(overrides: Sequence[str], export: str | None) -> dict[str, str]:
    """``key=value`` overrides as SageMaker hyperparameters (string keys and values)."""
    result: dict[str, str] = {}
    for override in overrides:
        key, has_value, value = override.partition("=")
        if not has_value or not key:
            raise SystemExit(f"error: override {override!r} is not key=value")
        result[key] = value
    if export:
        result["export"] = export
    return result


def job_definition(args: argparse.Namespace) -> dict[str, Any]:
    """The estimator's keyword arguments and the ``fit`` inputs, as plain JSON values."""
    estimator = {
        "entry_point": ENTRY_POINT,
        "source_dir": str(HERE),
        "dependencies": [str(REPO / name) for name in DEPENDENCIES],
        "role": args.role,
        "framework_version": args.framework_version,
        "py_version": args.py_version,
        "instance_type": args.instance_type,
        "instance_count": args.instance_count,
        "distribution": {"torch_distributed": {"enabled": True}},
        "hyperparameters": hyperparameters(args.overrides, args.export),
        "metric_definitions": metric_definitions(),
        "checkpoint_s3_uri": args.checkpoints,
        "checkpoint_local_path": "/opt/ml/checkpoints",
        "use_spot_instances": args.spot,
        "max_run": args.max_run,
        "environment": {"WANDB_MODE": args.wandb_mode},
        "base_job_name": args.job_name,
    }
    if args.spot:
        estimator["max_wait"] = args.max_run * 2
    if args.output:
        estimator["output_path"] = args.output
    inputs = {"train": args.train} if args.train else {}
    return {"estimator": estimator, "fit": {"inputs": inputs, "wait": False}}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the job, contact nothing")
    parser.add_argument("--role", default="arn:aws:iam::ACCOUNT:role/SageMakerExecutionRole")
    parser.add_argument("--instance-type", default="ml.g5.2xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--framework-version", default="2.3")
    parser.add_argument("--py-version", default="py311")
    parser.add_argument("--train", help="S3 URI of the train channel: a CSV corpus or a dataset")
    parser.add_argument("--checkpoints", help="S3 URI the job's checkpoints are synced to")
    parser.add_argument("--output", help="S3 URI for model.tar.gz and output.tar.gz")
    parser.add_argument("--export", help="formats exported into the model, e.g. onnx,triton")
    parser.add_argument("--spot", action="store_true", help="managed spot training")
    parser.add_argument("--max-run", type=int, default=24 * 3600, help="seconds")
    parser.add_argument("--wandb-mode", default="offline", choices=["offline", "online"])
    parser.add_argument("--job-name", default="spellfix")
    parser.add_argument("overrides", nargs="*", help="spellfix-train overrides (after --)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    definition = job_definition(args)
    if args.dry_run:
        print(json.dumps(definition, indent=2))
        return
    from sagemaker.pytorch import PyTorch

    estimator = PyTorch(**definition["estimator"])
    estimator.fit(**definition["fit"])
    print(f"started {estimator.latest_training_job.name}")


if __name__ == "__main__":
    main()
