"""sessions keep the SSO ID token (id_token_hint for RP-initiated logout)

Revision ID: 3f9c2a7d5e10
Revises: 6a0dda0884fd
Create Date: 2026-11-23 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f9c2a7d5e10"
down_revision: str | None = "6a0dda0884fd"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("id_token", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("id_token")
