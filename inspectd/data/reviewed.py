"""A labelled folder from reviewed inspections: what engineers confirmed or overruled becomes training data.

The newest review of each row is its label (``good`` -> ``good/``,
``defect`` -> ``defect/``), whatever the model said; the photo comes from the
archive (``archived_photos``). The folder is the layout ``inspectd-train`` and
``inspectd-export --calibration`` read, plus ``reviews.csv`` (id, label,
reviewer, time, the model's verdict and score) beside the two folders. It is
written to a temporary folder and renamed into place, so a half export is never
read as a whole one.

Only the photos inspected become training data: a row whose archived file no longer has the recorded sha256
(``PhotoChanged``: rewritten after inspection) is left out, listed in ``changed`` and logged, and the rest is
exported. File names fit NAME_MAX with the ``<id>_`` prefix; ``reviews.csv`` cells cannot become spreadsheet
formulas (a reviewer named ``=HYPERLINK(...)``).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from inspectd.config import load_settings
from inspectd.data.archived_photos import PhotoChanged, PhotoRoots
from inspectd.errors import InspectdError
from inspectd.safe_text import csv_cell, fit_name
from inspectd.store.database import open_engine
from inspectd.store.schema import InspectionRow, ReviewLabel, ReviewRow


@dataclass(frozen=True)
class ReviewedExport:
    folder: Path
    good: int
    defect: int
    missing: tuple[int, ...]  # reviewed rows whose photo is no longer in the archive (e.g. removed by retention)
    changed: tuple[int, ...] = ()  # reviewed rows whose archived photo is not the one inspected: never exported
    reasons: tuple[str, ...] = ()  # why, one per ``changed`` id (``PhotoChanged``'s message)


log = logging.getLogger("inspectd.export")


def _reviewed_rows(engine: Engine, since: datetime | None, camera: str | None) -> list[dict]:
    latest = select(func.max(ReviewRow.id)).group_by(ReviewRow.inspection_id).scalar_subquery()
    query = (select(InspectionRow.id, InspectionRow.created_at, InspectionRow.camera, InspectionRow.source_path,
                    InspectionRow.sha256, InspectionRow.archived_path, InspectionRow.photo_removed_at, InspectionRow.verdict,
                    InspectionRow.score, ReviewRow.label,
                    ReviewRow.reviewer, ReviewRow.created_at.label("reviewed_at"))
             .join(ReviewRow, ReviewRow.inspection_id == InspectionRow.id)
             .where(ReviewRow.id.in_(latest)).order_by(InspectionRow.id))
    if since is not None:
        query = query.where(InspectionRow.created_at >= since)
    if camera is not None:
        query = query.where(InspectionRow.camera == camera)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def export_reviewed(engine: Engine, roots: PhotoRoots, out: Path, since: datetime | None = None,
                    camera: str | None = None, replace: bool = False) -> ReviewedExport:
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not replace:
        raise InspectdError(f"{out} exists and is not empty (replace it with --replace)")
    rows = _reviewed_rows(engine, since, camera)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    counts = {label.value: 0 for label in ReviewLabel}
    missing, changed, reasons = [], [], []
    try:
        for label in ReviewLabel:
            (staging / label.value).mkdir()
        with (staging / "reviews.csv").open("w", newline="", encoding="utf-8") as table:
            writer = csv.writer(table)
            writer.writerow(["inspection_id", "label", "file", "reviewer", "reviewed_at", "camera", "model_verdict",
                             "model_score", "source_path"])
            for row in rows:
                try:
                    data = roots.read(row)
                except PhotoChanged as exc:
                    log.warning("not exported: %s", exc)
                    changed.append(row["id"])
                    reasons.append(str(exc))
                    continue
                if data is None:
                    missing.append(row["id"])
                    continue
                name = fit_name(Path(row["archived_path"] or row["source_path"]).name, prefix=f"{row['id']}_")
                (staging / row["label"] / name).write_bytes(data)
                counts[row["label"]] += 1
                writer.writerow([csv_cell(cell) for cell in (
                    row["id"], row["label"], f"{row['label']}/{name}", row["reviewer"], row["reviewed_at"].isoformat(),
                    row["camera"], row["verdict"], row["score"], row["source_path"])])
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ReviewedExport(out, counts[ReviewLabel.GOOD.value], counts[ReviewLabel.DEFECT.value], tuple(missing),
                          tuple(changed), tuple(reasons))


def export_reviewed_of(config: Path, out: Path, since: datetime | None = None, camera: str | None = None,
                       replace: bool = False) -> ReviewedExport:
    """``export_reviewed`` from the store and archive an inspectd config file names: how training takes the
    engineers' reviews (the recipe's ``reviewed_store`` data, ``inspectd-train``'s ``store`` data)."""
    settings = load_settings(config, require_paths=False)
    engine = open_engine(settings.store.url, create=False)
    try:
        return export_reviewed(engine, PhotoRoots.of(settings), out, since, camera, replace)
    finally:
        engine.dispose()
