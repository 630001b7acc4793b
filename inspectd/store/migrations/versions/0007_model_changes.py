"""Promotions and rollbacks of the champion/challenger pair, and what the daemon made of each.

``inspectd models promote|rollback`` (or the console's action) writes a ``requested`` row: who, when, the pair
before and after (bundle paths and manifest digests), the comparison on reviewed parts at that moment and
whether the rule was forced. The daemon applies it through its reload path (hashes, canary) and marks it
``applied`` or ``failed`` with the reason. The newest applied row recorded against a config file and its
bundles is the pair that daemon runs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config_path", sa.Text, nullable=False),
        sa.Column("config_champion", sa.Text, nullable=False),
        sa.Column("config_challenger", sa.Text, nullable=True),
        sa.Column("champion_path", sa.Text, nullable=False),
        sa.Column("champion_digest", sa.String(64), nullable=False),
        sa.Column("challenger_path", sa.Text, nullable=True),
        sa.Column("challenger_digest", sa.String(64), nullable=True),
        sa.Column("previous_champion_path", sa.Text, nullable=False),
        sa.Column("previous_champion_digest", sa.String(64), nullable=False),
        sa.Column("previous_challenger_path", sa.Text, nullable=True),
        sa.Column("previous_challenger_digest", sa.String(64), nullable=True),
        sa.Column("forced", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("comparison", sa.JSON, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_model_changes_config_status", "model_changes", ["config_path", "status"])


def downgrade() -> None:
    op.drop_index("ix_model_changes_config_status", table_name="model_changes")
    op.drop_table("model_changes")
