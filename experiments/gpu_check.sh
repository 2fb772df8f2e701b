#!/usr/bin/env bash
# The one short script to run on a GPU machine (about 10 minutes):
#   1. every test marked `gpu` (NVML monitor, bf16/fp16 training, tuner on CUDA,
#      TensorRT engines when TensorRT is installed);
#   2. a few minutes of the utilization study at bart-base shape: baseline (batch 32,
#      fp32) against tuned (throughput-seeking token budget, bf16).
# Results land in experiments/results/utilization_gpu.{md,png} and, when $OUT is set
# (the device tool's output folder), are copied there too.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "${OUT:-/tmp}/gpu_pytest.log"
status=${PIPESTATUS[0]}
"$PY" -m experiments.utilization_study --minutes "${STUDY_MINUTES:-3}" --model bart_base \
  --name utilization_gpu data.corpus.max_queries=20000 2>&1 | tail -n 40
if [ -n "${OUT:-}" ]; then
  cp experiments/results/utilization_gpu.* "$OUT"/ 2>/dev/null || true
fi
exit "$status"
