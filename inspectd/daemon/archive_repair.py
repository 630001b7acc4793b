"""Finish moves a crash interrupted: rows whose file reached the archive but whose path was never written.

The recorder commits a row, moves the file, then writes ``archived_path``. A
crash between the move and that write leaves the file in the archive (or the
failed folder) and the row pointing nowhere; nothing offers the file again,
since it left the drop folder. At start and at every reconcile pass, such
rows are matched to the moved file by name and sha256 and their path is
written. Rows whose file is still in the drop folder are the rescan's job.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from inspectd.daemon.archive import Archiver
from inspectd.daemon.file_names import identity_digest
from inspectd.verdict import Verdict
from inspectd.store.schema import InspectionRow

log = logging.getLogger("inspectd.repair")


@dataclass
class ArchiveRepair:
    engine: Engine
    archiver: Archiver
    _reported: set[int] = field(default_factory=set)  # rows whose file is nowhere: warned once

    def run(self) -> int:
        """Repair what can be repaired; returns how many rows got their archived path."""
        if self.archiver.settings.mode == "keep":
            return 0  # files stay in place: archived_path is empty by design
        with Session(self.engine) as session:
            rows = session.execute(
                select(InspectionRow.id, InspectionRow.camera, InspectionRow.source_path, InspectionRow.sha256,
                       InspectionRow.verdict, InspectionRow.created_at)
                .where(InspectionRow.archived_path.is_(None)).order_by(InspectionRow.id)
            ).all()
        repaired = 0
        for row in rows:
            if os.path.lexists(row.source_path):
                continue  # still in the drop folder: the rescan offers it and the recorder finishes the move
            target = self._find(row)
            if target is None:
                if row.id not in self._reported:
                    self._reported.add(row.id)
                    log.warning("#%d: %s is neither in the drop folder nor in the archive; its row keeps no "
                                "archived path", row.id, row.source_path)
                continue
            with Session(self.engine) as session, session.begin():
                session.execute(update(InspectionRow).where(InspectionRow.id == row.id,
                                                            InspectionRow.archived_path.is_(None))
                                .values(archived_path=str(target)))
            log.info("#%d: moved before a crash to %s; archived path repaired", row.id, target)
            repaired += 1
        return repaired

    def _find(self, row) -> Path | None:
        # The archive day is the day the file was ready, up to a queue wait before its row was written.
        days = [row.created_at, row.created_at - timedelta(days=1)]
        name = Path(row.source_path).name
        for candidate in self.archiver.places(name, row.camera, days, failed=row.verdict == Verdict.FAILED.value):
            if identity_digest(candidate, recorded_as=row.source_path)[0] == row.sha256:
                return candidate
        return None

