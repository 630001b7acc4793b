"""Partial index on rows whose file has no archived path yet (crash-window repair reads it every pass).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_WHERE = sa.text("archived_path IS NULL")


def upgrade() -> None:
    op.create_index("ix_inspections_unarchived", "inspections", ["id"], sqlite_where=_WHERE, postgresql_where=_WHERE)


def downgrade() -> None:
    op.drop_index("ix_inspections_unarchived", table_name="inspections")
