"""Delivery health: the history of state changes and the webhook delivery queue.

Health itself is soft state in Redis (docs/health.md); these tables keep what operators
and receivers need to outlive it: every transition, and each webhook delivery until it
is acknowledged or given up after 24 h.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_health_events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_index(
        "ix_federation_health_events_domain_at", "federation_health_events", ["domain", "at"]
    )
    op.create_table(
        "federation_webhook_deliveries",
        sa.Column("event_id", sa.String(40), primary_key=True),
        sa.Column("url", sa.String(2048), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.BigInteger, nullable=True),
        sa.Column("gave_up", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_federation_webhook_deliveries_due",
        "federation_webhook_deliveries",
        ["delivered_at", "next_at"],
    )


def downgrade() -> None:
    op.drop_table("federation_webhook_deliveries")
    op.drop_table("federation_health_events")
