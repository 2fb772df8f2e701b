"""Fixtures shared by the decoding and calibration tests."""

from __future__ import annotations

import numpy as np
import pytest

from spellfix.decoding import ChannelScorer, osa_distance


def _edit_channel(intended: list[str], typed: list[str]) -> np.ndarray:
    """log P(typed | intended): -1 for a copy, then -3 per edit (spaces count as edits)."""
    return np.array(
        [-1.0 - 3.0 * osa_distance(i, t, 10) for i, t in zip(intended, typed, strict=True)]
    )


@pytest.fixture(scope="session")
def edit_channel() -> ChannelScorer:
    """A stand-in channel model: decisions follow edit distance, so tests can reason
    about them without a trained model (the model-backed tests live beside the back ends)."""
    return _edit_channel
