"""Database identity (G11) and ack pruning by age.

`federation_identity` holds one random id, created with the tables, that Redis records
beside its hydration markers: a process pointed at another database sees another id and
refuses to hydrate, flush or change rules. `federation_push_acks.seen_at` (unix seconds of
the worker's last applied push) lets the flusher prune silent workers' acks with one
statement, however many there are.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    identity = op.create_table(
        "federation_identity",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("database_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(
        identity, [{"id": 1, "database_id": uuid.uuid4().hex, "created_at": int(time.time())}]
    )
    with op.batch_alter_table("federation_push_acks") as batch:
        batch.add_column(sa.Column("seen_at", sa.BigInteger, nullable=False, server_default="0"))
    # Acks kept so far count as seen now: they age from here like every other.
    op.execute(sa.text(f"UPDATE federation_push_acks SET seen_at = {int(time.time())}"))


def downgrade() -> None:
    with op.batch_alter_table("federation_push_acks") as batch:
        batch.drop_column("seen_at")
    op.drop_table("federation_identity")
