"""Rules v2: rule kinds, effects and metadata, and the audit log.

Every existing rule was a normalized domain, which is the text of an exact rule, so it
stays as it is and becomes an exact ``exception`` rule (the original's meaning) through
the column defaults; ``created_at`` is kept. Rule texts may be 255 characters long.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("federation_rules") as batch:
        batch.alter_column(
            "domain", existing_type=sa.String(253), type_=sa.String(255), existing_nullable=False
        )
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="exact"))
        batch.add_column(
            sa.Column("effect", sa.String(16), nullable=False, server_default="exception")
        )
        batch.add_column(sa.Column("reason", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("private_comment", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("created_by", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("source", sa.String(64), nullable=False, server_default="manual")
        )
        batch.add_column(sa.Column("updated_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("expires_at", sa.BigInteger, nullable=True))
        batch.create_index("ix_federation_rules_expires_at", ["expires_at"])
    op.create_table(
        "federation_audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("before", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("after", sa.JSON(none_as_null=True), nullable=True),
    )
    op.create_index("ix_federation_audit_target_id", "federation_audit", ["target", "id"])


def downgrade() -> None:
    # The old schema knows exact rules only: the other kinds cannot be kept.
    op.execute(sa.text("DELETE FROM federation_rules WHERE kind <> 'exact'"))
    op.drop_index("ix_federation_audit_target_id", table_name="federation_audit")
    op.drop_table("federation_audit")
    with op.batch_alter_table("federation_rules") as batch:
        batch.drop_index("ix_federation_rules_expires_at")
        for column in (
            "expires_at",
            "updated_at",
            "source",
            "created_by",
            "private_comment",
            "reason",
            "effect",
            "kind",
        ):
            batch.drop_column(column)
        batch.alter_column(
            "domain", existing_type=sa.String(255), type_=sa.String(253), existing_nullable=False
        )
