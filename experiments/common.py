"""Shared helpers for benchmarks: every results table says which machine made it."""

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> str:
    """One markdown paragraph naming the hardware and software a number was measured on."""
    import torch

    parts = [
        f"{_cpu_model()}, {os.cpu_count()} cores",
        f"Python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"threads {torch.get_num_threads()}",
    ]
    if torch.cuda.is_available():
        parts.insert(0, f"GPU {torch.cuda.get_device_name(0)}")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"Measured {stamp} on: " + "; ".join(parts) + "."


def write_results(name: str, title: str, body: str) -> Path:
    """Write ``experiments/results/<name>.md`` with the machine line under the title."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(f"# {title}\n\n{machine_description()}\n\n{body.rstrip()}\n")
    return path
