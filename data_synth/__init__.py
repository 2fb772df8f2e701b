"""Synthetic typos and datasets for training spell correctors; imports no torch.

``data_synth.noise`` corrupts clean queries, ``data_synth.corpus`` reads clean queries
from files, ``data_synth.build`` turns both into a train/validation/test dataset on disk,
and ``data_synth.stats`` measures how noisy (noisy, clean) pairs are, generated or real.
"""

from data_synth.noise import Corruption, NoiseModel

__all__ = ["Corruption", "NoiseModel"]
