"""What the attention capture hands ReAL for one image (numpy only).

Its own module because it crosses from the model process to the daemon inside every result: unpickling it
must not import ReAL's image code (and with it torch) into the daemon's main process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenEvidence:
    """What the capture gives ReAL for one image's reasoning tokens.

    ``maps`` is (tokens, grid_h, grid_w): each reasoning token's attention
    over the image tokens, already averaged over the chosen layers.
    ``relevance`` is (tokens,): its attention summed over the anomaly words.
    ``spans`` (tokens, 2), when known: each token's characters in the
    reasoning text (what the console highlights).
    """

    maps: np.ndarray
    relevance: np.ndarray
    spans: np.ndarray | None = None
    words: tuple[str, ...] | None = None  # each token's text as generated (real.ignored_words reads it)
