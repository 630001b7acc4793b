"""Alerts about the box itself (the disk guard): ``alerts.inspection_id`` may be empty, and is indexed.

The view ``open_alerts`` joins inspections; it becomes a left join so such
alerts show there too. SQLite changes a column by copying the table, so the
view is dropped first and made again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_VIEW = """
CREATE VIEW open_alerts AS
SELECT a.id, a.created_at, a.rule, a.channel, a.camera, a.status, a.attempts, a.next_attempt_at,
       a.last_error, a.idempotency_key, i.source_path, i.score
FROM alerts a {join} JOIN inspections i ON i.id = a.inspection_id
WHERE a.status IN ('pending', 'failed')
"""


def upgrade() -> None:
    op.execute("DROP VIEW open_alerts")
    with op.batch_alter_table("alerts") as batch:
        batch.alter_column("inspection_id", existing_type=sa.Integer, nullable=True)
    op.execute(_VIEW.format(join="LEFT"))
    op.create_index("ix_alerts_inspection_id", "alerts", ["inspection_id"])  # show, retention's deletes


def downgrade() -> None:
    op.drop_index("ix_alerts_inspection_id", table_name="alerts")
    op.execute("DROP VIEW open_alerts")
    op.execute("DELETE FROM alerts WHERE inspection_id IS NULL")
    with op.batch_alter_table("alerts") as batch:
        batch.alter_column("inspection_id", existing_type=sa.Integer, nullable=False)
    op.execute(_VIEW.format(join=""))
