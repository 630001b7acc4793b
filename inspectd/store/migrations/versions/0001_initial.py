"""Initial schema: bundles, inspections, artifacts, alerts outbox, summary views.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DAILY_STATS = """
CREATE VIEW inspection_daily_stats AS
SELECT date(created_at) AS day,
       camera,
       count(*) AS inspections,
       sum(CASE WHEN verdict = 'anomalous' THEN 1 ELSE 0 END) AS anomalous,
       sum(CASE WHEN verdict = 'normal' THEN 1 ELSE 0 END) AS normal,
       sum(CASE WHEN verdict = 'unknown' THEN 1 ELSE 0 END) AS unknown,
       sum(CASE WHEN verdict = 'failed' THEN 1 ELSE 0 END) AS failed,
       CAST(sum(CASE WHEN verdict = 'anomalous' THEN 1 ELSE 0 END) AS DOUBLE PRECISION)
           / nullif(sum(CASE WHEN verdict IN ('anomalous', 'normal') THEN 1 ELSE 0 END), 0) AS anomaly_rate,
       avg(latency_ms) AS mean_latency_ms,
       avg(model_ms) AS mean_model_ms
FROM inspections
GROUP BY date(created_at), camera
"""

OPEN_ALERTS = """
CREATE VIEW open_alerts AS
SELECT a.id, a.created_at, a.rule, a.channel, a.camera, a.status, a.attempts, a.next_attempt_at,
       a.last_error, a.idempotency_key, i.source_path, i.score
FROM alerts a JOIN inspections i ON i.id = a.inspection_id
WHERE a.status IN ('pending', 'failed')
"""


def upgrade() -> None:
    op.create_table(
        "bundles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("base_model", sa.String(400), nullable=False),
        sa.Column("quantization", sa.String(20), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("camera", sa.String(200), nullable=False),
        sa.Column("source_path", sa.Text, nullable=False),
        sa.Column("archived_path", sa.Text),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("reasoning", sa.Text),
        sa.Column("raw_reply", sa.Text),
        sa.Column("parse_status", sa.String(20)),
        sa.Column("bundle_id", sa.Integer, sa.ForeignKey("bundles.id")),
        sa.Column("real_params", sa.JSON),
        sa.Column("real_fallback", sa.Boolean),
        sa.Column("reasoning_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens_used", sa.Integer, nullable=False, server_default="0"),
        sa.Column("image_width", sa.Integer),
        sa.Column("image_height", sa.Integer),
        sa.Column("queue_ms", sa.Float),
        sa.Column("load_ms", sa.Float),
        sa.Column("model_ms", sa.Float),
        sa.Column("real_ms", sa.Float),
        sa.Column("latency_ms", sa.Float),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_inspections_created_at", "inspections", ["created_at"])
    op.create_index("ix_inspections_camera_created_at", "inspections", ["camera", "created_at"])
    op.create_index("ix_inspections_verdict_created_at", "inspections", ["verdict", "created_at"])
    op.create_table(
        "artifacts",
        sa.Column("inspection_id", sa.Integer, sa.ForeignKey("inspections.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("map_png", sa.LargeBinary, nullable=False),
        sa.Column("mask_png", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("inspection_id", sa.Integer, sa.ForeignKey("inspections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("camera", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime()),
    )
    op.create_index("ix_alerts_status_next_attempt", "alerts", ["status", "next_attempt_at"])
    op.create_index("ix_alerts_rule_camera_created", "alerts", ["rule", "camera", "created_at"])
    op.execute(DAILY_STATS)
    op.execute(OPEN_ALERTS)


def downgrade() -> None:
    op.execute("DROP VIEW open_alerts")
    op.execute("DROP VIEW inspection_daily_stats")
    op.drop_table("alerts")
    op.drop_table("artifacts")
    op.drop_table("inspections")
    op.drop_table("bundles")
