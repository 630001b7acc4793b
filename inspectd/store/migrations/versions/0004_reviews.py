"""Reviews (a person's good/defect label on an inspection) and each reasoning token's map for the console.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("inspection_id", sa.Integer, sa.ForeignKey("inspections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("label IN ('good', 'defect')", name="ck_reviews_label"),
    )
    op.create_index("ix_reviews_inspection_id", "reviews", ["inspection_id"])
    op.add_column("artifacts", sa.Column("token_maps", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    op.drop_column("artifacts", "token_maps")
    op.drop_index("ix_reviews_inspection_id", table_name="reviews")
    op.drop_table("reviews")
