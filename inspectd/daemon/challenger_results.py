"""Rows of ``challenger_results``: a challenger bundle's result on a part the champion inspected.

Only inserts here: the challenger never touches the inspection row, its alerts or its files. Its bundle is
registered in ``bundles`` like the champion's (``register_bundle``), so a comparison joins both by bundle id, and
its map and mask are encoded the way the recorder encodes the champion's.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from inspectd.inspection.render import map_image, mask_image, png_bytes
from inspectd.daemon.recorder import model_said
from inspectd.inspection.result import InspectionResult
from inspectd.store.clock import utcnow
from inspectd.store.schema import ChallengerResultRow

log = logging.getLogger("inspectd.challenger")


class ChallengerWriter:
    def __init__(self, engine: Engine, save_maps: bool) -> None:
        self.engine = engine
        self.save_maps = save_maps  # store.save_maps, as for the champion's maps

    def write(self, inspection_id: int, bundle_id: int, result: InspectionResult) -> bool:
        """Insert one row; False when it cannot be (a row for this inspection and bundle exists already, e.g. after
        a restart, or retention deleted the inspection meanwhile): logged, never raised at the shadow worker."""
        values = self.values(inspection_id, bundle_id, result)
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(ChallengerResultRow), [values])
        except IntegrityError as exc:
            log.info("challenger: no row for inspection #%d (%s)", inspection_id,
                     str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__)
            return False
        return True

    def values(self, inspection_id: int, bundle_id: int, result: InspectionResult) -> dict:
        map_png = mask_png = None
        if self.save_maps and result.anomaly_map is not None:
            map_png = png_bytes(map_image(result.anomaly_map))
            mask_png = png_bytes(mask_image(result.mask)) if result.mask is not None else None
        return dict(**model_said(result), inspection_id=inspection_id, bundle_id=bundle_id, created_at=utcnow(),
                    map_png=map_png, mask_png=mask_png)
