"""Federation policy: rules and cluster settings.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("domain", sa.String(253), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    settings = op.create_table(
        "federation_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(settings, [{"key": "version", "value": "0"}])


def downgrade() -> None:
    op.drop_table("federation_settings")
    op.drop_table("federation_rules")
