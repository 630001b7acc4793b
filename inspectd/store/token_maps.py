"""Each reasoning token's attention map, packed for the store (``artifacts.token_maps``).

The console shows which words the anomaly map came from: the reasoning with
ReAL's kept tokens highlighted, and a token's own map on hover. Maps are kept
at the model's token grid (e.g. 15x15 for a 420 px input) in float16 and
zlib-compressed by numpy: ~64 tokens x 225 cells x 2 bytes, under 30 kB a row.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenMaps:
    maps: np.ndarray  # (tokens, grid_h, grid_w) float32
    spans: np.ndarray  # (tokens, 2) characters of the reasoning text
    kept: np.ndarray  # (tokens,) bool: ReAL used the token


def pack(maps: np.ndarray, spans: np.ndarray, kept: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=maps.astype(np.float16), spans=spans.astype(np.int32), kept=kept.astype(bool))
    return buffer.getvalue()


def unpack(blob: bytes) -> TokenMaps:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return TokenMaps(data["maps"].astype(np.float32), data["spans"], data["kept"])
