"""Each mirror view's score, which view's reasoning is shown and whether the views disagree, for the champion
and the challenger.

A bundle with ``score.views`` > 1 averages the photo and its mirror images; the mean decides the verdict and
the reasoning shown is one view's (the first that agrees with it). On the magnetic-tile hold-out the four
views fell on both sides of the threshold in 88 of 314 photos: such a verdict depends on how the part lay,
and an engineer reviewing it needs to see that (``views_disagree``: the history filters on it). Null for rows
recorded with one view or before this revision.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("inspections", "challenger_results")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("view_scores", sa.JSON, nullable=True))
        op.add_column(table, sa.Column("shown_view", sa.Integer, nullable=True))
        op.add_column(table, sa.Column("views_disagree", sa.Boolean, nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "views_disagree")
        op.drop_column(table, "shown_view")
        op.drop_column(table, "view_scores")
