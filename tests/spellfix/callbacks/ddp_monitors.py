"""Two-rank CPU DDP (gloo) fit with both monitors; run by test_ddp_monitors.py.

Usage: python ddp_monitors.py OUT_DIR. Lightning re-launches this script for rank 1,
so it must be a file, not a pytest function. Rank zero writes the logged metric
names to OUT_DIR/logged_keys.json for the test to read.
"""

import json
import sys
from pathlib import Path

import torch
from callback_toys import ToySeq2Seq, cpu_trainer, loader, toy_batches

from spellfix.callbacks.gpu_monitor import UtilizationMonitor
from spellfix.callbacks.throughput import ThroughputMonitor


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    monitors = [
        UtilizationMonitor(interval_s=0.05, log_every_n_steps=2, output_dir=out_dir),
        ThroughputMonitor(window=4, log_every_n_steps=2, output_dir=out_dir),
    ]
    trainer = cpu_trainer(out_dir, monitors, devices=2, strategy="ddp")
    trainer.fit(ToySeq2Seq(), train_dataloaders=loader(toy_batches(repeat=2)))
    if trainer.is_global_zero:
        (out_dir / "logged_keys.json").write_text(json.dumps(sorted(trainer.logger.logged_keys())))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
