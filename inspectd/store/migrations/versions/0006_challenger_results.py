"""A challenger model's results, recorded against the champion's inspection of the same image.

The daemon can run a second bundle in the shadow (``model.challenger``): it inspects images the champion
already recorded, never alerts and never moves files. Each of its results is a row here, keyed by the
inspection and the challenger's bundle, with the same fields the champion's row and artifacts hold.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "challenger_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("inspection_id", sa.Integer, sa.ForeignKey("inspections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("bundle_id", sa.Integer, sa.ForeignKey("bundles.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("reasoning", sa.Text, nullable=True),
        sa.Column("raw_reply", sa.Text, nullable=True),
        sa.Column("parse_status", sa.String(20), nullable=True),
        sa.Column("real_fallback", sa.Boolean, nullable=True),
        sa.Column("model_ms", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("map_png", sa.LargeBinary, nullable=True),
        sa.Column("mask_png", sa.LargeBinary, nullable=True),
        sa.UniqueConstraint("inspection_id", "bundle_id", name="uq_challenger_results_inspection_bundle"),
    )
    op.create_index("ix_challenger_results_bundle_created", "challenger_results", ["bundle_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_challenger_results_bundle_created", table_name="challenger_results")
    op.drop_table("challenger_results")
