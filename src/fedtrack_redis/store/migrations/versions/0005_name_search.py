"""Indexes for the name filter: a prefix of the name, and a label suffix.

`store.search` finds domains by prefix (``domain LIKE 'mail.%'``) and at or under a domain
(``reverse(domain) LIKE reverse('.example.org') || '%'``); on PostgreSQL these two
pattern indexes answer both without reading every row. SQLite (small installs) has no
``reverse()`` and reads the table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX IF NOT EXISTS federation_server_stats_domain_prefix"
        " ON federation_server_stats (domain text_pattern_ops)"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS federation_server_stats_domain_reversed"
        " ON federation_server_stats (reverse(domain) text_pattern_ops)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS federation_server_stats_domain_reversed")
    op.execute("DROP INDEX IF EXISTS federation_server_stats_domain_prefix")
