"""Does the map point at the defect? The peak-on-defect check, per image.

Why: pixel AUROC ranks every pixel of every image together, so it says how
maps compare across images, not whether the one place an engineer looks
first (the map's hottest point) is on the defect. The check counts an image
as a hit when that point lies on the defect's mask or within one token cell
of it: one cell is the map's own resolution (a 168 px input gives a 6 x 6
grid of 28 px cells), so a peak in the cell next to a thin crack that only
grazes its own cell still counts.
"""

from __future__ import annotations

import numpy as np


def peak_on_defect(anomaly_map: np.ndarray, truth: np.ndarray, grid: tuple[int, int]) -> bool:
    """Whether the map's hottest pixel lies within one token cell of a defect pixel.

    ``anomaly_map`` and ``truth`` are (height, width) at the image's size; ``grid`` is the token grid
    (rows, columns) the map was made from, which sets a cell's height and width in pixels. A map without
    any heat (all zero) points nowhere and is not a hit; an image without a defect pixel cannot be checked.
    """
    if anomaly_map.shape != truth.shape:
        raise ValueError(f"map {anomaly_map.shape} and mask {truth.shape} differ in size")
    if not truth.any():
        raise ValueError("the mask has no defect pixel: nothing to point at")
    if float(anomaly_map.max()) <= 0.0:
        return False
    height, width = truth.shape
    cell_h, cell_w = height / grid[0], width / grid[1]
    peak_y, peak_x = np.unravel_index(int(np.argmax(anomaly_map)), anomaly_map.shape)
    ys, xs = np.nonzero(truth)
    # distance in cells, each axis scaled by its own cell size (a non-square image has non-square cells)
    return bool(np.min(np.hypot((ys - peak_y) / cell_h, (xs - peak_x) / cell_w)) <= 1.0)
