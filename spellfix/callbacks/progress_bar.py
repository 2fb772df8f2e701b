"""The progress bar: Lightning's tqdm or rich bar, chosen by name, quiet in a log file.

``conf/callbacks/progress_bar.yaml`` targets ``progress_bar`` rather than one of
Lightning's classes so the config keeps a single switch (``kind``) and a run whose
output goes to a file (CI, CloudWatch), where every redraw is a new line, gets a line
every ``log_refresh_rate`` batches instead of one per batch.
"""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

PROGRESS_BARS = {"tqdm": TQDMProgressBar, "rich": RichProgressBar}


def progress_bar(
    kind: str = "tqdm", refresh_rate: int = 1, log_refresh_rate: int | None = None
) -> ProgressBar:
    """A ``kind`` bar redrawn every ``refresh_rate`` batches, or at least every
    ``log_refresh_rate`` (default: ``refresh_rate``) when stderr is not a terminal."""
    if kind not in PROGRESS_BARS:
        raise ValueError(f"kind={kind!r} is unknown; use one of {sorted(PROGRESS_BARS)}")
    if not sys.stderr.isatty():
        refresh_rate = max(refresh_rate, log_refresh_rate or refresh_rate)
    return PROGRESS_BARS[kind](refresh_rate=refresh_rate)
