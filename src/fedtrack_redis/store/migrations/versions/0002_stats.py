"""Delivery diagnostics: per-domain stats, push acknowledgements, flusher fencing token.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COUNTERS = (
    "queued_messages",
    "failed_http",
    "failed_https",
    "failed_smtp",
    "success_http",
    "success_https",
    "success_smtp",
    "successful_deliveries",
    "inbound_deliveries",
    "total_latency_ms",
)


def upgrade() -> None:
    op.create_table(
        "federation_server_stats",
        sa.Column("domain", sa.String(253), primary_key=True),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in COUNTERS),
        sa.Column("last_active", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latency_histogram", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "federation_push_acks",
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("worker_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    flusher = op.create_table(
        "federation_flusher",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fence", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(flusher, [{"id": 1, "fence": 0}])


def downgrade() -> None:
    op.drop_table("federation_flusher")
    op.drop_table("federation_push_acks")
    op.drop_table("federation_server_stats")
