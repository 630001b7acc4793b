"""Retention deletes only what the store names, and never a review.

``inspections.photo_removed_at`` (the archived file was deleted, the row
stays) and ``tombstoned_at`` (a reviewed row past ``rows_days``, reduced to
its facts and kept for its reviews); a partial index on rows whose archived
file is still there; ``archive_files``, the files inspectd archived that no
row points to (duplicates, photos of deleted rows); and
``reviews.inspection_id`` becomes ON DELETE RESTRICT instead of CASCADE.
SQLite cannot alter a foreign key: its ``reviews`` table is copied (batch
mode; the unnamed key is found by a naming convention). Downgrading forgets
which files were removed and which the store knew without a row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_LIVE = sa.text("archived_path IS NOT NULL AND photo_removed_at IS NULL")
_FK = "fk_reviews_inspection_id_inspections"
_NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _review_key(ondelete: str) -> None:
    """Make ``reviews.inspection_id -> inspections.id`` ON DELETE ``ondelete`` (named ``_FK`` from here on)."""
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("reviews", recreate="always", naming_convention=_NAMING) as batch:
            batch.drop_constraint(_FK, type_="foreignkey")
            batch.create_foreign_key(_FK, "inspections", ["inspection_id"], ["id"], ondelete=ondelete)
        return
    keys = sa.inspect(op.get_bind()).get_foreign_keys("reviews")
    for key in keys:
        if key["referred_table"] == "inspections":
            op.drop_constraint(key["name"], "reviews", type_="foreignkey")
    op.create_foreign_key(_FK, "reviews", "inspections", ["inspection_id"], ["id"], ondelete=ondelete)


def upgrade() -> None:
    op.add_column("inspections", sa.Column("photo_removed_at", sa.DateTime(), nullable=True))
    op.add_column("inspections", sa.Column("tombstoned_at", sa.DateTime(), nullable=True))
    op.create_index("ix_inspections_live_photos", "inspections", ["created_at"], sqlite_where=_LIVE,
                    postgresql_where=_LIVE)
    op.create_table(
        "archive_files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("camera", sa.String(200), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("inspection_id", sa.Integer),
    )
    op.create_index("ix_archive_files_created_at", "archive_files", ["created_at"])
    _review_key("RESTRICT")


def downgrade() -> None:
    _review_key("CASCADE")
    op.drop_index("ix_archive_files_created_at", table_name="archive_files")
    op.drop_table("archive_files")
    op.drop_index("ix_inspections_live_photos", table_name="inspections")
    op.drop_column("inspections", "tombstoned_at")
    op.drop_column("inspections", "photo_removed_at")
